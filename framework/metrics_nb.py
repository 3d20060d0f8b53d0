"""Numba kernels for equity-curve statistics, in streaming form.

Conventions (shared by every kernel here):

- The input is an equity curve in cash units, one value per bar, oldest first; bar ``i`` is the
  ``i``-th value fed in (0-based).
- Returns are simple per-bar returns ``r_i = equity_i / equity_{i-1} - 1`` (``i >= 1``) and
  excess returns are ``r_i - rf_bar`` with ``rf_bar`` the per-bar risk-free rate (a fraction).
- A statistics *state* is a float64 vector of ``N_STATS_STATE`` slots indexed by the ``S_*``
  constants. ``stats_update_nb`` folds one bar into it in O(1) work and memory, so a sweep can
  keep one state per parameter combination instead of a bars x combinations equity matrix, and
  the live runner can keep one state per session. ``stats_state_1d_nb`` is the loop of that same
  step over an array (no second implementation).
- ``stats_finalize_nb`` turns a state into the ratios (``R_*`` slots). Durations are in bars;
  the pandas layer (``framework.metrics``) maps them onto timestamps.
- Mean and variance use Welford's update, so results agree with two-pass NumPy formulas to
  ~1e-12 relative, not bit for bit.
"""

from __future__ import annotations

import numpy as np

from framework.jit import bar_njit_inline, bar_njit_internal, njit

# --- state slots ------------------------------------------------------------------------------
S_RF_BAR = 0  # per-bar risk-free rate (fraction), fixed at init
S_BARS = 1  # equity values seen so far
S_FIRST_EQUITY = 2
S_LAST_EQUITY = 3
S_N_RET = 4  # returns seen (= bars - 1)
S_MEAN = 5  # running mean of excess returns
S_M2 = 6  # running sum of squared deviations of excess returns (Welford)
S_DOWN_SQ = 7  # running sum of min(excess return, 0) ** 2
S_PEAK = 8  # running maximum of equity
S_PEAK_BAR = 9  # bar of that maximum (the latest bar that reached it)
S_UNDERWATER = 10  # 1 while equity is below S_PEAK
S_MAX_DD = 11  # most negative equity / peak - 1 so far (fraction, <= 0)
S_DD_START_BAR = 12  # peak bar of the longest underwater period so far
S_DD_END_BAR = 13  # its recovery bar, or the latest bar while it is still under water
S_EXPOSED_BARS = 14  # bars with a position open at the close
N_STATS_STATE = 15

# --- finalised results ------------------------------------------------------------------------
R_TOTAL_RETURN = 0  # fraction
R_CAGR = 1  # fraction per year
R_ANN_VOL = 2  # fraction, annualised
R_SHARPE = 3
R_SORTINO = 4
R_CALMAR = 5
R_MAX_DD = 6  # fraction, <= 0
R_MAX_DD_BARS = 7  # bars from the peak to the recovery (or to the last bar)
R_EXPOSURE = 8  # fraction of bars
N_RESULTS = 9


@njit(cache=True)
def stats_init_nb(rf_bar: float) -> np.ndarray:
    """Return an empty statistics state for a per-bar risk-free rate ``rf_bar`` (fraction)."""
    state = np.zeros(N_STATS_STATE, dtype=np.float64)
    state[S_RF_BAR] = rf_bar
    return state


