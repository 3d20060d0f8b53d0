"""Numba kernel behind the fast path of OHLCV validation (``framework.data.validate_ohlcv``).

:func:`clean_scan_nb` answers one question about a frame in the standard shape: *can the detailed
validation find anything at all?* It returns ``CLEAN`` only when it has proved that every rule of
``validate_ohlcv`` passes with nothing to report (no error, no warning), and ``DETAILED`` whenever
it finds a problem or cannot prove its absence. ``DETAILED`` is always safe: the caller then runs
the detailed (pandas/numpy) validation, which decides and writes the report. So this kernel may
err only towards ``DETAILED``; it never decides what is wrong.

What it proves, in the order of the rules in ``framework.data``:

- every timestamp is present (not NaT), strictly increasing, and equally spaced; a constant
  spacing means no duplicates, no out-of-order rows and no gaps under either calendar;
- no NaN or infinity in any column, every price > 0, volume >= 0, and high/low contain
  open/close within the same float tolerance (``1e-9 * |high|``) and with the same float expressions as the
  detailed check;
- no outlier spike (when spikes are checked at all). The detailed rule needs the median and the
  median absolute deviation (MAD) of the log close-to-close returns, which cost two partial sorts.
  Here they are bracketed instead: a histogram of the close ratios ``c[i] / c[i-1]`` (ratios
  order like their logs) gives an interval ``[m_lo, m_hi]`` that holds the median and a lower
  bound ``s_lo`` of the robust scale; one bin of slack on each side absorbs rounding. Then, with
  ``T`` a little below ``k * s_lo``: no two consecutive returns can have ``|z| > k`` (the close
  rule needs two, of opposite signs) and no wick can stick out by more than ``T`` in log terms.
  When a bound is not tight enough to decide (a pathological distribution, a real spike, a
  threshold close to a value) the answer is ``DETAILED``.

No Python objects inside; the frame's arrays are read in place (no copies).
"""

from __future__ import annotations

import numpy as np

from framework.jit import njit

CLEAN = 0
DETAILED = 1

_NAT = np.iinfo(np.int64).min
_DAY_NS = 86_400 * 1_000_000_000
_WEEK_NS = 7 * _DAY_NS
_SAMPLE = 2048  # close ratios sampled to place the histogram
_BINS = 4096  # histogram bins over [median - 10 MAD, median + 10 MAD] of the sample
_HALF_WIDTH_MADS = 10.0
_REL_MARGIN = 1e-9  # the threshold sits this much (relative) below k * s_lo ...
_ABS_MARGIN = 1e-11  # ... and this much (log units) lower still: room for rounding of logs


@njit(cache=True)
def clean_scan_nb(ts, o, h, lo, c, v, has_volume, check_spikes, k):
    """``(status, spacing_ns)``: ``status`` is ``CLEAN`` when validation can find nothing (see the
    module docstring), else ``DETAILED``; ``spacing_ns`` is the constant spacing when ``CLEAN``.

    Args:
        ts: int64 nanosecond timestamps (NaT as the minimum int64).
        o, h, lo, c: float64 prices; ``v`` float64 volume (ignored unless ``has_volume``).
        check_spikes: whether the spike rules apply (at least 20 rows and a finite threshold).
        k: the spike threshold in robust standard deviations (> 0 when ``check_spikes``).
    """
    n = ts.shape[0]
    if n < 2:
        return DETAILED, 0
    spacing = ts[1] - ts[0]
    if spacing <= 0 or ts[0] == _NAT:
        return DETAILED, 0
    # branch-free accumulation of the checks (the loop vectorises); ``bad`` counts failing rows
    bad = 0
    for i in range(n):
        oi, hi, li, ci = o[i], h[i], lo[i], c[i]
        # NaN fails every comparison, so "not (0 < x < inf)" catches NaN, non-positive and
        # infinite at once
        row_bad = not (0.0 < oi < np.inf and 0.0 < hi < np.inf and 0.0 < li < np.inf
                       and 0.0 < ci < np.inf)
        if has_volume:
            row_bad |= not (0.0 <= v[i] < np.inf)
        tol = 1e-9 * np.abs(hi)  # the same expressions as the detailed check
        row_bad |= (hi < max(oi, ci) - tol) | (li > min(oi, ci) + tol) | (hi < li - tol)
        bad += row_bad
    for i in range(1, n):
        bad += (ts[i] == _NAT) | (ts[i] - ts[i - 1] != spacing)
    if bad:
        return DETAILED, 0
    if check_spikes and not _no_spikes(o, h, lo, c, k):
        return DETAILED, 0
    return CLEAN, spacing


