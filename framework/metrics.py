"""Performance metrics of an equity curve and its trades.

Units and conventions (every number in a stats dict follows them):

- Returns, drawdowns, volatility, win rate and exposure are **fractions** (0.05 = 5 %), never
  percent; only ``stats_table`` renders them as percent.
- Per-bar returns are simple returns of equity, ``r_t = equity_t / equity_{t-1} - 1``.
- ``ann_factor`` is bars per year (see ``bars_per_year``); a year is 365 days because crypto
  trades every day.
- ``max_drawdown`` is reported **negative** (e.g. -0.25 for a 25 % fall), the same sign as the
  ``drawdown`` series.
- Cash amounts (``expectancy``, ``largest_win``, ``largest_loss``) are in the equity's currency.
- A ratio whose denominator is zero is +inf or -inf by the sign of its numerator and NaN when the
  numerator is zero too (Sortino, Calmar, profit factor). Sharpe is NaN at zero volatility.

The arithmetic lives in ``framework.metrics_nb`` (streaming numba kernels shared with sweeps and
the live runner); this module maps bars onto timestamps and adds the trade statistics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from framework import metrics_nb as nb
from framework import trades_nb
from framework.enums import trade_dt

YEAR = pd.Timedelta(days=365)

# Stats keys in report order, with their table label and display kind.
STATS_FIELDS: dict[str, tuple[str, str]] = {
    "start": ("Start", "time"),
    "end": ("End", "time"),
    "duration": ("Duration", "timedelta"),
    "total_return": ("Total return", "pct"),
    "cagr": ("CAGR", "pct"),
    "ann_volatility": ("Volatility (ann.)", "pct"),
    "sharpe": ("Sharpe ratio", "ratio"),
    "sortino": ("Sortino ratio", "ratio"),
    "calmar": ("Calmar ratio", "ratio"),
    "max_drawdown": ("Max drawdown", "pct"),
    "max_drawdown_duration": ("Max drawdown duration", "timedelta"),
    "win_rate": ("Win rate", "pct"),
    "profit_factor": ("Profit factor", "ratio"),
    "expectancy": ("Expectancy", "cash"),
    "total_trades": ("Trades", "count"),
    "avg_trade_duration": ("Avg trade duration", "timedelta"),
    "largest_win": ("Largest win", "cash"),
    "largest_loss": ("Largest loss", "cash"),
    "exposure_time": ("Exposure time", "pct"),
    # against the benchmark (``relative_stats``): shown in the strategy's column
    "alpha": ("Alpha (ann.)", "pct"),
    "beta": ("Beta", "ratio"),
    "correlation": ("Correlation", "ratio"),
    "tracking_error": ("Tracking error (ann.)", "pct"),
    "information_ratio": ("Information ratio", "ratio"),
    "up_capture": ("Up capture", "ratio"),
    "down_capture": ("Down capture", "ratio"),
}
#: the keys of ``relative_stats`` that ``stats_table`` shows
RELATIVE_KEYS = ("alpha", "beta", "correlation", "tracking_error", "information_ratio",
                 "up_capture", "down_capture")


def bars_per_year(index: pd.DatetimeIndex) -> float:
    """Bars per 365-day year implied by the median spacing of ``index``.

    Daily bars give 365.0, hourly bars 8760.0. The median makes a few gaps harmless. For markets
    that close (stocks, forex) this counts the closed hours as if they had bars, so it overstates
    the bars actually traded per year (e.g. 365 instead of ~252 for daily stock bars); pass your
    own factor (``Backtest(..., ann_factor=252)``, ``performance_stats``) if that matters.

    Raises:
        TypeError: ``index`` is not a DatetimeIndex.
        ValueError: fewer than 2 bars, or the median spacing is not positive (unsorted index).
    """
    if not isinstance(index, pd.DatetimeIndex):
        raise TypeError(f"bars_per_year needs a pandas DatetimeIndex, got {type(index).__name__}")
    if len(index) < 2:
        raise ValueError(
            f"bars_per_year needs at least 2 bars to measure the bar spacing, got {len(index)}"
        )
    if isinstance(index.freq, pd.offsets.Tick):
        spacing = pd.Timedelta(index.freq)  # a fixed frequency: every spacing is this one
    else:
        spacing = pd.Timedelta(np.median(np.diff(index.asi8)), unit=index.unit)
    if spacing <= pd.Timedelta(0):
        raise ValueError(
            f"the index's median bar spacing is {spacing}; it must be positive "
            "(sort the index in increasing time order)"
        )
    return YEAR / spacing


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Drawdown at every bar: ``equity / running peak - 1`` as a fraction, always <= 0."""
    equity = np.asarray(equity, dtype=np.float64)
    return equity / np.maximum.accumulate(equity) - 1.0


