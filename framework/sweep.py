"""Parameter sweeps: every combination of a grid on every instrument, each its own backtest,
in parallel (threads, or the workers of a Dask cluster).

    from framework.sweep import sweep
    table = sweep("sma_cross", ["BTC_USDT-1h", "ETH_USDT-1h"],
                  {"fast": range(5, 50, 5), "slow": range(20, 200, 20)}, fees=0.001, sl_pct=0.05)
    table.sort_values("sharpe", ascending=False).head()

Each combination runs through the very per-bar kernel of ``Backtest`` (``framework.runner``),
in blocks of ``BLOCK`` combinations advanced bar by bar, the blocks in threads (each block one
compiled call without the GIL). The
indicators a strategy declares ``shared`` (``Strategy.shared``) are computed once per distinct
parameter value by their own streaming kernel and read by ``decide_shared_nb``. Each run folds
its equity bar by bar into a statistics state
(``framework.metrics_nb``) and its fills into a trade state (``framework.trades_nb``) instead
of keeping an equity series or fills: memory grows with bars plus combinations, never bars x
combinations. The statistics equal those of ``Backtest(...).run()`` for the same parameters,
bit for bit (tested).
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numba
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from framework import metrics, metrics_nb, runner, trades_nb
from framework.backtest import Backtest, DataInput, split_aligned, strategy_class
from framework.strategy import Strategy

log = logging.getLogger(__name__)

#: the statistics columns of a sweep's table, after the instrument and the parameters
METRICS = ("total_return", "cagr", "ann_volatility", "sharpe", "sortino", "calmar", "max_drawdown",
           "max_drawdown_duration", "exposure_time", "total_trades", "win_rate", "profit_factor",
           "expectancy", "avg_trade_return")

#: a sweep's data: what ``Backtest`` takes, or a list of paths / bundled dataset names
SweepData = DataInput | Sequence["str | Path"]

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


def _instruments(data: SweepData) -> dict[str, DataInput]:
    """The sweep's instruments by name, each a source ``Backtest`` takes on its own: a mapping
    as given, a list of paths or dataset names by file stem, a (field, symbol) frame split by
    symbol, anything else one instrument."""
    if isinstance(data, pd.DataFrame) and isinstance(data.columns, pd.MultiIndex):
        return dict(split_aligned(data))
    if isinstance(data, Mapping):
        if not data:
            raise ValueError("data is an empty mapping; give at least one instrument")
        return {str(k): v for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        if not data:
            raise ValueError("data is an empty list; give at least one instrument")
        named: dict[str, DataInput] = {}
        for source in data:
            if not isinstance(source, (str, Path)):
                raise TypeError(
                    "a list of data holds paths or bundled dataset names (named by file stem); "
                    f"give DataFrames as a mapping {{instrument: frame}}, got {type(source).__name__}"
                )
            name = Path(source).stem
            if name in named:
                raise ValueError(f"data: two sources for instrument {name!r} ({named[name]!r} and "
                                 f"{source!r}); each is named by its file stem, give it once")
            named[name] = source
        return named
    return {Path(data).stem if isinstance(data, (str, Path)) else "asset": data}


#: combinations advanced together bar by bar (their states stay in the core's cache)
BLOCK = 64


class _Job(NamedTuple):
    """One instrument's part of a sweep: its backtest of the first combination (data and
    settings checked), the compiled drivers' price arguments (with the shared indicators'
    values, see ``_shared_values``) and the per-row settings."""
    name: str
    bt: Backtest
    prices: tuple[np.ndarray, ...]
    simp: np.ndarray
    rf_bar: float


def _shared_columns(cls: type[Strategy], strategies: list[Strategy]) -> tuple[list[tuple[int, Any]], np.ndarray]:
    """The distinct (shared indicator, parameter value) pairs of the combinations, and each
    combination's column among them per shared indicator: (combinations, len(shared)) int64."""
    distinct: dict[tuple[int, Any], int] = {}
    idx = np.empty((len(strategies), len(cls.shared)), dtype=np.int64)
    for r, strat in enumerate(strategies):
        for i, item in enumerate(cls.shared):
            idx[r, i] = distinct.setdefault((i, strat.params[item.param]), len(distinct))
    return list(distinct), idx


