"""Streaming numba kernels for the technical indicators.

Every indicator ``xxx`` comes as three cached numba functions (``framework.jit``: the update, run
once per bar, is a ``bar_njit`` kernel without reference counting; the other two allocate):

- ``xxx_init_nb(<params>) -> state``: a 1-D float64 array holding everything the indicator
  remembers (ring buffers, running sums, smoothed values). It can be allocated inside other
  njit code and persisted as it is (the live runner saves it after every bar).
- ``xxx_update_nb(state, <one bar's scalars>) -> value`` (a tuple for multi-output indicators):
  consumes one bar in O(1) work (amortised O(1) for rolling max/min), mutates ``state`` and
  returns the value at that bar.
- ``xxx_nb(<1-D arrays>, <params>) -> array`` (tuple of arrays): ``xxx_init_nb`` then
  ``xxx_update_nb`` over the bars. There is no second implementation, so the array over history
  and the bar-by-bar values of the live runner are equal to the last bit (replay parity).

Conventions
-----------
- Axis 0 is time; the array kernels take 1-D arrays (one instrument).
- Windows are whole numbers of bars, >= 1 (>= 2 where a standard deviation is taken: bbands,
  zscore, realized_vol). ``xxx_init_nb`` raises ``ValueError`` for an invalid one (the pandas
  wrappers in ``framework.indicators`` say which parameter was wrong and why).
- Warm-up: the value is NaN until enough bars were seen. The number of leading NaNs on clean
  data is given in each docstring ("warm-up").
- Missing data: a non-finite input (NaN, +-inf; and for ``realized_vol`` a non-positive close)
  marks the bar as missing, and for indicators with several inputs the whole bar is missing if
  any input is. The output at a missing bar is always NaN. After it:

  * window indicators (sma, wma, bbands, zscore, vwap, realized_vol, stoch, donchian) return
    NaN for as long as the missing bar is inside their window and recover as soon as it has
    left (running sums never absorb a NaN);
  * recursive indicators (ema, macd, rsi, true_range, atr, adx, obv) treat the missing bar as
    absent: the state, including the previous close, is left untouched and the next valid bar
    continues as if the missing one had never existed;
  * support_resistance ignores the missing bar's prices (no pivot can be formed or confirmed
    with it inside the pivot's window) and keeps its levels.

- Rolling means come from Neumaier-compensated running sums over the valid values of the
  window. Rolling variances (bbands, zscore, realized_vol) come from compensated running sums of
  d = x - shift and d * d, where the shift is one of the window's values close to its mean and
  is re-centred (an O(window) recomputation from the ring buffer) whenever the mean drifts more
  than 4 standard deviations away from it. Every value leaves the sums exactly as it entered
  them, so nothing accumulates with the length of the history, and the cancellation in
  sum(d * d) - sum(d)^2 / n is bounded whatever the price level: the variance is within about
  50 eps of its own value, the std within about 6e-15 of itself (tested to 1e-12 against an
  exact two-pass std on long, high-level and calm-after-volatile series). Re-centring takes about one
  recomputation every few windows on market data: amortised O(1). When every value in the window
  is the same number the mean is that number exactly and the variance exactly 0 (tracked with a
  run counter, as pandas does), so flat data gives flat outputs rather than rounding noise.
- EMA and Wilder smoothing are one recursion ``v += alpha * (x - v)`` seeded with the simple
  mean of the first ``n`` values (the TA-Lib / Wilder convention): alpha = 2 / (n + 1) for the
  EMA, 1 / n for Wilder (RSI, ATR, ADX).

State layout
------------
A state is a concatenation of blocks; each block starts with its own length in slot 0, so an
update finds the next block without knowing the parameters. Blocks: a ring buffer, a rolling
window (ring + running moments), a rolling extreme (monotonic deque in a ring) and a smoother.
"""

from __future__ import annotations

import math

import numpy as np

from framework.jit import bar_njit, bar_njit_inline, bar_njit_internal_per_constant, njit

NAN = np.nan


@bar_njit_internal_per_constant
def _as_window(window, minimum):
    """``window`` as an int, or ValueError if it is not a whole number >= ``minimum``."""
    n = int(window)
    if n != window or n < minimum:
        if minimum <= 1:
            raise ValueError("indicator window must be a whole number of bars >= 1")
        raise ValueError("indicator window must be a whole number of bars >= 2")
    return n


@bar_njit_internal_per_constant
def _next(s, o):
    """Offset of the block after the one at ``o`` (slot 0 of every block is its length)."""
    return o + int(s[o])


@bar_njit_internal_per_constant
def _nsum_add(s, i, x):
    """Neumaier-compensated ``s[i] += x``; ``s[i + 1]`` carries the lost low-order bits."""
    acc = s[i]
    t = acc + x
    if abs(acc) >= abs(x):
        s[i + 1] += (acc - t) + x
    else:
        s[i + 1] += (x - t) + acc
    s[i] = t


@bar_njit_internal_per_constant
def _tsum_add(s, i, x):
    """Compensated ``s[i] += x`` like ``_nsum_add`` but branch-free (Knuth's TwoSum), for the
    shifted sums of a variance window, whose terms are as often larger than the sum as not."""
    acc = s[i]
    t = acc + x
    xp = t - acc
    s[i + 1] += (acc - (t - xp)) + (x - xp)
    s[i] = t


