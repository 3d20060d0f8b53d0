"""Numba kernels for risk analytics: VaR and Expected Shortfall, rolling moments, Monte Carlo.

Conventions (shared by every kernel here):

- Returns are simple fractional returns, one per bar (or per trade), oldest first; no NaN (the
  pandas layer, ``framework.risk``, rejects it before calling a kernel).
- VaR and ES are **positive loss fractions**: ``var = -q`` where ``q`` is the ``level``
  quantile of returns (``level = 1 - confidence``), ``es = -mean(returns <= q)``.
- Quantiles interpolate linearly between order statistics exactly as ``np.quantile(x, level)``
  (``method="linear"``, Hyndman & Fan type 7): the virtual index ``(m - 1) * level`` and the
  same two-sided ``lerp``, so results are bit-identical to NumPy's.
- Rolling outputs have one value per input; the value at ``t`` uses the window ending at ``t``
  inclusive, NaN before the first full window. Rolling kernels work in fixed-size chunks of
  outputs (``CHUNK``), each starting from scratch, in parallel: the arithmetic, and so every
  bit of the result, does not depend on the number of threads.
- Random numbers: SplitMix64 used as a counter-based generator. Path ``p`` of a run seeded with
  ``seed`` has the start state ``s_p = mix(seed + G * (p + 1))`` and its ``k``-th uniform is
  ``(mix(s_p + G * (k + 1)) >> 11) * 2**-53`` in [0, 1) (``G`` the golden-ratio increment,
  ``mix`` SplitMix64's finaliser). A draw depends only on (seed, path, k), never on which
  thread ran the path, and NumPy can reproduce it with vectorised uint64 arithmetic.
- Monte Carlo paths start at equity 1.0 and compound one return per step; equity that reaches
  0 (a return of -100 % or worse) stays at 0. Per path a kernel returns the ``P_*`` slots:
  final return, maximum drawdown (<= 0, as in ``framework.metrics``) and the lowest equity
  minus 1 (<= 0, the deepest loss below the starting capital).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from framework.jit import njit

#: outputs per chunk of the rolling kernels (fixed, so results do not depend on thread count)
CHUNK = 4096

# SplitMix64 constants
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_M53 = 1.0 / 9007199254740992.0

# --- per-path results ---------------------------------------------------------------------
P_FINAL_RETURN = 0  # equity at the end - 1 (fraction)
P_MAX_DRAWDOWN = 1  # most negative equity / running peak - 1 (fraction, <= 0)
P_MIN_RETURN = 2  # lowest equity (the start included) - 1 (fraction, <= 0)
N_PATH_STATS = 3

# --- rolling moments ----------------------------------------------------------------------
M_MEAN = 0
M_STD = 1  # sample standard deviation, ddof = 1
M_SKEW = 2  # biased moment estimator, as scipy.stats.skew(bias=True)
M_EXKURT = 3  # excess kurtosis, biased, as scipy.stats.kurtosis(fisher=True, bias=True)
N_MOMENTS = 4


# --- random numbers -----------------------------------------------------------------------


@njit(cache=True)
def mix64_nb(z: np.uint64) -> np.uint64:
    """SplitMix64's finaliser: a bijective scramble of a 64-bit word."""
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def path_state_nb(seed: np.uint64, path: int) -> np.uint64:
    """The start state of path ``path`` of a run seeded with ``seed``."""
    return mix64_nb(seed + _GAMMA * np.uint64(path + 1))


@njit(cache=True)
def uniform_nb(state: np.uint64, k: int) -> float:
    """The ``k``-th uniform draw in [0, 1) of the stream starting at ``state``."""
    return float(mix64_nb(state + _GAMMA * np.uint64(k + 1)) >> np.uint64(11)) * _TWO_POW_M53


@njit(cache=True)
def index_nb(u: float, n: int) -> int:
    """A uniform draw ``u`` in [0, 1) as an index in 0 .. n-1 (clamped: ``u * n`` can round up)."""
    return min(int(u * n), n - 1)