def performance_stats(
    equity: pd.Series,
    trades: np.ndarray,
    exposure: np.ndarray,
    ann_factor: float,
    risk_free: float = 0.0,
) -> dict[str, object]:
    """Performance statistics of one equity curve and its trades.

    Args:
        equity: equity in cash at each bar's close, indexed by a DatetimeIndex in increasing
            order; at least 2 bars, first value > 0.
        trades: ``trade_dt`` records belonging to this curve (all of them are counted, including
            a trade still open at the end, booked at the last close).
        exposure: bool per bar, True when a position is open at the bar's close.
        ann_factor: bars per year (``bars_per_year(equity.index)`` for 24/7 markets).
        risk_free: annual risk-free rate as a fraction; converted per bar geometrically,
            ``rf_bar = (1 + risk_free) ** (1 / ann_factor) - 1``.

    Returns:
        A dict with, in this order:

        - ``start``, ``end`` (Timestamp), ``duration`` (Timedelta, end - start).
        - ``total_return``: ``equity[-1] / equity[0] - 1``.
        - ``cagr``: ``(equity[-1] / equity[0]) ** (1 / years) - 1`` with ``years`` the calendar
          span ``(end - start) / 365 days``; -1.0 if the final equity is <= 0.
        - ``ann_volatility``: ``std(r, ddof=1) * sqrt(ann_factor)``.
        - ``sharpe``: ``mean(r - rf_bar) / std(r, ddof=1) * sqrt(ann_factor)``; NaN when the
          standard deviation is 0 (flat equity) or there are fewer than 2 returns.
        - ``sortino``: ``mean(r - rf_bar) / sqrt(mean(min(r - rf_bar, 0) ** 2)) *
          sqrt(ann_factor)`` (the mean of squares runs over all returns, not only the negative
          ones); +inf when no return falls below ``rf_bar`` and the mean is positive.
        - ``calmar``: ``cagr / |max_drawdown|``; +inf for a rising curve without drawdown.
        - ``max_drawdown``: most negative ``equity / running peak - 1`` (fraction, <= 0).
        - ``max_drawdown_duration`` (Timedelta): the longest time under water, from the peak to
          the first bar back at or above it, or to the last bar if it never recovers; the
          longest is chosen in bars. Timedelta(0) without drawdown. (backtesting.py counts the
          same way; vectorbt's drawdown ``duration`` starts one bar after the peak.)
        - ``win_rate``: share of trades with pnl > 0 (NaN without trades).
        - ``profit_factor``: gross profit / gross loss (sum of pnl > 0 over |sum of pnl < 0|);
          NaN without trades, +inf with profits and no losing trade.
        - ``expectancy``: mean pnl per trade (cash; NaN without trades).
        - ``total_trades`` (int).
        - ``avg_trade_duration`` (Timedelta): mean of ``index[exit_bar] - index[entry_bar]``;
          NaT without trades.
        - ``largest_win`` / ``largest_loss``: largest positive / most negative pnl (cash); NaN
          when there is no winning / losing trade.
        - ``exposure_time``: fraction of bars with a position open at the close.

    Raises:
        TypeError / ValueError: naming the argument that does not fit.
    """
    index, values = _check_equity(equity)
    exposure = _check_exposure(exposure, len(values))
    trades = _check_trades(trades, len(values))
    if not (math.isfinite(ann_factor) and ann_factor > 0):
        raise ValueError(f"ann_factor must be a positive number of bars per year, got {ann_factor}")
    if not (math.isfinite(risk_free) and risk_free > -1):
        raise ValueError(f"risk_free must be an annual rate (fraction) above -1, got {risk_free}")

    stats = curve_stats(nb.stats_state_1d_nb(values, exposure, risk_free_per_bar(risk_free, ann_factor)),
                        index, ann_factor)
    exposure_time = stats.pop("exposure_time")
    stats.update(trade_stats(trades, index))
    stats["exposure_time"] = exposure_time  # last, as in the table
    return stats


def risk_free_per_bar(risk_free: float, ann_factor: float) -> float:
    """The per-bar rate compounding to the annual ``risk_free`` over ``ann_factor`` bars:
    ``(1 + risk_free) ** (1 / ann_factor) - 1`` (what Sharpe and Sortino subtract per bar)."""
    return (1.0 + risk_free) ** (1.0 / ann_factor) - 1.0