# --- ring buffer: [len, cap, pos, count, values[cap]] ------------------------------------------
_RING_HDR = 4


@bar_njit_internal_per_constant
def _ring_size(cap):
    return _RING_HDR + cap


@bar_njit_internal_per_constant
def _ring_init(s, o, cap):
    s[o] = _RING_HDR + cap
    s[o + 1] = cap
    s[o + 2] = 0.0
    s[o + 3] = 0.0
    s[o + _RING_HDR : o + _RING_HDR + cap] = NAN


@bar_njit_internal_per_constant
def _ring_full(s, o):
    return s[o + 3] == s[o + 1]


@bar_njit_internal_per_constant
def _ring_push(s, o, x):
    """Append ``x``; return the value it overwrote (meaningful only if the ring was full)."""
    cap = int(s[o + 1])
    pos = int(s[o + 2])
    old = s[o + _RING_HDR + pos]
    s[o + _RING_HDR + pos] = x
    s[o + 2] = pos + 1 if pos + 1 < cap else 0  # a compare, cheaper than an integer modulo
    if s[o + 3] < cap:
        s[o + 3] += 1.0
    return old


@bar_njit_internal_per_constant
def _ring_oldest(s, o):
    """Oldest value of a full ring."""
    return s[o + _RING_HDR + int(s[o + 2])]


# --- rolling window: [len, n_valid, n_bad, sum, sum_comp, sq, sq_comp, shift, last, run]
#     + ring[n] -------------------------------------------------------------------------------
# Two kinds share the layout. A mean-only window (SMA, WMA, stoch %D, VWAP; ``_win_*``) keeps
# the compensated sum of its values. A variance window (bbands, zscore, realized_vol;
# ``_vwin_*``) keeps compensated sums of d = x - shift and of d * d instead: the same d (and
# d * d) that entered the sums leaves them, so they stay the window's sums to the last bit
# however long the history, and the only loss is the cancellation in sq - sum^2 / n: the
# variance is within about (2 + 3 (mean - shift)^2 / var) eps of itself. ``_vwin_anchor`` moves
# the shift to the window value nearest the mean (O(n)) when (mean - shift)^2 > _ANCHOR_RATIO *
# var, which caps that at 50 eps (the std within 25 eps, 6e-15, of itself) at any price level,
# however calm a window is after volatile ones.
_W_VALID, _W_BAD, _W_SUM, _W_SQ, _W_SHIFT, _W_LAST, _W_RUN = 1, 2, 3, 5, 7, 8, 9
_W_HDR = 10
_ANCHOR_RATIO = 16.0


@bar_njit_internal_per_constant
def _win_size(n):
    return _W_HDR + _ring_size(n)


@bar_njit_internal_per_constant
def _win_init(s, o, n):
    """A rolling window of ``n`` values at offset ``o`` (either kind)."""
    s[o] = _win_size(n)
    s[o + 1 : o + _W_HDR] = 0.0
    s[o + _W_LAST] = NAN
    _ring_init(s, o + _W_HDR, n)


@bar_njit_internal_per_constant
def _win_clear_sums(s, o):
    s[o + _W_SUM : o + _W_SHIFT] = 0.0


@bar_njit_internal_per_constant
def _win_track(s, o, x):
    """Count a value entering the window: valid/missing counts, last value and its run."""
    if not math.isfinite(x):
        s[o + _W_BAD] += 1.0
        s[o + _W_LAST] = NAN
        s[o + _W_RUN] = 0.0
        return False
    s[o + _W_VALID] += 1.0
    s[o + _W_RUN] = s[o + _W_RUN] + 1.0 if x == s[o + _W_LAST] else 1.0
    s[o + _W_LAST] = x
    return True


@bar_njit_internal_per_constant
def _win_untrack(s, o, y):
    """Count a value leaving the window; False if it was missing or the window is now empty
    (then the sums restart from exact zeros instead of carrying rounding residue)."""
    if not math.isfinite(y):
        s[o + _W_BAD] -= 1.0
        return False
    s[o + _W_VALID] -= 1.0
    if s[o + _W_VALID] == 0.0:
        _win_clear_sums(s, o)
        return False
    return True


