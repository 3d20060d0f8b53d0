"""Donchian breakout (turtle style) sized by risk per trade with an ATR stop distance."""

from __future__ import annotations

import numpy as np
from numba import njit

from framework.enums import ACTION_EXIT, ACTION_LONG, ACTION_SHORT, INTENT_ACTION
from framework.indicators_nb import donchian_init_nb, donchian_update_nb
from framework.jit import bar_njit
from framework.strategy import Param, Strategy

ENTRY_WINDOW, EXIT_WINDOW = 0, 1
PREV_ENTRY_UP, PREV_ENTRY_LO, PREV_EXIT_UP, PREV_EXIT_LO = 0, 1, 2, 3


@njit(cache=True)
def init_nb(p):
    return (donchian_init_nb(int(p[ENTRY_WINDOW])), donchian_init_nb(int(p[EXIT_WINDOW])), np.full(4, np.nan))


@bar_njit
def decide_nb(state, o, h, l, c, v, pos, p, intent):
    entry_state, exit_state, prev = state
    # the channels of the bars *before* this one: a breakout is a close beyond them
    if c > prev[PREV_ENTRY_UP]:
        intent[INTENT_ACTION] = ACTION_LONG
    elif c < prev[PREV_ENTRY_LO]:
        intent[INTENT_ACTION] = ACTION_SHORT
    elif (pos > 0.0 and c < prev[PREV_EXIT_LO]) or (pos < 0.0 and c > prev[PREV_EXIT_UP]):
        intent[INTENT_ACTION] = ACTION_EXIT
    upper, lower, _mid = donchian_update_nb(entry_state, h, l)
    prev[PREV_ENTRY_UP] = upper
    prev[PREV_ENTRY_LO] = lower
    upper, lower, _mid = donchian_update_nb(exit_state, h, l)
    prev[PREV_EXIT_UP] = upper
    prev[PREV_EXIT_LO] = lower


class DonchianBreakout(Strategy):
    """Enters on a close beyond the N-bar channel, exits on the shorter opposite channel.

    Runs by default with risk sizing: each trade risks ``size`` (1 %) of equity over a stop
    ``atr_stop_mult`` (2) ATRs away, and that stop is placed as the stop-loss.
    """

    name = "donchian_breakout"
    entry_window = Param(20, low=2, high=10_000, doc="breakout channel (bars)")
    exit_window = Param(10, low=1, high=10_000, doc="exit channel (bars)")
    sim_defaults = {"sizing": "risk", "size": 0.01, "atr_stop_mult": 2.0, "sl_atr": 2.0}
    indicators = ("donchian(high, low, entry_window)", "donchian(high, low, exit_window)")
    init_nb = staticmethod(init_nb)
    decide_nb = staticmethod(decide_nb)

    def check(self) -> None:
        self.require_less("exit_window", "entry_window")