# --- quantiles, VaR and ES ----------------------------------------------------------------


@njit(cache=True)
def _lerp_nb(a: float, b: float, gamma: float) -> float:
    """``a + (b - a) * gamma`` computed from the nearer end, as NumPy's quantile ``_lerp``."""
    diff = b - a
    if gamma >= 0.5:
        return b - diff * (1.0 - gamma)
    return a + diff * gamma


@njit(cache=True)
def sorted_quantile_nb(s: np.ndarray, level: float) -> float:
    """The ``level`` quantile of sorted ``s``, interpolated exactly as ``np.quantile`` (linear)."""
    m = s.shape[0]
    virtual = (m - 1) * level
    if virtual >= m - 1:
        return s[m - 1]
    lo = int(np.floor(virtual))
    return _lerp_nb(s[lo], s[lo + 1], virtual - lo)


@njit(cache=True)
def sorted_var_es_nb(s: np.ndarray, level: float) -> tuple[float, float]:
    """VaR and ES (positive losses) of sorted returns ``s`` at quantile ``level``."""
    q = sorted_quantile_nb(s, level)
    total = 0.0
    k = 0
    while k < s.shape[0] and s[k] <= q:
        total += s[k]
        k += 1
    return -q, -total / k


@njit(cache=True)
def var_es_nb(x: np.ndarray, level: float) -> tuple[float, float]:
    """VaR and ES (positive losses) of unsorted returns ``x`` at quantile ``level``, in O(n):
    a partial sort (``np.partition``) for the quantile, one pass for the tail mean."""
    m = x.shape[0]
    virtual = (m - 1) * level
    if virtual >= m - 1:
        q = np.max(x)
    else:
        lo = int(np.floor(virtual))
        part = np.partition(x, lo)
        q = _lerp_nb(part[lo], np.min(part[lo + 1 :]), virtual - lo)
    total = 0.0
    k = 0
    for v in x:
        if v <= q:
            total += v
            k += 1
    return -q, -total / k


@njit(cache=True)
def _slide_sorted_nb(s: np.ndarray, old: float, new: float) -> None:
    """Replace one occurrence of ``old`` in sorted ``s`` by ``new``, keeping ``s`` sorted.

    One scan from ``old``'s place towards ``new``'s, moving the values in between by one (faster
    here than a second binary search and a block move: measured at window 250)."""
    j = np.searchsorted(s, old)
    m = s.shape[0]
    if new > old:
        while j + 1 < m and s[j + 1] < new:
            s[j] = s[j + 1]
            j += 1
    else:
        while j > 0 and s[j - 1] > new:
            s[j] = s[j - 1]
            j -= 1
    s[j] = new


@njit(cache=True)
def var_es_chunk_nb(x: np.ndarray, window: int, level: float, first: int, last: int,
                    out: np.ndarray) -> None:
    """Historical VaR and ES of the windows ending at ``first .. last - 1`` into rows
    ``0 .. last - first - 1`` of ``out``: one sort, then the window slides one value per bar."""
    s = np.sort(x[first - window + 1 : first + 1])
    for t in range(first, last):
        if t > first:
            _slide_sorted_nb(s, x[t - window], x[t])
        var, es = sorted_var_es_nb(s, level)
        out[t - first, 0] = var
        out[t - first, 1] = es


@njit(cache=True, parallel=True)
def rolling_var_es_nb(x: np.ndarray, window: int, level: float) -> np.ndarray:
    """Historical VaR and ES over each window of ``window`` values: an (n, 2) array, NaN rows
    before the first full window. O(window) per value (the sorted-window slide)."""
    n = x.shape[0]
    out = np.full((n, 2), np.nan)
    n_chunks = (max(n - window + 1, 0) + CHUNK - 1) // CHUNK
    for c in prange(n_chunks):
        first = window - 1 + c * CHUNK
        last = min(first + CHUNK, n)
        var_es_chunk_nb(x, window, level, first, last, out[first:last])
    return out