@bar_njit_internal_per_constant
def _win_push(s, o, x):
    """Slide a mean-only window by one value (non-finite values count as missing).

    ``_ring_push``, ``_win_untrack``, ``_win_track`` and ``_nsum_add`` written out over locals:
    the same arithmetic, but each slot is loaded and stored once (the ring's store at a
    variable index would otherwise make the compiler reload every header slot after it)."""
    r = o + _W_HDR
    cap = s[r + 1]
    count = s[r + 3]
    pos = int(s[r + 2])
    slot = r + _RING_HDR + pos
    old = s[slot]
    s[slot] = x
    s[r + 2] = pos + 1 if pos + 1 < cap else 0
    valid = s[o + _W_VALID]
    bad = s[o + _W_BAD]
    acc = s[o + _W_SUM]
    comp = s[o + _W_SUM + 1]
    if count == cap:  # full: the oldest value leaves
        if not math.isfinite(old):
            bad -= 1.0
        else:
            valid -= 1.0
            if valid == 0.0:  # empty: the sums restart from exact zeros (``_win_untrack``)
                acc = 0.0
                comp = 0.0
                s[o + _W_SQ] = 0.0
                s[o + _W_SQ + 1] = 0.0
            else:
                t = acc - old
                comp += ((acc - t) - old) if abs(acc) >= abs(old) else ((-old - t) + acc)
                acc = t
    else:
        s[r + 3] = count + 1.0
    if not math.isfinite(x):
        bad += 1.0
        s[o + _W_LAST] = NAN
        s[o + _W_RUN] = 0.0
    else:
        valid += 1.0
        s[o + _W_RUN] = s[o + _W_RUN] + 1.0 if x == s[o + _W_LAST] else 1.0
        s[o + _W_LAST] = x
        t = acc + x
        comp += ((acc - t) + x) if abs(acc) >= abs(x) else ((x - t) + acc)
        acc = t
    s[o + _W_VALID] = valid
    s[o + _W_BAD] = bad
    s[o + _W_SUM] = acc
    s[o + _W_SUM + 1] = comp


@bar_njit_internal_per_constant
def _vwin_anchor(s, o):
    """Move a variance window's shift to the valid value nearest its mean and recompute the
    sums from the ring: O(n), run only when the mean has drifted far from the shift.

    Some value lies within one std of the mean, so the new shift meets the anchoring rule at
    once; being one of the values, it leaves a flat window's sums exactly 0.
    """
    if s[o + _W_VALID] == 0.0:
        return
    mean = s[o + _W_SHIFT] + (s[o + _W_SUM] + s[o + _W_SUM + 1]) / s[o + _W_VALID]
    _win_clear_sums(s, o)
    v0 = o + _W_HDR + _RING_HDR
    cap = int(s[o + _W_HDR + 1])
    shift = NAN
    for i in range(cap):  # slots not filled yet hold NaN
        x = s[v0 + i]
        if math.isfinite(x) and not (abs(x - mean) >= abs(shift - mean)):  # a NaN shift takes x
            shift = x
    s[o + _W_SHIFT] = shift
    for i in range(cap):
        x = s[v0 + i]
        if math.isfinite(x):
            d = x - shift
            _tsum_add(s, o + _W_SUM, d)
            _tsum_add(s, o + _W_SQ, d * d)


# inlined at numba-IR level: as a call of its own, the rare call to _vwin_anchor inside it made
# every bbands update about twice as slow
@bar_njit_inline
def _vwin_push(s, o, x):
    """Slide a variance window by one value (non-finite values count as missing)."""
    r = o + _W_HDR
    full = _ring_full(s, r)
    old = _ring_push(s, r, x)
    if full and _win_untrack(s, o, old):
        d = old - s[o + _W_SHIFT]
        _tsum_add(s, o + _W_SUM, -d)
        _tsum_add(s, o + _W_SQ, -(d * d))
    if _win_track(s, o, x):
        d = x - s[o + _W_SHIFT]
        _tsum_add(s, o + _W_SUM, d)
        _tsum_add(s, o + _W_SQ, d * d)
    # re-anchor when (mean - shift)^2 > R * var, that is sum^2 * (1 + R) > R * n * sq
    d = s[o + _W_SUM] + s[o + _W_SUM + 1]
    if d * d * (1.0 + _ANCHOR_RATIO) > _ANCHOR_RATIO * s[o + _W_VALID] * (s[o + _W_SQ] + s[o + _W_SQ + 1]):
        _vwin_anchor(s, o)


@bar_njit_internal_per_constant
def _win_n(s, o):
    return s[o + _W_HDR + 1]


@bar_njit_internal_per_constant
def _win_ready(s, o):
    """Window full and free of missing values."""
    return _ring_full(s, o + _W_HDR) and s[o + _W_BAD] == 0.0


@bar_njit_internal_per_constant
def _win_flat(s, o):
    """Every value in the window equals the last one."""
    return s[o + _W_RUN] >= _win_n(s, o)


@bar_njit_internal_per_constant
def _win_sum(s, o):
    """Sum of the valid values in a mean-only window (missing ones count as 0)."""
    return s[o + _W_SUM] + s[o + _W_SUM + 1]


@bar_njit_internal_per_constant
def _win_mean(s, o):
    """Mean of a ready mean-only window."""
    if _win_flat(s, o):
        return s[o + _W_LAST]
    return _win_sum(s, o) / _win_n(s, o)


@bar_njit_internal_per_constant
def _vwin_mean(s, o):
    """Mean of a ready variance window."""
    if _win_flat(s, o):
        return s[o + _W_LAST]
    return s[o + _W_SHIFT] + (s[o + _W_SUM] + s[o + _W_SUM + 1]) / _win_n(s, o)


@bar_njit_internal_per_constant
def _vwin_var(s, o, ddof):
    """Variance of a ready variance window (ddof 0: population, 1: sample)."""
    if _win_flat(s, o):
        return 0.0
    n = _win_n(s, o)
    d = s[o + _W_SUM] + s[o + _W_SUM + 1]
    m2 = (s[o + _W_SQ] + s[o + _W_SQ + 1]) - d * d / n
    return max(m2, 0.0) / (n - ddof)


