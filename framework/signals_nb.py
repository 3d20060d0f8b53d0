"""Small numba helpers for signal rules, shared by the strategies in ``strategies/``."""

from __future__ import annotations

import numpy as np

from framework.jit import bar_njit


@bar_njit
def cross_nb(prev_diff: float, diff: float) -> int:
    """+1 when a series crosses above another (``diff = a - b`` goes from <= 0 to > 0),
    -1 when it crosses below (from >= 0 to < 0), 0 otherwise or while either value is NaN."""
    if np.isnan(prev_diff) or np.isnan(diff):
        return 0
    if prev_diff <= 0.0 < diff:
        return 1
    if prev_diff >= 0.0 > diff:
        return -1
    return 0