# inlined at numba-IR level: it runs once per bar and combination in a sweep
@bar_njit_inline
def stats_update_nb(state: np.ndarray, equity: float, in_market: bool) -> None:
    """Fold one bar (its closing ``equity`` in cash, whether a position was open) into ``state``."""
    bar = state[S_BARS]
    if bar == 0:
        state[S_FIRST_EQUITY] = equity
        state[S_PEAK] = equity
        state[S_PEAK_BAR] = 0.0
    else:
        last = state[S_LAST_EQUITY]
        # a bar without change (flat, most of them) skips the division: x / x is exactly 1
        ratio = 1.0 if equity == last and 0.0 < abs(last) < np.inf else equity / last
        excess = ratio - 1.0 - state[S_RF_BAR]
        n = state[S_N_RET] + 1.0
        delta = excess - state[S_MEAN]
        state[S_MEAN] += delta / n
        state[S_M2] += delta * (excess - state[S_MEAN])
        if excess < 0.0:
            state[S_DOWN_SQ] += excess * excess
        state[S_N_RET] = n

        if equity >= state[S_PEAK]:
            if state[S_UNDERWATER] == 1.0:  # recovery closes an underwater period
                _note_underwater_nb(state, bar)
            state[S_PEAK] = equity
            state[S_PEAK_BAR] = bar
            state[S_UNDERWATER] = 0.0
        else:
            state[S_UNDERWATER] = 1.0
            _note_underwater_nb(state, bar)
            dd = equity / state[S_PEAK] - 1.0
            state[S_MAX_DD] = min(state[S_MAX_DD], dd)
    if in_market:
        state[S_EXPOSED_BARS] += 1.0
    state[S_LAST_EQUITY] = equity
    state[S_BARS] = bar + 1.0


@bar_njit_internal
def _note_underwater_nb(state: np.ndarray, bar: float) -> None:
    """Record [peak bar, ``bar``] as the longest underwater period if it beats the current one."""
    if bar - state[S_PEAK_BAR] > state[S_DD_END_BAR] - state[S_DD_START_BAR]:
        state[S_DD_START_BAR] = state[S_PEAK_BAR]
        state[S_DD_END_BAR] = bar


@njit(cache=True)
def stats_state_1d_nb(equity: np.ndarray, in_market: np.ndarray, rf_bar: float) -> np.ndarray:
    """Run ``stats_update_nb`` over a whole equity curve and return the final state."""
    state = stats_init_nb(rf_bar)
    for i in range(equity.shape[0]):
        stats_update_nb(state, equity[i], in_market[i])
    return state


@njit(cache=True)
def safe_ratio_nb(num: float, den: float) -> float:
    """``num / den`` with a zero denominator giving +-inf by the sign of ``num``, NaN for 0/0."""
    if den == 0.0:
        if num > 0.0:
            return np.inf
        if num < 0.0:
            return -np.inf
        return np.nan
    return num / den


@njit(cache=True)
def stats_finalize_nb(state: np.ndarray, ann_factor: float, years: float) -> np.ndarray:
    """Turn a state into the ``R_*`` results.

    ``ann_factor`` is bars per year; ``years`` is the calendar span of the curve in years (first
    to last bar), used for the CAGR.
    """
    out = np.full(N_RESULTS, np.nan)
    n_ret = state[S_N_RET]
    first = state[S_FIRST_EQUITY]
    last = state[S_LAST_EQUITY]
    out[R_TOTAL_RETURN] = last / first - 1.0
    if last <= 0.0:
        out[R_CAGR] = -1.0
    elif years > 0.0:
        out[R_CAGR] = (last / first) ** (1.0 / years) - 1.0
    if n_ret >= 2.0:
        std = np.sqrt(state[S_M2] / (n_ret - 1.0))
        out[R_ANN_VOL] = std * np.sqrt(ann_factor)
        if std > 0.0:
            out[R_SHARPE] = state[S_MEAN] / std * np.sqrt(ann_factor)
    if n_ret >= 1.0:
        down_dev = np.sqrt(state[S_DOWN_SQ] / n_ret)
        out[R_SORTINO] = safe_ratio_nb(state[S_MEAN], down_dev) * np.sqrt(ann_factor)
    out[R_MAX_DD] = state[S_MAX_DD]
    out[R_CALMAR] = safe_ratio_nb(out[R_CAGR], -state[S_MAX_DD])
    out[R_MAX_DD_BARS] = state[S_DD_END_BAR] - state[S_DD_START_BAR]
    if state[S_BARS] > 0.0:
        out[R_EXPOSURE] = state[S_EXPOSED_BARS] / state[S_BARS]
    return out