# --- rolling extreme: [len, n, sign, t, head, size, last_bad] + vals[n] + idx[n] ----------------
# A monotonic deque (values decreasing from the head) of sign * x; sign = +1 gives the max,
# -1 the min. Each value is pushed and popped once: amortised O(1).
_E_HDR = 7


@bar_njit_internal_per_constant
def _ext_size(n):
    return _E_HDR + 2 * n


@bar_njit_internal_per_constant
def _ext_init(s, o, n, sign):
    s[o] = _ext_size(n)
    s[o + 1] = n
    s[o + 2] = sign
    s[o + 3] = -1.0  # index of the last pushed bar
    s[o + 4] = 0.0
    s[o + 5] = 0.0
    s[o + 6] = -1.0  # index of the last missing bar
    s[o + _E_HDR : o + _E_HDR + 2 * n] = NAN


@bar_njit_internal_per_constant
def _ext_push(s, o, x):
    """Push one value; return the extreme of the last n, NaN if short or a missing value is in."""
    n = int(s[o + 1])
    sign = s[o + 2]
    t = s[o + 3] + 1.0
    s[o + 3] = t
    head = int(s[o + 4])
    size = int(s[o + 5])
    vo = o + _E_HDR
    io = vo + n
    while size > 0 and s[io + head] <= t - n:  # expired from the window
        head = (head + 1) % n
        size -= 1
    if math.isfinite(x):
        v = sign * x
        while size > 0 and s[vo + (head + size - 1) % n] <= v:  # dominated by the newcomer
            size -= 1
        j = (head + size) % n
        s[vo + j] = v
        s[io + j] = t
        size += 1
    else:
        s[o + 6] = t
    s[o + 4] = head
    s[o + 5] = size
    if t - s[o + 6] >= n:
        return sign * s[vo + head]
    return NAN


# --- smoother (EMA / Wilder): [len, n, alpha, count, value] ------------------------------------
# During the seed phase ``value`` is the running mean m += (x - m) / count, which stays exactly
# c on a constant input c (a plain sum / n need not).
_SM_SIZE = 5


@bar_njit_internal_per_constant
def _smooth_init(s, o, n, alpha):
    s[o] = _SM_SIZE
    s[o + 1] = n
    s[o + 2] = alpha
    s[o + 3] = 0.0
    s[o + 4] = 0.0


@bar_njit_internal_per_constant
def _smooth_push(s, o, x):
    """Seed with the mean of the first n finite values, then ``v += alpha * (x - v)``.

    A non-finite ``x`` is skipped: NaN is returned and the state is left untouched.
    """
    if not math.isfinite(x):
        return NAN
    n = s[o + 1]
    count = s[o + 3]
    v = s[o + 4]
    if count < n:
        count += 1.0
        s[o + 3] = count
        v += (x - v) / count
        s[o + 4] = v
        return v if count == n else NAN
    v += s[o + 2] * (x - v)
    s[o + 4] = v
    return v


@bar_njit_internal_per_constant
def _tr_step(s, i, high, low, close):
    """True range against the previous valid close kept in ``s[i]``; NaN on the first bar."""
    prev = s[i]
    s[i] = close
    if not math.isfinite(prev):
        return NAN
    return max(high - low, abs(high - prev), abs(low - prev))


@bar_njit_internal_per_constant
def _finite3(a, b, c):
    return math.isfinite(a) and math.isfinite(b) and math.isfinite(c)


# =============================================================================================
# Moving averages
# =============================================================================================


@njit(cache=True)
def sma_init_nb(window):
    n = _as_window(window, 1)
    s = np.empty(_win_size(n))
    _win_init(s, 0, n)
    return s


@bar_njit
def sma_update_nb(state, x):
    """Simple moving average of the last ``window`` values. Warm-up: window - 1."""
    _win_push(state, 0, x)
    if _win_ready(state, 0):
        return _win_mean(state, 0)
    return NAN


@njit(cache=True)
def sma_nb(x, window):
    state = sma_init_nb(window)
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        out[i] = sma_update_nb(state, x[i])
    return out


@njit(cache=True)
def ema_init_nb(window):
    n = _as_window(window, 1)
    s = np.empty(_SM_SIZE)
    _smooth_init(s, 0, n, 2.0 / (n + 1.0))
    return s


@bar_njit
def ema_update_nb(state, x):
    """EMA, alpha = 2 / (window + 1), seeded with the SMA of the first window values.

    Warm-up: window - 1. Missing bars are skipped.
    """
    return _smooth_push(state, 0, x)


@njit(cache=True)
def ema_nb(x, window):
    state = ema_init_nb(window)
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        out[i] = ema_update_nb(state, x[i])
    return out


# WMA state: [weighted_sum, weighted_sum_comp] + window block. The weighted sum W of the last n
# values (weights 1..n, newest n) slides as W' = W - sum_old + n * x, so no re-weighting.
_WMA_W = 0
_WMA_WIN = 2


@njit(cache=True)
def wma_init_nb(window):
    n = _as_window(window, 1)
    s = np.empty(_WMA_WIN + _win_size(n))
    s[_WMA_W] = 0.0
    s[_WMA_W + 1] = 0.0
    _win_init(s, _WMA_WIN, n)
    return s


