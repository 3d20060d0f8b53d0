"""MACD trend: long when the MACD line crosses above its signal line, short (or flat) below."""

from __future__ import annotations

import numpy as np
from numba import njit

from framework.enums import ACTION_LONG, ACTION_SHORT, INTENT_ACTION
from framework.indicators_nb import macd_init_nb, macd_update_nb
from framework.jit import bar_njit
from framework.signals_nb import cross_nb
from framework.strategy import Param, Strategy

FAST, SLOW, SIGNAL = 0, 1, 2


@njit(cache=True)
def init_nb(p):
    return (macd_init_nb(int(p[FAST]), int(p[SLOW]), int(p[SIGNAL])), np.full(1, np.nan))


@bar_njit
def decide_nb(state, o, h, l, c, v, pos, p, intent):
    macd_state, prev = state
    hist = macd_update_nb(macd_state, c)[2]
    cross = cross_nb(prev[0], hist)
    prev[0] = hist
    if cross > 0:
        intent[INTENT_ACTION] = ACTION_LONG
    elif cross < 0:
        intent[INTENT_ACTION] = ACTION_SHORT


class MacdTrend(Strategy):
    """Trend following on the MACD histogram's sign changes."""

    name = "macd_trend"
    fast = Param(12, low=1, high=10_000, doc="fast EMA window (bars)")
    slow = Param(26, low=2, high=10_000, doc="slow EMA window (bars)")
    signal = Param(9, low=1, high=10_000, doc="signal EMA window (bars)")
    indicators = ("macd(close, fast, slow, signal)",)
    init_nb = staticmethod(init_nb)
    decide_nb = staticmethod(decide_nb)

    def check(self) -> None:
        self.require_less("fast", "slow")
