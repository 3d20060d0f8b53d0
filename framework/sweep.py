"""Parameter sweeps: every combination of a grid, each its own backtest, in parallel.

    from framework.sweep import sweep
    table = sweep("sma_cross", "BTC_USDT-1h", {"fast": range(5, 50, 5), "slow": range(20, 200, 20)},
                  fees=0.001, sl_pct=0.05)
    table.sort_values("sharpe", ascending=False).head()

Each combination runs through the very per-bar kernel of ``Backtest`` (``framework.runner``),
numba ``prange`` over combinations, and folds its equity bar by bar into a statistics state
(``framework.metrics_nb``) instead of keeping an equity series: memory grows with bars plus
combinations, never bars x combinations. The statistics equal those of ``Backtest(...).run()``
for the same parameters, bit for bit (tested).
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from framework import metrics, metrics_nb, runner
from framework.backtest import Backtest, DataInput, strategy_class
from framework.strategy import Strategy

log = logging.getLogger(__name__)

#: the statistics columns of a sweep's table, after the parameters
METRICS = ("total_return", "cagr", "ann_volatility", "sharpe", "sortino", "calmar", "max_drawdown",
           "max_drawdown_duration", "exposure_time", "total_trades")

def _combinations(
    cls: type[Strategy], base: dict[str, Any], grid: Mapping[str, Sequence[Any]]
) -> list[Strategy]:
    """Every valid combination of the grid's values over ``base`` parameters, in grid order
    (first key slowest)."""
    spec = cls.param_spec()
    unknown = [k for k in grid if k not in spec]
    if unknown:
        raise ValueError(
            f"{cls.label()} has no parameter {', '.join(map(repr, unknown))}; "
            f"valid parameters: {', '.join(spec)}"
        )
    values = {k: list(v) if not isinstance(v, (str, bytes)) else [v] for k, v in grid.items()}
    empty = [k for k, v in values.items() if not v]
    if empty:
        raise ValueError(f"grid values for {', '.join(map(repr, empty))} are empty; give at least one")
    strategies, rejected = [], []
    for combo in itertools.product(*values.values()):
        params = dict(zip(values, combo))
        for key, value in params.items():
            spec[key].check(cls.label(), key, value)  # a value out of range is the caller's error
        try:
            strategies.append(cls(**{**base, **params}))
        except ValueError as err:  # a rule between parameters, e.g. fast >= slow: skip it
            rejected.append(str(err))
    if not strategies:
        raise ValueError(f"no valid parameter combination in the grid; e.g. {rejected[0]}")
    if rejected:
        log.info("sweep: skipped %d of %d combinations (%s)", len(rejected),
                 len(rejected) + len(strategies), rejected[0])
    return strategies


def sweep(
    strategy: Strategy | type[Strategy] | str,
    data: DataInput,
    grid: Mapping[str, Sequence[Any]],
    *,
    chunk: int = 512,
    progress: bool | None = None,
    ann_factor: float | None = None,
    risk_free: float = 0.0,
    **settings: Any,
) -> pd.DataFrame:
    """Backtest every combination of ``grid`` over one instrument; one row of statistics each.

    Args:
        strategy: a Strategy subclass or a registered name (``"sma_cross"``), or an instance
            whose parameters stand for those the grid leaves out.
        data: one instrument, as ``Backtest`` takes it (DataFrame, path or bundled name).
        grid: parameter name -> values to try. Parameters left out keep their defaults (or
            the instance's values).
            Combinations that break a rule between parameters (``fast >= slow``) are skipped;
            a value outside a parameter's range raises.
        chunk: combinations per compiled call (the progress bar advances per chunk).
        progress: show a progress bar; default only when stderr is a terminal.
        ann_factor, risk_free: bars per year and the annual risk-free rate, as in ``Backtest``.
        **settings: ``SimSettings`` shared by every combination (the strategy's
            ``sim_defaults`` first, as in ``Backtest``), and ``start``/``end`` as in
            ``Backtest``. ``trade_from`` and ``emergency_at`` are refused: a sweep's statistics
            cover every bar.

    Returns:
        A DataFrame, one row per combination in grid order: the parameters, then
        ``total_return``, ``cagr``, ``ann_volatility``, ``sharpe``, ``sortino``, ``calmar``,
        ``max_drawdown``, ``max_drawdown_duration``, ``exposure_time`` and ``total_trades``,
        defined as in ``Backtest(...).run().stats`` (fractions, not percent).
    """
    cls = type(strategy) if isinstance(strategy, Strategy) else strategy_class(strategy)
    base = dict(strategy.params) if isinstance(strategy, Strategy) else {}
    if not (isinstance(chunk, int) and chunk >= 1):
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
    for keyword in ("trade_from", "emergency_at"):
        if settings.get(keyword) is not None:
            raise ValueError(
                f"sweep does not take {keyword} (its statistics cover every bar); use start/end "
                f"to choose the bars, or Backtest(..., {keyword}=...) for one combination"
            )
    strategies = _combinations(cls, base, grid)
    # the backtest of the first combination validates the data and settings for all of them
    bt = Backtest(strategies[0], data, ann_factor=ann_factor, risk_free=risk_free, **settings)
    if len(bt.frames) != 1:
        raise ValueError(
            f"sweep runs one instrument, got {len(bt.frames)} ({', '.join(bt.frames)}); "
            "sweep each on its own"
        )
    sp = np.ascontiguousarray(np.stack([s.param_vector() for s in strategies]))
    simp = np.ascontiguousarray(np.tile(bt.settings.vector(bt.ann_factor), (len(strategies), 1)))
    prices = bt.kernel_prices()
    rf_bar = metrics.risk_free_per_bar(bt.risk_free, bt.ann_factor)
    kernels = runner.drivers(cls)
    states = np.empty((len(strategies), metrics_nb.N_STATS_STATE))
    n_fills = np.empty(len(strategies), dtype=np.int64)
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=len(strategies), unit="combination", desc=f"sweep {cls.label()}", disable=not show) as bar:
        for a in range(0, len(strategies), chunk):
            b = min(a + chunk, len(strategies))
            states[a:b], n_fills[a:b] = kernels.sweep_nb(*prices, sp[a:b], simp[a:b], rf_bar)
            bar.update(b - a)

    rows = []
    for strat, state, fills in zip(strategies, states, n_fills, strict=True):
        stats = metrics.curve_stats(state, bt.index, bt.ann_factor)
        for same_for_all in ("start", "end", "duration"):
            del stats[same_for_all]
        stats["total_trades"] = int(fills + 1) // 2  # fills alternate entry, exit; one may be open
        rows.append({**strat.params, **stats})
    return pd.DataFrame(rows)