@bar_njit
def wma_update_nb(state, x):
    """Linearly weighted moving average, weights 1..window (newest heaviest).

    Warm-up: window - 1.
    """
    o = _WMA_WIN
    n = _win_n(state, o)
    full = _ring_full(state, o + _W_HDR)
    sum_old = _win_sum(state, o)
    _win_push(state, o, x)
    xv = x if math.isfinite(x) else 0.0  # a missing value weighs 0 until it leaves the window
    if full:
        _nsum_add(state, _WMA_W, -sum_old)
        _nsum_add(state, _WMA_W, n * xv)
    else:
        _nsum_add(state, _WMA_W, state[o + _W_HDR + 3] * xv)  # weight = values seen so far
    if not _win_ready(state, o):
        return NAN
    if _win_flat(state, o):
        return state[o + _W_LAST]
    return (state[_WMA_W] + state[_WMA_W + 1]) / (n * (n + 1.0) / 2.0)


@njit(cache=True)
def wma_nb(x, window):
    state = wma_init_nb(window)
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        out[i] = wma_update_nb(state, x[i])
    return out


# =============================================================================================
# Momentum
# =============================================================================================

# RSI state: [prev_close] + smoother(gains) + smoother(losses)
_RSI_GAIN = 1
_RSI_LOSS = _RSI_GAIN + _SM_SIZE


@njit(cache=True)
def rsi_init_nb(window):
    n = _as_window(window, 1)
    s = np.empty(1 + 2 * _SM_SIZE)
    s[0] = NAN
    _smooth_init(s, _RSI_GAIN, n, 1.0 / n)
    _smooth_init(s, _RSI_LOSS, n, 1.0 / n)
    return s


@bar_njit
def rsi_update_nb(state, close):
    """Wilder's RSI in [0, 100]; 50 when the window saw no change at all. Warm-up: window."""
    if not math.isfinite(close):
        return NAN
    prev = state[0]
    state[0] = close
    if not math.isfinite(prev):
        return NAN
    d = close - prev
    up = _smooth_push(state, _RSI_GAIN, max(d, 0.0))
    down = _smooth_push(state, _RSI_LOSS, max(-d, 0.0))
    if not math.isfinite(up):
        return NAN
    total = up + down
    if total == 0.0:
        return 50.0
    return 100.0 * (up / total)  # exactly 100 when nothing fell


@njit(cache=True)
def rsi_nb(close, window):
    state = rsi_init_nb(window)
    out = np.empty(close.shape[0])
    for i in range(close.shape[0]):
        out[i] = rsi_update_nb(state, close[i])
    return out


# MACD state: smoother(fast) + smoother(slow) + smoother(signal)
@njit(cache=True)
def macd_init_nb(fast, slow, signal):
    nf = _as_window(fast, 1)
    ns = _as_window(slow, 1)
    ng = _as_window(signal, 1)
    if nf >= ns:
        raise ValueError("macd: fast window must be shorter than the slow window")
    s = np.empty(3 * _SM_SIZE)
    _smooth_init(s, 0, nf, 2.0 / (nf + 1.0))
    _smooth_init(s, _SM_SIZE, ns, 2.0 / (ns + 1.0))
    _smooth_init(s, 2 * _SM_SIZE, ng, 2.0 / (ng + 1.0))
    return s


@bar_njit
def macd_update_nb(state, close):
    """(macd, signal, hist): EMA(fast) - EMA(slow), its EMA(signal), and their difference.

    Warm-up: slow - 1 for macd, slow + signal - 2 for signal and hist.
    """
    line = _smooth_push(state, 0, close) - _smooth_push(state, _SM_SIZE, close)
    sig = _smooth_push(state, 2 * _SM_SIZE, line)
    return line, sig, line - sig


@njit(cache=True)
def macd_nb(close, fast, slow, signal):
    state = macd_init_nb(fast, slow, signal)
    n = close.shape[0]
    line, sig, hist = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        line[i], sig[i], hist[i] = macd_update_nb(state, close[i])
    return line, sig, hist


# Stochastic state: max(high, k) + min(low, k) + window(%K, d)
@njit(cache=True)
def stoch_init_nb(k_window, d_window):
    nk = _as_window(k_window, 1)
    nd = _as_window(d_window, 1)
    s = np.empty(2 * _ext_size(nk) + _win_size(nd))
    _ext_init(s, 0, nk, 1.0)
    _ext_init(s, _ext_size(nk), nk, -1.0)
    _win_init(s, 2 * _ext_size(nk), nd)
    return s


@bar_njit
def stoch_update_nb(state, high, low, close):
    """(%K, %D) in [0, 100]; %K is NaN when the k_window range is 0 (high max == low min).

    Warm-up: k_window - 1 for %K, k_window + d_window - 2 for %D (SMA of %K).
    """
    if not _finite3(high, low, close):
        high = low = NAN
    o_min = _next(state, 0)
    o_d = _next(state, o_min)
    hh = _ext_push(state, 0, high)
    ll = _ext_push(state, o_min, low)
    k = NAN
    if hh > ll:  # False for NaN too
        k = 100.0 * ((close - ll) / (hh - ll))  # exactly 100 at the high
    _win_push(state, o_d, k)
    d = _win_mean(state, o_d) if _win_ready(state, o_d) else NAN
    return k, d