@njit(cache=True, parallel=True)
def compound_returns_nb(x: np.ndarray, horizon: int) -> np.ndarray:
    """Overlapping ``horizon``-bar compounded returns: ``prod(1 + x[i : i + horizon]) - 1``."""
    if horizon == 1:  # ``(1 + r) - 1`` is not always ``r`` in floating point
        return x.copy()
    n_out = x.shape[0] - horizon + 1
    out = np.empty(max(n_out, 0))
    for i in prange(n_out):
        growth = 1.0
        for j in range(i, i + horizon):
            growth *= 1.0 + x[j]
        out[i] = growth - 1.0
    return out


@njit(cache=True)
def _moments_from_sums_nb(s1: float, s2: float, s3: float, s4: float, m: int, shift: float,
                          out: np.ndarray, row: int) -> None:
    """Mean, std (ddof=1), biased skew and excess kurtosis from power sums of ``x - shift``,
    into ``out[row]``."""
    d = s1 / m  # mean of the shifted values
    e2 = s2 / m
    e3 = s3 / m
    e4 = s4 / m
    m2 = max(e2 - d * d, 0.0)
    m3 = e3 - 3.0 * d * e2 + 2.0 * d * d * d
    m4 = e4 - 4.0 * d * e3 + 6.0 * d * d * e2 - 3.0 * d * d * d * d
    out[row, M_MEAN] = shift + d
    out[row, M_STD] = np.sqrt(m2 * m / (m - 1.0))
    if m2 > 0.0:
        out[row, M_SKEW] = m3 / (m2 * np.sqrt(m2))
        out[row, M_EXKURT] = m4 / (m2 * m2) - 3.0
    else:  # a constant window has no shape; the parametric layer then ignores skew and kurtosis
        out[row, M_SKEW] = 0.0
        out[row, M_EXKURT] = 0.0


@njit(cache=True)
def moments_chunk_nb(x: np.ndarray, window: int, first: int, last: int, out: np.ndarray) -> None:
    """``M_*`` moments of the windows ending at ``first .. last - 1`` into rows
    ``0 .. last - first - 1`` of ``out``, from power sums updated one value in, one out per bar."""
    # power sums of deviations from the first window's mean: no cancellation
    shift = 0.0
    for j in range(first - window + 1, first + 1):
        shift += x[j]
    shift /= window
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    s4 = 0.0
    for j in range(first - window + 1, first + 1):
        d = x[j] - shift
        s1 += d
        s2 += d * d
        s3 += d * d * d
        s4 += d * d * d * d
    for t in range(first, last):
        if t > first:
            d = x[t] - shift
            o = x[t - window] - shift
            s1 += d - o
            s2 += d * d - o * o
            s3 += d * d * d - o * o * o
            s4 += d * d * d * d - o * o * o * o
        _moments_from_sums_nb(s1, s2, s3, s4, window, shift, out, t - first)


@njit(cache=True, parallel=True)
def rolling_moments_nb(x: np.ndarray, window: int) -> np.ndarray:
    """Mean, std, skew and excess kurtosis (``M_*`` columns) of each window of ``window``
    values: an (n, N_MOMENTS) array, NaN rows before the first full window."""
    n = x.shape[0]
    out = np.full((n, N_MOMENTS), np.nan)
    n_chunks = (max(n - window + 1, 0) + CHUNK - 1) // CHUNK
    for c in prange(n_chunks):
        first = window - 1 + c * CHUNK
        last = min(first + CHUNK, n)
        moments_chunk_nb(x, window, first, last, out[first:last])
    return out


@njit(cache=True)
def moments_nb(x: np.ndarray) -> np.ndarray:
    """``M_*`` moments of all of ``x`` (serial: no thread start-up for a single window)."""
    n = x.shape[0]
    out = np.empty((1, N_MOMENTS))
    moments_chunk_nb(x, n, n - 1, n, out)
    return out[0]