def _shared_values(cls: type[Strategy], columns: list[tuple[int, Any]], prices: list[np.ndarray]) -> np.ndarray:
    """(bars, columns) values of the shared indicators over one instrument's (bars, 1) prices,
    each distinct one computed once by its array kernel (the loop of the streaming update)."""
    fields = dict(zip(("open", "high", "low", "close", "volume"), prices))
    ind = np.empty((prices[0].shape[0], len(columns)))
    for col, (i, value) in enumerate(columns):
        item = cls.shared[i]
        ind[:, col] = item.kernel(np.ascontiguousarray(fields[item.field][:, 0]), value)
    return ind


def _sweep_chunk(strategy_cls: type[Strategy], prices: tuple[np.ndarray, ...], sp: np.ndarray,
                 simp: np.ndarray, rf_bar: float, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Statistics and trade states of the rows ``sp``/``simp`` over ``prices`` (the shared
    indicators' values last; rows read their columns ``idx``), on a Dask worker too: blocks of
    ``BLOCK`` rows in numba's number of threads (``numba.set_num_threads``), each a compiled
    call without the GIL. The drivers load from the kernel cache, or compile once per process."""
    block_nb = runner.drivers(strategy_cls).sweep_block_nb
    n = len(sp)
    stats = np.empty((n, metrics_nb.N_STATS_STATE))
    trades = np.zeros((n, trades_nb.N_TRADE_STATE))

    def run(a: int) -> None:
        b = min(a + BLOCK, n)
        block_nb(*prices[:-1], sp[a:b], simp[a:b], rf_bar, prices[-1], idx[a:b], stats[a:b], trades[a:b])

    starts = range(0, n, BLOCK)
    threads = min(numba.get_num_threads(), len(starts))
    if threads <= 1:
        for a in starts:
            run(a)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, starts))  # list: an error in a block is raised here
    return stats, trades


def _check_client(client: Any) -> Any:
    if client is None:
        return None
    if not all(hasattr(client, attr) for attr in ("scatter", "submit", "gather")):
        raise TypeError(f"client must be a distributed.Client (or None to run here), got "
                        f"{type(client).__module__}.{type(client).__qualname__}")
    return client


def sweep(
    strategy: Strategy | type[Strategy] | str,
    data: SweepData,
    grid: Mapping[str, Sequence[Any]],
    *,
    chunk: int = 512,
    progress: bool | None = None,
    client: Any = None,
    ann_factor: float | None = None,
    risk_free: float = 0.0,
    **settings: Any,
) -> pd.DataFrame:
    """Backtest every combination of ``grid`` on every instrument; one row of statistics each.

    Args:
        strategy: a Strategy subclass or a registered name (``"sma_cross"``), or an instance
            whose parameters stand for those the grid leaves out.
        data: the instruments, each swept on its own (its own bars: they need not share an
            index): one source as ``Backtest`` takes it (DataFrame, path or bundled name), a
            mapping ``{instrument: source}``, a list of paths or bundled names (named by file
            stem), or the (field, symbol) frame of ``framework.data.align_ohlcv``.
        grid: parameter name -> values to try. Parameters left out keep their defaults (or
            the instance's values).
            Combinations that break a rule between parameters (``fast >= slow``) are skipped;
            a value outside a parameter's range raises.
        chunk: combinations per compiled call (the progress bar advances per chunk; on a Dask
            cluster, per task).
        progress: show a progress bar; default only when stderr is a terminal.
        client: a ``distributed.Client``: the chunks run as tasks on its workers (each
            instrument's prices are scattered to every worker once); the table is equal to the
            local one, bit for bit. None runs here, in threads.
        ann_factor, risk_free: bars per year and the annual risk-free rate, as in ``Backtest``
            (``ann_factor`` None: from each instrument's bar spacing).
        **settings: ``SimSettings`` shared by every combination (the strategy's
            ``sim_defaults`` first, as in ``Backtest``), and ``start``/``end``, ``policy``
            and ``calendar`` as in ``Backtest``. ``trade_from`` and ``emergency_at`` are
            refused: a sweep's statistics cover every bar.

    Returns:
        A DataFrame, one row per instrument and combination (instruments in the given order,
        combinations in grid order): ``instrument``, the parameters, then ``total_return``,
        ``cagr``, ``ann_volatility``, ``sharpe``, ``sortino``, ``calmar``, ``max_drawdown``,
        ``max_drawdown_duration``, ``exposure_time``, ``total_trades``, ``win_rate``,
        ``profit_factor`` and ``expectancy``, defined as in ``Backtest(...).run().stats``
        (fractions, not percent; a position open at the end is a trade valued at the last
        close, as there), and ``avg_trade_return``, the mean of the trades' ``return``.
    """
    cls = type(strategy) if isinstance(strategy, Strategy) else strategy_class(strategy)
    base = dict(strategy.params) if isinstance(strategy, Strategy) else {}
    if cls.driver_class() is not cls:
        raise TypeError(f"sweep runs numba strategies; {cls.__name__} is vectorised (its signals are "
                        "computed in pandas per combination): run Backtest for each combination")
    if isinstance(chunk, bool) or not (isinstance(chunk, int) and chunk >= 1):
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
    client = _check_client(client)
    for keyword in ("trade_from", "emergency_at"):
        if settings.get(keyword) is not None:
            raise ValueError(
                f"sweep does not take {keyword} (its statistics cover every bar); use start/end "
                f"to choose the bars, or Backtest(..., {keyword}=...) for one combination"
            )
    strategies = _combinations(cls, base, grid)
    sp = np.ascontiguousarray(np.stack([s.param_vector() for s in strategies]))
    columns, idx = _shared_columns(cls, strategies)
    jobs = []
    for name, source in _instruments(data).items():
        # the backtest of the first combination validates the data and settings for all of them
        bt = Backtest(strategies[0], {name: source}, ann_factor=ann_factor, risk_free=risk_free,
                      **settings)
        simp = np.ascontiguousarray(np.tile(bt.settings.vector(bt.ann_factor), (len(strategies), 1)))
        prices = bt.kernel_prices()
        jobs.append(_Job(name, bt, (*prices, _shared_values(cls, columns, prices)), simp,
                         metrics.risk_free_per_bar(bt.risk_free, bt.ann_factor)))
    n = len(strategies)
    states = np.empty((len(jobs), n, metrics_nb.N_STATS_STATE))
    trades = np.empty((len(jobs), n, trades_nb.N_TRADE_STATE))
    parts = [(k, a, min(a + chunk, n)) for k in range(len(jobs)) for a in range(0, n, chunk)]
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=n * len(jobs), unit="combination", desc=f"sweep {cls.label()}",
              disable=not show) as bar:
        if client is None:
            for k, a, b in parts:
                job = jobs[k]
                states[k, a:b], trades[k, a:b] = _sweep_chunk(cls, job.prices, sp[a:b], job.simp[a:b],
                                                              job.rf_bar, idx[a:b])
                bar.update(b - a)
        else:
            from distributed import as_completed

            # once per instrument, to every worker: a task then ships only its chunk's rows
            prices = [client.scatter([job.prices], broadcast=True)[0] for job in jobs]
            futures = {
                client.submit(_sweep_chunk, cls, prices[k], sp[a:b], jobs[k].simp[a:b],
                              jobs[k].rf_bar, idx[a:b], pure=False): (k, a, b)
                for k, a, b in parts
            }
            for future in as_completed(futures):
                k, a, b = futures[future]
                states[k, a:b], trades[k, a:b] = future.result()
                bar.update(b - a)

    rows = []
    for k, job in enumerate(jobs):
        for strat, state, tstate in zip(strategies, states[k], trades[k], strict=True):
            stats = metrics.curve_stats(state, job.bt.index, job.bt.ann_factor)
            for same_for_all in ("start", "end", "duration"):
                del stats[same_for_all]
            res = trades_nb.trade_finalize_nb(tstate)
            stats["total_trades"] = int(res[trades_nb.TR_TRADES])
            stats["win_rate"] = float(res[trades_nb.TR_WIN_RATE])
            stats["profit_factor"] = float(res[trades_nb.TR_PROFIT_FACTOR])
            stats["expectancy"] = float(res[trades_nb.TR_EXPECTANCY])
            stats["avg_trade_return"] = float(res[trades_nb.TR_AVG_RETURN])
            rows.append({"instrument": job.name, **strat.params, **stats})
    return pd.DataFrame(rows)