def curve_stats(state: np.ndarray, index: pd.DatetimeIndex, ann_factor: float) -> dict[str, object]:
    """The equity-curve part of ``performance_stats`` from a streaming statistics state
    (``framework.metrics_nb``) over the bars of ``index``: ``start`` ... ``max_drawdown_duration``
    and ``exposure_time``, defined there. A sweep folds each combination into such a state."""
    years = (index[-1] - index[0]) / YEAR
    res = nb.stats_finalize_nb(state, float(ann_factor), years)
    dd_start = int(state[nb.S_DD_START_BAR])
    dd_end = int(state[nb.S_DD_END_BAR])
    return {
        "start": index[0],
        "end": index[-1],
        "duration": index[-1] - index[0],
        "total_return": float(res[nb.R_TOTAL_RETURN]),
        "cagr": float(res[nb.R_CAGR]),
        "ann_volatility": float(res[nb.R_ANN_VOL]),
        "sharpe": float(res[nb.R_SHARPE]),
        "sortino": float(res[nb.R_SORTINO]),
        "calmar": float(res[nb.R_CALMAR]),
        "max_drawdown": float(res[nb.R_MAX_DD]),
        "max_drawdown_duration": index[dd_end] - index[dd_start],
        "exposure_time": float(res[nb.R_EXPOSURE]),
    }


def trade_stats(trades: np.ndarray, index: pd.DatetimeIndex) -> dict[str, object]:
    """Trade statistics of ``trade_dt`` records whose bars index into ``index``.

    Keys: ``win_rate``, ``profit_factor``, ``expectancy``, ``total_trades``,
    ``avg_trade_duration``, ``largest_win``, ``largest_loss`` (definitions in
    ``performance_stats``).
    """
    # contiguous copies of the record fields: one compiled specialisation of the kernel below
    pnl = np.ascontiguousarray(trades["pnl"], dtype=np.float64)
    n = len(pnl)
    if n == 0:
        return {
            "win_rate": math.nan,
            "profit_factor": math.nan,
            "expectancy": math.nan,
            "total_trades": 0,
            "avg_trade_duration": pd.NaT,
            "largest_win": math.nan,
            "largest_loss": math.nan,
        }
    wins = pnl[pnl > 0]
    losses = pnl[pnl < 0]
    durations = index[trades["exit_bar"]] - index[trades["entry_bar"]]
    # summed in trade order by the fold a sweep uses, so its table equals these to the bit
    res = trades_nb.trade_finalize_nb(trades_nb.trade_totals_1d_nb(
        pnl, np.ascontiguousarray(trades["ret"], dtype=np.float64)))
    return {
        "win_rate": float(res[trades_nb.TR_WIN_RATE]),
        "profit_factor": float(res[trades_nb.TR_PROFIT_FACTOR]),
        "expectancy": float(res[trades_nb.TR_EXPECTANCY]),
        "total_trades": n,
        "avg_trade_duration": durations.mean(),
        "largest_win": float(wins.max()) if len(wins) else math.nan,
        "largest_loss": float(losses.min()) if len(losses) else math.nan,
    }


def relative_stats(strategy: np.ndarray, benchmark: np.ndarray, ann_factor: float,
                   risk_free: float = 0.0) -> dict[str, float]:
    """Statistics of per-bar strategy returns against benchmark returns of the same bars.

    ``alpha``: the intercept of the least-squares regression of excess strategy on excess
    benchmark returns (per bar, ``rf_bar = risk_free_per_bar(risk_free, ann_factor)``) times
    ``ann_factor`` (annual, arithmetic; fraction). ``beta``: its slope, ``cov(s, b) / var(b)``.
    ``correlation``: Pearson's. ``tracking_error``: ``std(s - b, ddof=1) * sqrt(ann_factor)``.
    ``information_ratio``: ``mean(s - b) / std(s - b, ddof=1) * sqrt(ann_factor)``.
    ``up_capture`` / ``down_capture``: over the bars where the benchmark rose / fell, the
    strategy's geometric mean return over the benchmark's, ``(prod(1 + s) ** (1 / n) - 1) /
    (prod(1 + b) ** (1 / n) - 1)`` (Morningstar's definition; NaN without such bars).
    ``observations``: bars compared. Zero denominators follow the module's ratio rule.
    """
    s = np.asarray(strategy, dtype=np.float64)
    b = np.asarray(benchmark, dtype=np.float64)
    rf_bar = risk_free_per_bar(risk_free, ann_factor)
    es, eb = s - rf_bar, b - rf_bar
    cov = np.cov(es, eb, ddof=1)
    beta = float(nb.safe_ratio_nb(cov[0, 1], cov[1, 1]))
    active = s - b
    te_bar = active.std(ddof=1)
    return {
        "alpha": float((es.mean() - beta * eb.mean()) * ann_factor),
        "beta": beta,
        "correlation": float(nb.safe_ratio_nb(cov[0, 1], math.sqrt(cov[0, 0] * cov[1, 1]))),
        "tracking_error": float(te_bar * math.sqrt(ann_factor)),
        "information_ratio": float(nb.safe_ratio_nb(active.mean(), te_bar)) * math.sqrt(ann_factor),
        "up_capture": _capture(s, b, b > 0),
        "down_capture": _capture(s, b, b < 0),
        "observations": len(s),
    }


