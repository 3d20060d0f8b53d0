"""Technical indicators for pandas: thin wrappers over ``framework.indicators_nb``.

Each function takes prices as a ``pd.Series`` (one instrument), a ``pd.DataFrame`` (one column
per instrument), a NumPy array (1-D or 2-D, axis 0 is time) or a list, checks its parameters and
returns a Series / DataFrame on the input's index (a ``RangeIndex`` for arrays). Indicators
with several outputs return a named tuple of them, e.g. ``m, s, h = macd(close)``.

Warm-up bars are NaN; a missing price (NaN or +-inf) yields NaN at that bar and, for window
indicators, until it has left the window; recursive indicators (ema, macd, rsi, true_range,
atr, adx, obv) skip it as if the bar were absent. See ``framework.indicators_nb`` for the
details and the README's "Indicators" section for every warm-up length.

The numbers are exactly those a live runner gets by feeding the same bars one at a time through
``xxx_init_nb`` / ``xxx_update_nb``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import pandas as pd

from framework import indicators_nb as nb
from framework.metrics import bars_per_year

__all__ = [
    "ADXResult",
    "BBandsResult",
    "DonchianResult",
    "MACDResult",
    "StochResult",
    "SupportResistanceResult",
    "adx",
    "atr",
    "bbands",
    "donchian",
    "ema",
    "macd",
    "obv",
    "realized_vol",
    "rsi",
    "sma",
    "stoch",
    "support_resistance",
    "true_range",
    "vwap",
    "wma",
    "zscore",
]

ArrayLike: TypeAlias = pd.Series | pd.DataFrame | np.ndarray | Sequence[float]
Output: TypeAlias = pd.Series | pd.DataFrame


class MACDResult(NamedTuple):
    macd: Output  # EMA(fast) - EMA(slow), price units
    signal: Output  # EMA(signal) of macd
    hist: Output  # macd - signal


class BBandsResult(NamedTuple):
    mid: Output  # SMA, price units
    upper: Output  # mid + k * std
    lower: Output  # mid - k * std
    percent_b: Output  # (close - lower) / (upper - lower): 0 at lower, 1 at upper
    bandwidth: Output  # (upper - lower) / mid, a fraction


class StochResult(NamedTuple):
    k: Output  # %K, 0..100
    d: Output  # %D = SMA of %K, 0..100


class ADXResult(NamedTuple):
    adx: Output  # 0..100
    plus_di: Output  # 0..100
    minus_di: Output  # 0..100


class DonchianResult(NamedTuple):
    upper: Output  # highest high of the window including the current bar
    lower: Output  # lowest low of the window including the current bar
    mid: Output


class SupportResistanceResult(NamedTuple):
    support: Output  # last confirmed pivot low
    resistance: Output  # last confirmed pivot high


# --- parameter checks ------------------------------------------------------------------------


def _window(fn: str, name: str, value: Any, minimum: int = 1) -> int:
    """``value`` if it is an integer >= ``minimum`` (bools and floats such as 20.0 are refused)."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if not ok or value < minimum:
        raise ValueError(f"{fn}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _positive(fn: str, name: str, value: Any) -> float:
    """``value`` if it is a finite real number > 0."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if not ok or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{fn}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


# --- input handling --------------------------------------------------------------------------


def _as_2d(fn: str, name: str, x: ArrayLike) -> tuple[np.ndarray, int]:
    """(writable float64 copy of shape (bars, columns) with contiguous columns, input ndim).

    A private copy: kernels never see pandas' read-only buffers, which numba would compile a
    second time for.
    """
    try:
        if isinstance(x, (pd.Series, pd.DataFrame)):
            values = x.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            values = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{fn}: {name} must be numeric, got {type(x).__name__}") from exc
    if values.ndim not in (1, 2):
        raise ValueError(f"{fn}: {name} must be 1-D or 2-D (time on axis 0), got {values.ndim}-D")
    ndim = values.ndim
    if ndim == 1:
        values = values[:, None]
    return np.array(values, dtype=np.float64, order="F"), ndim


def _apply(
    fn: str,
    kernel: Callable[..., Any],
    inputs: dict[str, ArrayLike],
    params: tuple[Any, ...],
    fields: tuple[str, ...] | None = None,
) -> Any:
    """Run a 1-D kernel over every column of the inputs and wrap the result like the input.

    ``fields`` names the outputs of a multi-output kernel (None for a single output). The
    index (columns) come from the pandas inputs, which must agree with each other.
    """
    names = ", ".join(inputs)
    converted = [_as_2d(fn, name, x) for name, x in inputs.items()]
    shapes = {np.shape(x) for x in inputs.values()}
    if len(shapes) > 1:
        got = ", ".join(str(np.shape(x)) for x in inputs.values())
        raise ValueError(f"{fn}: {names} must have the same shape, got {got}")
    index = columns = None
    for x in inputs.values():
        if isinstance(x, (pd.Series, pd.DataFrame)):
            if index is not None and not x.index.equals(index):
                raise ValueError(f"{fn}: {names} must share one index")
            index = x.index
        if isinstance(x, pd.DataFrame):
            if columns is not None and not x.columns.equals(columns):
                raise ValueError(f"{fn}: {names} must have the same columns")
            columns = x.columns
    arrays = [values for values, _ in converted]
    n_bars, n_cols = arrays[0].shape
    index = pd.RangeIndex(n_bars) if index is None else index
    one_d = converted[0][1] == 1
    if not one_d and columns is None:
        columns = pd.RangeIndex(n_cols)

    n_out = 1 if fields is None else len(fields)
    out = np.empty((n_out, n_bars, n_cols))
    for j in range(n_cols):  # one kernel call per instrument; the kernel loops over the bars
        res = kernel(*(a[:, j] for a in arrays), *params)
        out[:, :, j] = res if fields is not None else (res,)

    def wrap(values: np.ndarray, name: str) -> Output:
        if one_d:
            return pd.Series(values[:, 0], index=index, name=name)
        return pd.DataFrame(values, index=index, columns=columns)

    if fields is None:
        return wrap(out[0], fn)
    return tuple(wrap(out[i], field) for i, field in enumerate(fields))


# --- moving averages -------------------------------------------------------------------------


def sma(x: ArrayLike, window: int) -> Output:
    """Simple moving average of the last ``window`` bars (x's units).

    Warm-up: ``window - 1`` bars. A constant input returns exactly that constant.
    """
    window = _window("sma", "window", window)
    return _apply("sma", nb.sma_nb, {"x": x}, (window,))


def ema(x: ArrayLike, window: int) -> Output:
    """Exponential moving average, alpha = 2 / (window + 1) (x's units).

    Seeded with the simple mean of the first ``window`` values, which is the first output.
    Warm-up: ``window - 1`` bars. Missing bars are skipped.
    """
    window = _window("ema", "window", window)
    return _apply("ema", nb.ema_nb, {"x": x}, (window,))


def wma(x: ArrayLike, window: int) -> Output:
    """Linearly weighted moving average: weights 1..window, the newest bar weighs ``window``.

    x's units. Warm-up: ``window - 1`` bars.
    """
    window = _window("wma", "window", window)
    return _apply("wma", nb.wma_nb, {"x": x}, (window,))


# --- momentum ---------------------------------------------------------------------------------


def rsi(close: ArrayLike, window: int = 14) -> Output:
    """Wilder's relative strength index, 0..100.

    Average gain and loss are Wilder-smoothed (alpha = 1 / window) and seeded with their mean
    over the first ``window`` changes. RSI = 100 * gain / (gain + loss): 100 on a strictly rising
    series, 0 on a strictly falling one, 50 when there was no change at all.
    Warm-up: ``window`` bars.
    """
    window = _window("rsi", "window", window)
    return _apply("rsi", nb.rsi_nb, {"close": close}, (window,))


def macd(close: ArrayLike, fast: int = 12, slow: int = 26, signal: int = 9) -> MACDResult:
    """MACD line EMA(fast) - EMA(slow) (price units), its EMA(signal), and the histogram.

    EMAs as in :func:`ema`. Warm-up: ``slow - 1`` bars for ``macd``, ``slow + signal - 2`` for
    ``signal`` and ``hist``.
    """
    fast = _window("macd", "fast", fast)
    slow = _window("macd", "slow", slow)
    signal = _window("macd", "signal", signal)
    if fast >= slow:
        raise ValueError(f"macd: fast must be smaller than slow, got fast={fast}, slow={slow}")
    return MACDResult(
        *_apply("macd", nb.macd_nb, {"close": close}, (fast, slow, signal), MACDResult._fields)
    )


def stoch(
    high: ArrayLike, low: ArrayLike, close: ArrayLike, k_window: int = 14, d_window: int = 3
) -> StochResult:
    """Stochastic oscillator, 0..100.

    %K = 100 * (close - lowest low) / (highest high - lowest low) over ``k_window`` bars
    including the current one (NaN when that range is 0); %D = SMA of %K over ``d_window``.
    Warm-up: ``k_window - 1`` bars for %K, ``k_window + d_window - 2`` for %D.
    """
    k_window = _window("stoch", "k_window", k_window)
    d_window = _window("stoch", "d_window", d_window)
    return StochResult(
        *_apply(
            "stoch",
            nb.stoch_nb,
            {"high": high, "low": low, "close": close},
            (k_window, d_window),
            StochResult._fields,
        )
    )


# --- volatility -------------------------------------------------------------------------------


def bbands(close: ArrayLike, window: int = 20, k: float = 2.0) -> BBandsResult:
    """Bollinger bands with the population standard deviation (ddof=0), as Bollinger defines.

    mid = SMA(window), upper / lower = mid +- k * std (price units), percent_b =
    (close - lower) / (upper - lower) (NaN when the bands coincide, e.g. on flat prices),
    bandwidth = (upper - lower) / mid as a fraction (0.1 = 10 %). Warm-up: ``window - 1``.
    """
    window = _window("bbands", "window", window, minimum=2)
    k = _positive("bbands", "k", k)
    return BBandsResult(
        *_apply("bbands", nb.bbands_nb, {"close": close}, (window, k), BBandsResult._fields)
    )


def zscore(x: ArrayLike, window: int) -> Output:
    """Rolling z-score (x - mean) / std over ``window`` bars including the current one.

    Population std (ddof=0, like :func:`bbands`); dimensionless. NaN when the window is flat
    (std 0). Warm-up: ``window - 1`` bars.
    """
    window = _window("zscore", "window", window, minimum=2)
    return _apply("zscore", nb.zscore_nb, {"x": x}, (window,))


def true_range(high: ArrayLike, low: ArrayLike, close: ArrayLike) -> Output:
    """max(high - low, |high - previous close|, |low - previous close|), price units.

    Warm-up: 1 bar (the first bar has no previous close).
    """
    return _apply("true_range", nb.true_range_nb, {"high": high, "low": low, "close": close}, ())


def atr(high: ArrayLike, low: ArrayLike, close: ArrayLike, window: int = 14) -> Output:
    """Wilder's average true range, price units.

    The mean of the true ranges of bars 1..window seeds it, then ``atr += (tr - atr) / window``.
    Warm-up: ``window`` bars.
    """
    window = _window("atr", "window", window)
    return _apply("atr", nb.atr_nb, {"high": high, "low": low, "close": close}, (window,))


def realized_vol(close: ArrayLike, window: int = 30, ann_factor: float | None = None) -> Output:
    """Rolling realised volatility: sample std (ddof=1) of ``window`` log returns.

    Multiplied by sqrt(ann_factor) to give an annualised fraction (0.6 = 60 %), with
    ``ann_factor`` = bars per year. By default it is derived from the bar spacing of ``close``'s
    DatetimeIndex (365-day years: 365 for daily bars, 8760 for hourly, as the backtester does);
    give it for arrays or to use another convention (252 for daily stock bars). Closes must be
    positive; others count as missing. Warm-up: ``window`` bars.
    """
    window = _window("realized_vol", "window", window, minimum=2)
    if ann_factor is None:
        index = getattr(close, "index", None)
        if not isinstance(index, pd.DatetimeIndex) or len(index) < 2:
            raise ValueError(
                "realized_vol: ann_factor (bars per year) is needed when close has no "
                "DatetimeIndex to derive it from, e.g. ann_factor=365 for daily crypto bars"
            )
        ann_factor = bars_per_year(index)
    ann_factor = _positive("realized_vol", "ann_factor", ann_factor)
    return _apply("realized_vol", nb.realized_vol_nb, {"close": close}, (window, ann_factor))


# --- trend ------------------------------------------------------------------------------------


def adx(high: ArrayLike, low: ArrayLike, close: ArrayLike, window: int = 14) -> ADXResult:
    """Wilder's average directional index and directional indicators, 0..100.

    Warm-up: ``window`` bars for ``plus_di`` / ``minus_di``, ``2 * window - 1`` for ``adx``.
    """
    window = _window("adx", "window", window)
    return ADXResult(
        *_apply(
            "adx",
            nb.adx_nb,
            {"high": high, "low": low, "close": close},
            (window,),
            ADXResult._fields,
        )
    )


def donchian(high: ArrayLike, low: ArrayLike, window: int = 20) -> DonchianResult:
    """Donchian channel over the last ``window`` bars **including** the current bar.

    upper = highest high, lower = lowest low, mid = their average (price units). Since bar t is
    inside its own channel, close[t] can never break it: a breakout rule compares close[t] with
    the channel of t - 1 (``upper.shift(1)``). Warm-up: ``window - 1`` bars.
    """
    window = _window("donchian", "window", window)
    return DonchianResult(
        *_apply(
            "donchian",
            nb.donchian_nb,
            {"high": high, "low": low},
            (window,),
            DonchianResult._fields,
        )
    )


def support_resistance(
    high: ArrayLike, low: ArrayLike, left: int = 5, right: int = 5
) -> SupportResistanceResult:
    """Support and resistance from the most recent confirmed pivot low / pivot high.

    Bar i is a pivot high when high[i] is above each of the ``left`` highs before it and at least
    each of the ``right`` highs after it (pivot lows mirror this). The pivot is known only at
    bar i + right, and that is where the level changes: no look-ahead. Price units; NaN until
    the first pivot of each kind is confirmed (bar ``left + right`` at the earliest).
    """
    left = _window("support_resistance", "left", left)
    right = _window("support_resistance", "right", right)
    return SupportResistanceResult(
        *_apply(
            "support_resistance",
            nb.support_resistance_nb,
            {"high": high, "low": low},
            (left, right),
            SupportResistanceResult._fields,
        )
    )


# --- volume -----------------------------------------------------------------------------------


def obv(close: ArrayLike, volume: ArrayLike) -> Output:
    """On-balance volume (volume units): the first bar's volume, then + volume on an up close,
    - volume on a down close, unchanged on an equal close. Warm-up: none.
    """
    return _apply("obv", nb.obv_nb, {"close": close, "volume": volume}, ())


def vwap(
    high: ArrayLike, low: ArrayLike, close: ArrayLike, volume: ArrayLike, window: int = 20
) -> Output:
    """Rolling volume-weighted average of the typical price (high + low + close) / 3.

    Over the last ``window`` bars including the current one; price units; NaN when their volume
    sums to 0. Warm-up: ``window - 1`` bars.
    """
    window = _window("vwap", "window", window)
    return _apply(
        "vwap", nb.vwap_nb, {"high": high, "low": low, "close": close, "volume": volume}, (window,)
    )
