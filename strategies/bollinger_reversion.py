"""Bollinger band reversion: fade closes outside the bands, take profit at the middle band."""

from __future__ import annotations

import numpy as np
from numba import njit

from framework.enums import ACTION_EXIT, ACTION_LONG, ACTION_SHORT, INTENT_ACTION
from framework.indicators_nb import bbands_init_nb, bbands_update_nb
from framework.jit import bar_njit
from framework.strategy import Param, Strategy

WINDOW, K = 0, 1


@njit(cache=True)
def init_nb(p):
    return (bbands_init_nb(int(p[WINDOW]), p[K]),)


@bar_njit
def decide_nb(state, o, h, l, c, v, pos, p, intent):
    mid, upper, lower, _pct_b, _width = bbands_update_nb(state[0], c)
    if np.isnan(mid):
        return
    if c < lower:
        intent[INTENT_ACTION] = ACTION_LONG
    elif c > upper:
        intent[INTENT_ACTION] = ACTION_SHORT
    elif (pos > 0.0 and c >= mid) or (pos < 0.0 and c <= mid):
        intent[INTENT_ACTION] = ACTION_EXIT


class BollingerReversion(Strategy):
    """Mean reversion to the moving average after a close beyond k standard deviations."""

    name = "bollinger_reversion"
    window = Param(20, low=2, high=10_000, doc="band window (bars)")
    k = Param(2.0, low=0.1, high=10.0, doc="band width in standard deviations")
    indicators = ("bbands(close, window, k)",)
    init_nb = staticmethod(init_nb)
    decide_nb = staticmethod(decide_nb)