@njit(cache=True, internal=True)
def _no_spikes(o, h, lo, c, k):
    """True when provably neither spike rule fires on clean, positive prices (see module doc)."""
    n = c.shape[0]
    m = n - 1  # number of returns
    # 1. place the histogram from a strided sample of close ratios
    step = max(1, m // _SAMPLE)
    ns = (m + step - 1) // step
    sample = np.empty(ns, dtype=np.float64)
    for j in range(ns):
        i = 1 + j * step
        sample[j] = c[i] / c[i - 1]
    sample.sort()
    med_s = 0.5 * (sample[(ns - 1) // 2] + sample[ns // 2])
    dev = np.abs(sample - med_s)
    dev.sort()
    mad_s = 0.5 * (dev[(ns - 1) // 2] + dev[ns // 2])
    if not (mad_s > 1e-9 * med_s):
        return False  # (near-)constant prices: let the detailed check decide
    base = med_s - _HALF_WIDTH_MADS * mad_s
    if not (base > 0.0):
        return False
    width = 2.0 * _HALF_WIDTH_MADS * mad_s / _BINS
    inv_w = 1.0 / width
    # 2. histogram of all ratios; counts[0] is below the range, counts[_BINS + 1] above it
    counts = np.zeros(_BINS + 2, dtype=np.int64)
    for i in range(1, n):
        x = (c[i] / c[i - 1] - base) * inv_w
        counts[int(min(max(x, -1.0), float(_BINS)) + 1.0)] += 1
    # 3. bracket the median of the returns: order statistics (m-1)//2 and m//2
    lo_rank, hi_rank = (m - 1) // 2, m // 2
    b_lo, b_hi = -1, -1
    seen = 0
    for b in range(_BINS + 2):
        seen += counts[b]
        if b_lo < 0 and seen > lo_rank:
            b_lo = b
        if seen > hi_rank:
            b_hi = b
            break
    # histogram bin b (1.._BINS) holds ratios in [edge(b - 1), edge(b)), edge(j) = base + j*width;
    # with one bin of slack a value counted in bin b lies in [edge(b - 2), edge(b + 1)]
    if b_lo < 3 or b_hi > _BINS - 2:
        return False  # the median is near the edge of the range: the sample misled us
    m_lo = np.log(base + (b_lo - 2) * width)
    m_hi = np.log(base + (b_hi + 1) * width)
    # 4. lower bound of the MAD: each return's distance to [m_lo, m_hi] from its bin's edges
    nb = _BINS + 2
    lower = np.empty(nb, dtype=np.float64)
    lower[0] = max(0.0, m_lo - np.log(base + width))  # below the range: ratio < edge(1)
    lower[nb - 1] = max(0.0, np.log(base + (_BINS - 1) * width) - m_hi)  # above: >= edge(_BINS-1)
    for b in range(1, _BINS + 1):
        r_min = np.log(base + (b - 2) * width) if b >= 2 else -np.inf
        r_max = np.log(base + (b + 1) * width)
        lower[b] = max(0.0, r_min - m_hi, m_lo - r_max)
    order = np.argsort(lower)
    seen = 0
    mad_lo = 0.0
    for j in range(nb):
        b = order[j]
        seen += counts[b]
        if seen > lo_rank:  # the lower middle order statistic bounds numpy's median from below
            mad_lo = lower[b]
            break
    s_lo = 1.4826 * mad_lo
    t = k * s_lo * (1.0 - _REL_MARGIN) - _ABS_MARGIN
    if not (t > 0.0):
        return False
    # 5. a return whose |z| may exceed k has ratio above up_q or below down_q
    up_q = np.exp(m_lo + t)
    down_q = np.exp(m_hi - t)
    wick = np.exp(t)
    # (comparisons multiplied out instead of divided: same result within the margins, and fast)
    pairs = 0
    for i in range(1, n - 1):
        now = (c[i] > up_q * c[i - 1]) | (c[i] < down_q * c[i - 1])
        nxt = (c[i + 1] > up_q * c[i]) | (c[i + 1] < down_q * c[i])
        pairs += now & nxt
    # wicks of bars 1..n-2 against both neighbours' wicks and their own body
    wicks = 0
    for j in range(1, n - 1):
        top = max(max(h[j - 1], h[j + 1]), max(o[j], c[j]))
        bottom = min(min(lo[j - 1], lo[j + 1]), min(o[j], c[j]))
        wicks += (h[j] > wick * top) | (bottom > wick * lo[j])
    if pairs or wicks:
        return False
    return True


@njit(cache=True)
def saturday_count_nb(t0, spacing, n):
    """How many of ``t0 + i * spacing`` (ns, ``i < n``) fall on a Saturday (UTC).

    A day number ``t // day`` is a Saturday when it is 2 modulo 7 (1970-01-03 was one). The
    weekday pattern of an evenly spaced series repeats every ``week / gcd(spacing, week)`` bars,
    so one period is counted and multiplied, unless the period is longer than the series.
    """
    a, b = spacing, _WEEK_NS
    while b:
        a, b = b, a % b
    period = _WEEK_NS // a
    if period >= n:
        return _count_saturdays(t0, spacing, n)
    full, rest = divmod(n, period)
    return full * _count_saturdays(t0, spacing, period) + _count_saturdays(t0, spacing, rest)


@njit(cache=True, internal=True)
def _count_saturdays(t0, spacing, n):
    count = 0
    for i in range(n):
        if (t0 + i * spacing) // _DAY_NS % 7 == 2:
            count += 1
    return count