def _capture(s: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Ratio of geometric mean returns of ``s`` and ``b`` over the bars in ``mask``."""
    n = int(mask.sum())
    if n == 0:
        return math.nan
    s_geo = np.exp(np.log1p(s[mask]).sum() / n) - 1.0 if (s[mask] > -1).all() else -1.0
    b_geo = np.exp(np.log1p(b[mask]).sum() / n) - 1.0
    return float(s_geo / b_geo)


def stats_frame(
    strategy: Mapping[str, object],
    benchmark: Mapping[str, object],
    names: Sequence[str] = ("Strategy", "Buy & Hold"),
) -> pd.DataFrame:
    """The two stats dicts side by side, raw values, one row per key (object dtype)."""
    if len(names) != 2:
        raise ValueError(f"names must hold 2 column names (strategy, benchmark), got {names!r}")
    keys = list(strategy) + [k for k in benchmark if k not in strategy]
    return pd.DataFrame(
        {name: [d.get(k, None) for k in keys] for name, d in zip(names, (strategy, benchmark))},
        index=pd.Index(keys, name="metric"),
        dtype=object,
    )


def stats_table(
    strategy: Mapping[str, object],
    benchmark: Mapping[str, object],
    names: Sequence[str] = ("Strategy", "Buy & Hold"),
) -> str:
    """An aligned plain-text table of two stats dicts side by side.

    Fractions show as percent with 2 decimals, ratios with 2 decimals, cash with thousands
    separators, durations as ``12d 04:00``; NaN shows as ``n/a``, a missing key as blank.
    """
    frame = stats_frame(strategy, benchmark, names)
    rows = [("", *names)]
    for key, values in frame.iterrows():
        label, kind = STATS_FIELDS.get(key, (str(key), "auto"))
        rows.append((label, *(_format_value(v, kind) for v in values)))
    label_w = max(len(r[0]) for r in rows)
    col_w = [max(len(r[i]) for r in rows) for i in (1, 2)]
    lines = [f"{r[0]:<{label_w}}  {r[1]:>{col_w[0]}}  {r[2]:>{col_w[1]}}" for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


# --- helpers ----------------------------------------------------------------------------------


def _check_equity(equity: pd.Series) -> tuple[pd.DatetimeIndex, np.ndarray]:
    if not isinstance(equity, pd.Series) or not isinstance(equity.index, pd.DatetimeIndex):
        raise TypeError("equity must be a pandas Series indexed by a DatetimeIndex")
    if len(equity) < 2:
        raise ValueError(f"equity needs at least 2 bars to compute returns, got {len(equity)}")
    if not equity.index.is_monotonic_increasing:
        raise ValueError("equity's index must be sorted in increasing time order")
    values = equity.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("equity contains NaN or inf; pass the equity at every bar")
    if values[0] <= 0:
        raise ValueError(f"equity must start positive (it is the base of returns), got {values[0]}")
    return equity.index, values


def _check_exposure(exposure: np.ndarray, n_bars: int) -> np.ndarray:
    exposure = np.asarray(exposure)
    if exposure.shape != (n_bars,):
        raise ValueError(
            f"exposure must be a 1-D bool array with one value per equity bar ({n_bars}), "
            f"got shape {exposure.shape}"
        )
    return exposure.astype(np.bool_)


def _check_trades(trades: np.ndarray, n_bars: int) -> np.ndarray:
    if not isinstance(trades, np.ndarray) or trades.dtype != trade_dt:
        raise TypeError("trades must be a NumPy array of framework.enums.trade_dt records")
    for field in ("entry_bar", "exit_bar"):
        bad = (trades[field] < 0) | (trades[field] >= n_bars)
        if bad.any():
            raise ValueError(
                f"trade {field} {trades[field][bad][0]} is outside the equity's bars "
                f"0..{n_bars - 1}"
            )
    return trades


def _format_value(value: object, kind: str) -> str:
    if value is None:
        return ""
    if value is pd.NaT:
        return "n/a"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, pd.Timedelta):
        return _format_timedelta(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{value:,d}"
    x = float(value)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if kind == "pct":
        return f"{x * 100:,.2f}%"
    return f"{x:,.2f}"


def _format_timedelta(td: pd.Timedelta) -> str:
    """``12d 04:00`` (days, hours:minutes), ``12d`` for whole days, seconds only when non-zero."""
    total_s = round(td.total_seconds())
    sign = "-" if total_s < 0 else ""
    days, rem = divmod(abs(total_s), 86400)
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    clock = f"{hours:02d}:{minutes:02d}" + (f":{seconds:02d}" if seconds else "")
    if not days:
        return sign + clock
    return f"{sign}{days}d" if clock == "00:00" else f"{sign}{days}d {clock}"
