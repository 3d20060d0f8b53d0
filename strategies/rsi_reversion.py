"""RSI mean reversion: long when RSI is oversold, short (or flat) when it is overbought."""

from __future__ import annotations

from numba import njit

from framework.enums import ACTION_LONG, ACTION_SHORT, INTENT_ACTION
from framework.indicators_nb import rsi_init_nb, rsi_update_nb
from framework.jit import bar_njit
from framework.strategy import Param, Strategy

WINDOW, LOWER, UPPER = 0, 1, 2


@njit(cache=True)
def init_nb(p):
    return (rsi_init_nb(int(p[WINDOW])),)


@bar_njit
def decide_nb(state, o, h, l, c, v, pos, p, intent):
    value = rsi_update_nb(state[0], c)
    if value < p[LOWER]:
        intent[INTENT_ACTION] = ACTION_LONG
    elif value > p[UPPER]:
        intent[INTENT_ACTION] = ACTION_SHORT


class RsiReversion(Strategy):
    """Buys weakness and sells strength as measured by Wilder's RSI (0-100 scale)."""

    name = "rsi_reversion"
    window = Param(14, low=2, high=10_000, doc="RSI window (bars)")
    lower = Param(30.0, low=0.0, high=100.0, doc="oversold level: go long below it")
    upper = Param(70.0, low=0.0, high=100.0, doc="overbought level: go short / exit above it")
    indicators = ("rsi(close, window)",)
    init_nb = staticmethod(init_nb)
    decide_nb = staticmethod(decide_nb)

    def check(self) -> None:
        self.require_less("lower", "upper")