@njit(cache=True)
def stoch_nb(high, low, close, k_window, d_window):
    state = stoch_init_nb(k_window, d_window)
    n = close.shape[0]
    k, d = np.empty(n), np.empty(n)
    for i in range(n):
        k[i], d[i] = stoch_update_nb(state, high[i], low[i], close[i])
    return k, d


# =============================================================================================
# Volatility and bands
# =============================================================================================


# Bollinger state: [k] + window
@njit(cache=True)
def bbands_init_nb(window, k):
    n = _as_window(window, 2)
    if not (k > 0.0 and math.isfinite(k)):
        raise ValueError("bbands: k must be a finite number > 0")
    s = np.empty(1 + _win_size(n))
    s[0] = k
    _win_init(s, 1, n)
    return s


@bar_njit
def bbands_update_nb(state, close):
    """(mid, upper, lower, percent_b, bandwidth) with the population std (ddof=0).

    mid = SMA, upper/lower = mid +- k * std, percent_b = (close - lower) / (upper - lower)
    (NaN when the bands coincide), bandwidth = (upper - lower) / mid as a fraction (NaN if
    mid == 0). Warm-up: window - 1.
    """
    _vwin_push(state, 1, close)
    if not _win_ready(state, 1):
        return NAN, NAN, NAN, NAN, NAN
    mid = _vwin_mean(state, 1)
    dev = state[0] * math.sqrt(_vwin_var(state, 1, 0))
    upper = mid + dev
    lower = mid - dev
    width = upper - lower
    pb = (close - lower) / width if width > 0.0 else NAN
    bw = width / mid if mid != 0.0 else NAN
    return mid, upper, lower, pb, bw


@njit(cache=True)
def bbands_nb(close, window, k):
    state = bbands_init_nb(window, k)
    n = close.shape[0]
    mid, upper, lower, pb, bw = np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        mid[i], upper[i], lower[i], pb[i], bw[i] = bbands_update_nb(state, close[i])
    return mid, upper, lower, pb, bw


@njit(cache=True)
def zscore_init_nb(window):
    n = _as_window(window, 2)  # the std of one value is always 0
    s = np.empty(_win_size(n))
    _win_init(s, 0, n)
    return s


@bar_njit
def zscore_update_nb(state, x):
    """(x - rolling mean) / rolling population std (ddof=0); NaN when the std is 0.

    Warm-up: window - 1.
    """
    _vwin_push(state, 0, x)
    if not _win_ready(state, 0):
        return NAN
    sd = math.sqrt(_vwin_var(state, 0, 0))
    if sd == 0.0:
        return NAN
    return (x - _vwin_mean(state, 0)) / sd


@njit(cache=True)
def zscore_nb(x, window):
    state = zscore_init_nb(window)
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        out[i] = zscore_update_nb(state, x[i])
    return out


@njit(cache=True)
def true_range_init_nb():
    s = np.empty(1)
    s[0] = NAN  # previous valid close
    return s


@bar_njit
def true_range_update_nb(state, high, low, close):
    """max(high - low, |high - prev close|, |low - prev close|). Warm-up: 1 (needs a prev close)."""
    if not _finite3(high, low, close):
        return NAN
    return _tr_step(state, 0, high, low, close)


@njit(cache=True)
def true_range_nb(high, low, close):
    state = true_range_init_nb()
    out = np.empty(close.shape[0])
    for i in range(close.shape[0]):
        out[i] = true_range_update_nb(state, high[i], low[i], close[i])
    return out


# ATR state: [prev_close] + smoother(TR)
@njit(cache=True)
def atr_init_nb(window):
    n = _as_window(window, 1)
    s = np.empty(1 + _SM_SIZE)
    s[0] = NAN
    _smooth_init(s, 1, n, 1.0 / n)
    return s


@bar_njit
def atr_update_nb(state, high, low, close):
    """Wilder's average true range, in price units. Warm-up: window.

    Seed: the mean of the true ranges of bars 1..window (bar 0 has no previous close).
    """
    if not _finite3(high, low, close):
        return NAN
    return _smooth_push(state, 1, _tr_step(state, 0, high, low, close))


@njit(cache=True)
def atr_nb(high, low, close, window):
    state = atr_init_nb(window)
    out = np.empty(close.shape[0])
    for i in range(close.shape[0]):
        out[i] = atr_update_nb(state, high[i], low[i], close[i])
    return out


# Realised vol state: [sqrt(ann_factor), prev_close] + window(log returns)
@njit(cache=True)
def realized_vol_init_nb(window, ann_factor):
    n = _as_window(window, 2)
    if not (ann_factor > 0.0 and math.isfinite(ann_factor)):
        raise ValueError("realized_vol: ann_factor must be a finite number > 0")
    s = np.empty(2 + _win_size(n))
    s[0] = math.sqrt(ann_factor)
    s[1] = NAN
    _win_init(s, 2, n)
    return s


