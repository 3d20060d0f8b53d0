"""Walk-forward analysis: optimise in-sample, trade the choice out-of-sample, window by window.

    from framework.walkforward import walk_forward
    wf = walk_forward("sma_cross", "BTC_USDT-1d", {"fast": [5, 10, 20], "slow": [30, 60]},
                      train=730, test=180, warmup=60, metric="sharpe", fees=0.001)
    wf.windows       # bounds, chosen parameters, in-sample and out-of-sample metric per window
    wf.equity        # the out-of-sample equity, window after window
    wf.efficiency    # walk-forward efficiency (Pardo)

Splits count bars of the one instrument's index. Window ``k`` tests the ``test`` bars from
``train + k * test``; it is trained on the ``train`` bars right before them (rolling) or on every
bar before them (anchored). The in-sample step is :func:`framework.sweep.sweep` over the training
bars; the out-of-sample step is ``Backtest(best, data, start=<warmup bars before the test
window>, trade_from=<test start>, end=<test end>)``, so indicators are warm when testing starts
and no order is placed before the test window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from framework import metrics
from framework.backtest import Backtest, DataInput, load_instruments, strategy_class
from framework.strategy import Strategy
from framework.sweep import METRICS, sweep

#: statistics of ``.stats`` that need the trades themselves; the stitched curve leaves them out
#: sweep columns where the lowest value wins the selection
LOWER_IS_BETTER = ("ann_volatility", "max_drawdown_duration")
_TRADE_STATS = ("win_rate", "profit_factor", "expectancy", "avg_trade_duration", "largest_win",
                "largest_loss")


@dataclass
class WalkForwardResult:
    """What :func:`walk_forward` produced.

    Attributes:
        windows: one row per window: ``train_start``, ``train_end``, ``warmup_start``,
            ``test_start``, ``test_end`` (timestamps, ends inclusive), the chosen parameters,
            ``is_<metric>`` and ``oos_<metric>`` (the selection metric in and out of sample),
            ``is_cagr``, ``oos_cagr`` and ``efficiency`` (``oos_cagr / is_cagr``, NaN when
            ``is_cagr <= 0``).
        equity: the stitched out-of-sample equity (see :func:`walk_forward`).
        efficiency: walk-forward efficiency, the annualised return of ``equity`` over the mean
            annualised in-sample return of the chosen combinations; NaN when the latter is <= 0.
        stats: statistics of ``equity`` as in ``Backtest(...).run().stats`` (curve statistics;
            ``total_trades`` summed over the windows; per-trade statistics left out).
        sweeps: the in-sample sweep table of each window.
    """

    windows: pd.DataFrame
    equity: pd.Series
    efficiency: float
    stats: dict[str, object]
    sweeps: list[pd.DataFrame] = field(repr=False)


def _check_bars(value: Any, keyword: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{keyword} must be a whole number of bars >= {minimum}, got {value!r}")
    return int(value)


def _best_row(column: pd.Series, *, lower: bool) -> int:
    """Position of the best value (first on ties, NaN/NaT last)."""
    if pd.api.types.is_timedelta64_dtype(column):
        column = column.dt.total_seconds()
    scores = column.to_numpy(dtype=float) * (-1.0 if lower else 1.0)
    return int(np.argmax(np.where(np.isnan(scores), -np.inf, scores)))


def splits(
    n_bars: int, *, train: int, test: int, warmup: int = 0, anchored: bool = False
) -> list[tuple[int, int, int, int, int]]:
    """Walk-forward windows over ``n_bars`` bars, as bar indices (ends inclusive).

    Returns:
        ``(train_start, train_end, warmup_start, test_start, test_end)`` per window. Test
        windows follow each other without overlap from bar ``train`` on; the last one may be
        shorter than ``test`` (at least 2 bars, as a backtest needs), leftover single bars are
        not tested. ``warmup_start = max(test_start - warmup, 0)``.
    """
    train = _check_bars(train, "train", 2)
    test = _check_bars(test, "test", 2)
    warmup = _check_bars(warmup, "warmup", 0)
    if n_bars < train + 2:
        raise ValueError(
            f"train={train} leaves {n_bars - train} of {n_bars} bars to test; "
            "need at least 2: shorten train or give more data"
        )
    out = []
    for test_start in range(train, n_bars - 1, test):
        test_end = min(test_start + test, n_bars) - 1
        train_start = 0 if anchored else test_start - train
        out.append((train_start, test_start - 1, max(test_start - warmup, 0), test_start, test_end))
    return out


def walk_forward(
    strategy: Strategy | type[Strategy] | str,
    data: DataInput,
    grid: Mapping[str, Sequence[Any]],
    *,
    train: int,
    test: int,
    warmup: int = 0,
    anchored: bool = False,
    metric: str = "sharpe",
    **settings: Any,
) -> WalkForwardResult:
    """Walk-forward analysis of ``strategy`` over ``grid`` on one instrument.

    Args:
        strategy, data, grid: as in :func:`framework.sweep.sweep`.
        train: bars in each training window (anchored: the first one; later ones grow).
        test: bars in each test window; test windows follow each other without overlap.
        warmup: bars before each test window that run (indicators and strategy state update)
            without placing orders, so the indicators are warm when the test window starts.
            The in-sample sweeps have no separate warm-up: they trade from their first bar.
        anchored: False: rolling training windows of ``train`` bars; True: every training
            window starts at the first bar.
        metric: the sweep column that chooses the parameters (one of
            ``framework.sweep.METRICS``): the highest wins, the lowest for ``ann_volatility``
            and ``max_drawdown_duration``; NaN ranks last, ties go to the first in grid order.
        **settings: shared by the sweeps and the backtests, as in ``Backtest`` (including
            ``ann_factor`` and ``risk_free``); ``start``, ``end`` and ``trade_from`` are
            refused: the windows choose the bars.

    Returns:
        A :class:`WalkForwardResult`. Its ``equity`` chains the windows' returns: each window's
        backtest starts flat with the initial cash; its equity from the test start on is
        divided by that cash and multiplied by the stitched equity at the end of the previous
        window (the initial cash for the first). Capital therefore carries over compounded,
        positions do not: a position open at a window's end is marked at its last close, and
        the next window starts from cash. (Scaling is exact for sizing proportional to equity;
        for fixed-size orders it is the return the window made on its own capital.)
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    for keyword in ("start", "end", "trade_from"):
        if settings.get(keyword) is not None:
            raise ValueError(f"walk_forward does not take {keyword}; train, test and warmup choose the bars")
        settings.pop(keyword, None)
    cls = type(strategy) if isinstance(strategy, Strategy) else strategy_class(strategy)
    base = dict(strategy.params) if isinstance(strategy, Strategy) else {}
    frames = load_instruments(data, policy=settings.pop("policy", "raise"),
                              calendar=settings.pop("calendar", "auto"))
    if len(frames) != 1:
        raise ValueError(f"walk_forward runs one instrument, got {len(frames)} ({', '.join(frames)})")
    name, frame = next(iter(frames.items()))
    index = frame.index

    rows, sweeps, segments, exposures = [], [], [], []
    level, n_trades, result = None, 0, None
    for train_start, train_end, warmup_start, test_start, test_end in splits(
            len(index), train=train, test=test, warmup=warmup, anchored=anchored):
        table = sweep(cls(**base) if base else cls, {name: frame}, grid, start=index[train_start],
                      end=index[train_end], **settings)
        best = _best_row(table[metric], lower=metric in LOWER_IS_BETTER)
        params = {k: table.at[best, k] for k in grid}
        params = {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}
        result = Backtest(cls(**{**base, **params}), frame, start=index[warmup_start],
                          trade_from=index[test_start], end=index[test_end], **settings).run()
        stats = result.stats
        equity = result.equity.iloc[result.trade_from:]
        level = float(equity.iloc[0]) if level is None else level
        segment = equity / equity.iloc[0] * level
        level = float(segment.iloc[-1])
        segments.append(segment)
        exposures.append(result.exposure[result.trade_from:])
        n_trades += int(stats["total_trades"])
        sweeps.append(table)
        is_cagr, oos_cagr = float(table.at[best, "cagr"]), float(stats["cagr"])
        rows.append({
            "train_start": index[train_start], "train_end": index[train_end],
            "warmup_start": index[warmup_start], "test_start": index[test_start],
            "test_end": index[test_end], **params,
            f"is_{metric}": table.at[best, metric], f"oos_{metric}": stats[metric],
            "is_cagr": is_cagr, "oos_cagr": oos_cagr,
            "efficiency": oos_cagr / is_cagr if is_cagr > 0 else math.nan,
        })

    equity = pd.concat(segments).rename("equity")
    assert result is not None  # splits() returns at least one window
    stats = metrics.performance_stats(equity, np.zeros(0, dtype=result.trade_records.dtype),
                                      np.concatenate(exposures), result.ann_factor, result.risk_free)
    for key in _TRADE_STATS:
        stats.pop(key, None)
    stats["total_trades"] = n_trades
    windows = pd.DataFrame(rows)
    mean_is = float(windows["is_cagr"].mean())
    efficiency = float(stats["cagr"]) / mean_is if mean_is > 0 else math.nan
    return WalkForwardResult(windows=windows, equity=equity, efficiency=efficiency, stats=stats,
                             sweeps=sweeps)
