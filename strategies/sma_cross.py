"""SMA crossover: long when the fast average crosses above the slow one, short (or flat) below."""

from __future__ import annotations

import numpy as np
from numba import njit

from framework.enums import ACTION_LONG, ACTION_SHORT, INTENT_ACTION
from framework.indicators_nb import sma_init_nb, sma_update_nb
from framework.jit import bar_njit
from framework.signals_nb import cross_nb
from framework.strategy import Param, Strategy

FAST, SLOW = 0, 1


@njit(cache=True)
def init_nb(p):
    return (sma_init_nb(int(p[FAST])), sma_init_nb(int(p[SLOW])), np.full(1, np.nan))


@bar_njit
def decide_nb(state, o, h, l, c, v, pos, p, intent):
    fast_state, slow_state, prev = state
    diff = sma_update_nb(fast_state, c) - sma_update_nb(slow_state, c)
    cross = cross_nb(prev[0], diff)
    prev[0] = diff
    if cross > 0:
        intent[INTENT_ACTION] = ACTION_LONG
    elif cross < 0:
        intent[INTENT_ACTION] = ACTION_SHORT


class SmaCross(Strategy):
    """Trend following with two simple moving averages of the close."""

    name = "sma_cross"
    fast = Param(10, low=1, high=100_000, doc="fast SMA window (bars)")
    slow = Param(30, low=2, high=100_000, doc="slow SMA window (bars)")
    indicators = ("sma(close, fast)", "sma(close, slow)")
    init_nb = staticmethod(init_nb)
    decide_nb = staticmethod(decide_nb)

    def check(self) -> None:
        self.require_less("fast", "slow")