@bar_njit
def realized_vol_update_nb(state, close):
    """Sample std (ddof=1) of the last ``window`` log returns times sqrt(ann_factor).

    A fraction (0.5 = 50 % a year when ann_factor is bars per year). Warm-up: window. The
    return of bar t is NaN when close t or t-1 is missing, so one missing close blanks
    window + 1 outputs.
    """
    prev = state[1]
    ok = math.isfinite(close) and close > 0.0
    r = math.log(close / prev) if ok and math.isfinite(prev) else NAN
    state[1] = close if ok else NAN
    _vwin_push(state, 2, r)
    if not _win_ready(state, 2):
        return NAN
    return math.sqrt(_vwin_var(state, 2, 1)) * state[0]


@njit(cache=True)
def realized_vol_nb(close, window, ann_factor):
    state = realized_vol_init_nb(window, ann_factor)
    out = np.empty(close.shape[0])
    for i in range(close.shape[0]):
        out[i] = realized_vol_update_nb(state, close[i])
    return out


# =============================================================================================
# Trend
# =============================================================================================

# ADX state: [prev_high, prev_low, prev_close] + smoothers(+DM, -DM, TR, DX)
_ADX_PDM = 3
_ADX_MDM = _ADX_PDM + _SM_SIZE
_ADX_TR = _ADX_MDM + _SM_SIZE
_ADX_DX = _ADX_TR + _SM_SIZE


@njit(cache=True)
def adx_init_nb(window):
    n = _as_window(window, 1)
    s = np.empty(3 + 4 * _SM_SIZE)
    s[0:3] = NAN
    for o in (_ADX_PDM, _ADX_MDM, _ADX_TR, _ADX_DX):
        _smooth_init(s, o, n, 1.0 / n)
    return s


@bar_njit
def adx_update_nb(state, high, low, close):
    """(adx, plus_di, minus_di) in [0, 100], Wilder's directional movement system.

    +DM/-DM and TR start at bar 1 and are Wilder-smoothed (seeded with their mean over bars
    1..window); DI = 100 * smoothed DM / smoothed TR (0 when the smoothed TR is 0); DX =
    100 * |+DI - -DI| / (+DI + -DI) (0 when both are 0); ADX = Wilder smoothing of DX.
    Warm-up: window for the DIs, 2 * window - 1 for ADX.
    """
    if not _finite3(high, low, close):
        return NAN, NAN, NAN
    prev_high = state[0]
    prev_low = state[1]
    state[0] = high
    state[1] = low
    tr = _tr_step(state, 2, high, low, close)
    if not math.isfinite(prev_high):
        return NAN, NAN, NAN
    up = high - prev_high
    down = prev_low - low
    plus_dm = up if (up > down and up > 0.0) else 0.0
    minus_dm = down if (down > up and down > 0.0) else 0.0
    sp = _smooth_push(state, _ADX_PDM, plus_dm)
    sm = _smooth_push(state, _ADX_MDM, minus_dm)
    st = _smooth_push(state, _ADX_TR, tr)
    if not math.isfinite(st):
        return NAN, NAN, NAN
    plus_di = 100.0 * sp / st if st > 0.0 else 0.0
    minus_di = 100.0 * sm / st if st > 0.0 else 0.0
    di_sum = plus_di + minus_di
    dx = 100.0 * abs(plus_di - minus_di) / di_sum if di_sum > 0.0 else 0.0
    return _smooth_push(state, _ADX_DX, dx), plus_di, minus_di


@njit(cache=True)
def adx_nb(high, low, close, window):
    state = adx_init_nb(window)
    n = close.shape[0]
    adx, pdi, mdi = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        adx[i], pdi[i], mdi[i] = adx_update_nb(state, high[i], low[i], close[i])
    return adx, pdi, mdi


# Donchian state: max(high) + min(low)
@njit(cache=True)
def donchian_init_nb(window):
    n = _as_window(window, 1)
    s = np.empty(2 * _ext_size(n))
    _ext_init(s, 0, n, 1.0)
    _ext_init(s, _ext_size(n), n, -1.0)
    return s


@bar_njit
def donchian_update_nb(state, high, low):
    """(upper, lower, mid): highest high and lowest low of the last ``window`` bars *including*
    the current one, and their midpoint. Warm-up: window - 1.

    A breakout rule compares close[t] with the channel at t - 1 (it keeps the previous value).
    """
    if not (math.isfinite(high) and math.isfinite(low)):
        high = low = NAN
    upper = _ext_push(state, 0, high)
    lower = _ext_push(state, _next(state, 0), low)
    return upper, lower, 0.5 * (upper + lower)


@njit(cache=True)
def donchian_nb(high, low, window):
    state = donchian_init_nb(window)
    n = high.shape[0]
    upper, lower, mid = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        upper[i], lower[i], mid[i] = donchian_update_nb(state, high[i], low[i])
    return upper, lower, mid


