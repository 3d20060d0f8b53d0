"""SMA crossover: long when the fast average crosses above the slow one, short (or flat) below."""

from __future__ import annotations

import numpy as np
from numba import njit

from framework.enums import ACTION_LONG, ACTION_SHORT, INTENT_ACTION
from framework.indicators_nb import sma_init_nb, sma_nb, sma_update_nb
from framework.jit import bar_njit, bar_njit_inline
from framework.signals_nb import cross_nb
from framework.strategy import Param, SharedIndicator, Strategy

FAST, SLOW = 0, 1


@njit(cache=True)
def init_nb(p):
    return (sma_init_nb(int(p[FAST])), sma_init_nb(int(p[SLOW])), np.full(1, np.nan))


@bar_njit_inline
def rule_nb(fast, slow, prev, intent):
    """The rule on this bar's averages; ``prev[0]`` keeps the last fast - slow."""
    diff = fast - slow
    cross = cross_nb(prev[0], diff)
    prev[0] = diff
    if cross > 0:
        intent[INTENT_ACTION] = ACTION_LONG
    elif cross < 0:
        intent[INTENT_ACTION] = ACTION_SHORT


@bar_njit
def decide_nb(state, o, h, l, c, v, pos, p, intent):
    fast_state, slow_state, prev = state
    rule_nb(sma_update_nb(fast_state, c), sma_update_nb(slow_state, c), prev, intent)


@bar_njit_inline  # one caller, the sweep's step: inlined there
def decide_shared_nb(values, state, o, h, l, c, v, pos, p, intent):
    """``decide_nb`` with both averages computed once per window by a sweep (``shared``)."""
    rule_nb(values[0], values[1], state[2], intent)  # values in the order of ``shared``


class SmaCross(Strategy):
    """Trend following with two simple moving averages of the close."""

    name = "sma_cross"
    fast = Param(10, low=1, high=100_000, doc="fast SMA window (bars)")
    slow = Param(30, low=2, high=100_000, doc="slow SMA window (bars)")
    indicators = ("sma(close, fast)", "sma(close, slow)")
    shared = (SharedIndicator(sma_nb, "close", "fast"), SharedIndicator(sma_nb, "close", "slow"))
    init_nb = staticmethod(init_nb)
    decide_nb = staticmethod(decide_nb)
    decide_shared_nb = staticmethod(decide_shared_nb)

    def check(self) -> None:
        self.require_less("fast", "slow")