@njit(cache=True)
def parametric_var_es_nb(moments: np.ndarray, z: float, pdf: float, level: float,
                         horizon: int, cornish_fisher: bool) -> np.ndarray:
    """Normal or Cornish-Fisher VaR and ES (positive losses) from rows of ``M_*`` moments: an
    (n, 2) array. ``z`` is the standard normal ``level`` quantile, ``pdf`` its density.

    Mean scales by ``horizon``, standard deviation by ``sqrt(horizon)``; Cornish-Fisher divides
    the skew ``S`` by ``sqrt(horizon)`` and the excess kurtosis ``K`` by ``horizon`` (a sum of
    i.i.d. bars) and uses ``z_cf = g(z)``, ``g(u) = u + (u^2 - 1) S/6 + (u^3 - 3u) K/24 -
    (2u^3 - 5u) S^2/36``; its ES applies ``g`` to the truncated normal moments
    ``E[Z^k | Z < z]``, k = 1..3 (the mean of the Cornish-Fisher quantiles below ``level``).
    NaN moments give NaN."""
    n = moments.shape[0]
    out = np.empty((n, 2))
    root_h = np.sqrt(horizon)
    # E[Z^k | Z < z] for a standard normal Z
    t1 = -pdf / level
    t2 = 1.0 - z * pdf / level
    t3 = -(z * z + 2.0) * pdf / level
    for i in range(n):
        mu = moments[i, M_MEAN] * horizon
        sd = moments[i, M_STD] * root_h
        if cornish_fisher:
            sk = moments[i, M_SKEW] / root_h
            ku = moments[i, M_EXKURT] / horizon
            q = (z + (z * z - 1.0) * sk / 6.0 + (z**3 - 3.0 * z) * ku / 24.0
                 - (2.0 * z**3 - 5.0 * z) * sk * sk / 36.0)
            tail = (t1 + (t2 - 1.0) * sk / 6.0 + (t3 - 3.0 * t1) * ku / 24.0
                    - (2.0 * t3 - 5.0 * t1) * sk * sk / 36.0)
        else:
            q = z
            tail = t1
        out[i, 0] = -(mu + sd * q)
        out[i, 1] = -(mu + sd * tail)
    return out


@njit(cache=True, parallel=True)
def normal_horizon_returns_nb(mu: float, sigma: float, horizon: int, n_sims: int,
                              seed: np.uint64) -> np.ndarray:
    """``n_sims`` compounded ``horizon``-bar returns of i.i.d. normal(``mu``, ``sigma``) bars."""
    out = np.empty(n_sims)
    for p in prange(n_sims):
        state = path_state_nb(seed, p)
        growth = 1.0
        for j in range(horizon):
            # Box-Muller, cosine branch: two uniforms per normal draw
            u1 = 1.0 - uniform_nb(state, 2 * j)  # in (0, 1]: log is finite
            u2 = uniform_nb(state, 2 * j + 1)
            z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
            growth *= 1.0 + mu + sigma * z
        out[p] = growth - 1.0
    return out


# --- Monte Carlo of equity paths ----------------------------------------------------------


@njit(cache=True)
def _fold_step_nb(equity: float, peak: float, max_dd: float, low: float,
                  r: float) -> tuple[float, float, float, float]:
    """One step of a Monte Carlo path: equity, its peak, max drawdown and lowest equity."""
    equity = max(equity * (1.0 + r), 0.0)  # a wiped-out account stays at 0
    if equity > peak:
        peak = equity
    max_dd = min(max_dd, equity / peak - 1.0)
    low = min(low, equity)
    return equity, peak, max_dd, low


@njit(cache=True)
def _store_path_nb(out: np.ndarray, p: int, equity: float, max_dd: float, low: float) -> None:
    """Write one path's ``P_*`` results into row ``p`` of ``out``."""
    out[p, P_FINAL_RETURN] = equity - 1.0
    out[p, P_MAX_DRAWDOWN] = max_dd
    out[p, P_MIN_RETURN] = low - 1.0