# Support/resistance state: [support, resistance] + ring(high, right+1) + ring(low, right+1)
#   + max(high, left) + max(high, right) + min(low, left) + min(low, right).
# The rings delay the bars by ``right``: their oldest entry is the pivot candidate t - right,
# and the entry they evict (bar t - right - 1) feeds the left-side extremes.
@njit(cache=True)
def support_resistance_init_nb(left, right):
    nl = _as_window(left, 1)
    nr = _as_window(right, 1)
    s = np.empty(2 + 2 * _ring_size(nr + 1) + 2 * _ext_size(nl) + 2 * _ext_size(nr))
    s[0] = NAN
    s[1] = NAN
    o = 2
    _ring_init(s, o, nr + 1)
    o = _next(s, o)
    _ring_init(s, o, nr + 1)
    o = _next(s, o)
    _ext_init(s, o, nl, 1.0)
    o = _next(s, o)
    _ext_init(s, o, nr, 1.0)
    o = _next(s, o)
    _ext_init(s, o, nl, -1.0)
    o = _next(s, o)
    _ext_init(s, o, nr, -1.0)
    return s


@bar_njit_internal_per_constant
def _pivot_side(s, o_ring, o_left, x):
    """Push ``x`` (sign-adjusted side of one level); return (candidate, left extreme, right
    extreme) with NaNs while not enough bars have been seen."""
    o_right = _next(s, o_left)
    full = _ring_full(s, o_ring)
    evicted = _ring_push(s, o_ring, x)
    left = NAN
    if full:
        left = _ext_push(s, o_left, evicted)
    right = _ext_push(s, o_right, x)
    cand = _ring_oldest(s, o_ring) if _ring_full(s, o_ring) else NAN
    return cand, left, right


@bar_njit
def support_resistance_update_nb(state, high, low):
    """(support, resistance): the most recent confirmed pivot low / pivot high.

    Bar i is a pivot high if high[i] > every high of the ``left`` bars before it and >= every
    high of the ``right`` bars after it (so a flat top yields one pivot, its first bar); pivot
    lows mirror this with lows. A pivot is confirmed at bar i + right, and only then becomes the
    level: no look-ahead. NaN until the first pivot of each kind is confirmed (at bar
    left + right at the earliest).
    """
    ok = math.isfinite(high) and math.isfinite(low)
    if not ok:
        high = low = NAN
    o_rh = 2
    o_rl = _next(state, o_rh)
    o_hl = _next(state, o_rl)  # max(high, left), then max(high, right)
    o_ll = _next(state, _next(state, o_hl))  # min(low, left), then min(low, right)
    cand, left, right = _pivot_side(state, o_rh, o_hl, high)
    if cand > left and cand >= right:  # False whenever one of them is NaN
        state[1] = cand
    cand, left, right = _pivot_side(state, o_rl, o_ll, low)
    if cand < left and cand <= right:
        state[0] = cand
    if not ok:
        return NAN, NAN
    return state[0], state[1]


@njit(cache=True)
def support_resistance_nb(high, low, left, right):
    state = support_resistance_init_nb(left, right)
    n = high.shape[0]
    support, resistance = np.empty(n), np.empty(n)
    for i in range(n):
        support[i], resistance[i] = support_resistance_update_nb(state, high[i], low[i])
    return support, resistance


# =============================================================================================
# Volume
# =============================================================================================


# OBV state: [prev_close, sum, sum_comp]
@njit(cache=True)
def obv_init_nb():
    s = np.zeros(3)
    s[0] = NAN
    return s


@bar_njit
def obv_update_nb(state, close, volume):
    """On-balance volume: starts at the first valid bar's volume, then adds the volume on an
    up close, subtracts it on a down close, adds nothing on an unchanged close. Warm-up: 0.
    """
    if not (math.isfinite(close) and math.isfinite(volume)):
        return NAN
    prev = state[0]
    state[0] = close
    if not math.isfinite(prev) or close > prev:
        _nsum_add(state, 1, volume)
    elif close < prev:
        _nsum_add(state, 1, -volume)
    return state[1] + state[2]


@njit(cache=True)
def obv_nb(close, volume):
    state = obv_init_nb()
    out = np.empty(close.shape[0])
    for i in range(close.shape[0]):
        out[i] = obv_update_nb(state, close[i], volume[i])
    return out


# VWAP state: window(typical price * volume) + window(volume)
@njit(cache=True)
def vwap_init_nb(window):
    n = _as_window(window, 1)
    s = np.empty(2 * _win_size(n))
    _win_init(s, 0, n)
    _win_init(s, _win_size(n), n)
    return s


@bar_njit
def vwap_update_nb(state, high, low, close, volume):
    """Rolling VWAP of the typical price (high + low + close) / 3 over ``window`` bars.

    NaN when the window's volume sums to 0. Warm-up: window - 1.
    """
    pv = NAN
    v = NAN
    if _finite3(high, low, close) and math.isfinite(volume):
        pv = (high + low + close) / 3.0 * volume
        v = volume
    o_v = _next(state, 0)
    _win_push(state, 0, pv)
    _win_push(state, o_v, v)
    if not _win_ready(state, 0):
        return NAN
    vol = _win_sum(state, o_v)
    if vol == 0.0:
        return NAN
    return _win_sum(state, 0) / vol


@njit(cache=True)
def vwap_nb(high, low, close, volume, window):
    state = vwap_init_nb(window)
    out = np.empty(close.shape[0])
    for i in range(close.shape[0]):
        out[i] = vwap_update_nb(state, high[i], low[i], close[i], volume[i])
    return out