@njit(cache=True, parallel=True)
def mc_trades_nb(trade_returns: np.ndarray, n_paths: int, n_steps: int, seed: np.uint64,
                 equity_out: np.ndarray) -> np.ndarray:
    """Bootstrap of trades: each path compounds ``n_steps`` trade returns drawn with replacement.
    Returns (n_paths, N_PATH_STATS); fills ``equity_out`` (n_paths, n_steps) unless it is empty."""
    n = trade_returns.shape[0]
    keep = equity_out.shape[0] > 0
    out = np.empty((n_paths, N_PATH_STATS))
    for p in prange(n_paths):
        state = path_state_nb(seed, p)
        equity, peak, max_dd, low = 1.0, 1.0, 0.0, 1.0
        for k in range(n_steps):
            r = trade_returns[index_nb(uniform_nb(state, k), n)]
            equity, peak, max_dd, low = _fold_step_nb(equity, peak, max_dd, low, r)
            if keep:
                equity_out[p, k] = equity
        _store_path_nb(out, p, equity, max_dd, low)
    return out


@njit(cache=True, parallel=True)
def mc_block_nb(returns: np.ndarray, n_paths: int, n_steps: int, block: float,
                seed: np.uint64, equity_out: np.ndarray) -> np.ndarray:
    """Stationary block bootstrap (Politis & Romano, 1994) of bar returns, circular, geometric
    block lengths with mean ``block`` bars. Step ``k`` uses draws ``2k`` (new block when below
    ``1 / block``; always at step 0) and ``2k + 1`` (the new block's start)."""
    n = returns.shape[0]
    keep = equity_out.shape[0] > 0
    p_new = 1.0 / block
    out = np.empty((n_paths, N_PATH_STATS))
    for p in prange(n_paths):
        state = path_state_nb(seed, p)
        equity, peak, max_dd, low = 1.0, 1.0, 0.0, 1.0
        pos = 0
        for k in range(n_steps):
            if k == 0 or uniform_nb(state, 2 * k) < p_new:
                pos = index_nb(uniform_nb(state, 2 * k + 1), n)
            else:
                pos += 1
                if pos == n:  # circular: a block running off the end continues at the start
                    pos = 0
            equity, peak, max_dd, low = _fold_step_nb(equity, peak, max_dd, low, returns[pos])
            if keep:
                equity_out[p, k] = equity
        _store_path_nb(out, p, equity, max_dd, low)
    return out


@njit(cache=True, parallel=True)
def mc_timing_nb(growth: np.ndarray, durations: np.ndarray, directions: np.ndarray, cost: float,
                 n_paths: int, seed: np.uint64, equity_out: np.ndarray) -> np.ndarray:
    """Randomised entry timing: the trades (``durations`` in bars, ``directions`` +1/-1, in
    order) at uniformly random non-overlapping entry bars of a price path ``growth`` (bars + 1
    values). Trade ``k`` returns ``direction * (growth[exit] / growth[entry] - 1) - cost``."""
    n_bars = growth.shape[0] - 1
    n_trades = durations.shape[0]
    free = n_bars - np.sum(durations)
    keep = equity_out.shape[0] > 0
    out = np.empty((n_paths, N_PATH_STATS))
    for p in prange(n_paths):
        state = path_state_nb(seed, p)
        # n_trades sorted uniforms as normalised cumulative sums of n_trades + 1 exponentials
        # (O(n) order statistics, no sort): the gaps before each trade. Draws are re-derived
        # from the counter in the second pass instead of stored.
        total = 0.0
        for k in range(n_trades + 1):
            total -= np.log(1.0 - uniform_nb(state, k))
        equity, peak, max_dd, low = 1.0, 1.0, 0.0, 1.0
        cum = 0.0
        held = 0
        for k in range(n_trades):
            cum -= np.log(1.0 - uniform_nb(state, k))
            gap = min(int(cum / total * (free + 1)), free)
            entry = gap + held
            held += durations[k]
            r = directions[k] * (growth[entry + durations[k]] / growth[entry] - 1.0) - cost
            equity, peak, max_dd, low = _fold_step_nb(equity, peak, max_dd, low, r)
            if keep:
                equity_out[p, k] = equity
        _store_path_nb(out, p, equity, max_dd, low)
    return out
