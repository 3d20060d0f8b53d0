"""The vectorised backtester: ``Backtest(strategy, data, **settings).run()``.

One compiled loop (``framework.runner``) walks every bar of every column through the strategy's
``decide_nb`` and the simulator's ``fill_nb`` / ``order_nb``; this module prepares the arrays and
turns the records into pandas objects and statistics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from framework import enums, metrics, orders, runner, sim_nb, trades_nb
from framework.data import OHLCV_COLUMNS, Calendar, Policy, load_ohlcv, validate_ohlcv
from framework.settings import SimSettings
from framework.strategy import Strategy

DataInput = str | Path | pd.DataFrame | Mapping[str, "str | Path | pd.DataFrame"]


def strategy_class(strategy: type[Strategy] | str) -> type[Strategy]:
    """A Strategy subclass as given, or the bundled one registered under a name."""
    if isinstance(strategy, str):
        from strategies import get_strategy

        return get_strategy(strategy)
    if isinstance(strategy, type) and issubclass(strategy, Strategy):
        return strategy
    raise TypeError(
        f"strategy must be a Strategy instance, a Strategy subclass or a registered name, got {strategy!r}"
    )


def _resolve_strategy(strategy: Strategy | type[Strategy] | str) -> Strategy:
    """The instance as given, else the class (or registered name) with default parameters."""
    return strategy if isinstance(strategy, Strategy) else strategy_class(strategy)()


_DATA_ACCEPTS = ("an OHLCV DataFrame (open, high, low, close columns and a DatetimeIndex or a "
                 "timestamp column), a path to a .csv/.parquet file, a bundled dataset name "
                 "such as 'BTC_USDT-1d', a mapping {instrument: one of those}, or the "
                 "(field, symbol) column frame of framework.data.align_ohlcv")


def _load_one(source: str | Path | pd.DataFrame, what: str, **load_kwargs: Any) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return validate_ohlcv(source, **load_kwargs)[0]
    if isinstance(source, (str, Path)):
        return load_ohlcv(source, **load_kwargs)
    hint = (" (a bare Series or array has no column names and no times: build a DataFrame "
            "with open, high, low and close columns on a DatetimeIndex)"
            if isinstance(source, (pd.Series, np.ndarray)) else "")
    raise TypeError(f"{what} must be {_DATA_ACCEPTS}; got {_type_name(source)}{hint}")


def _type_name(value: Any) -> str:
    return "None" if value is None else f"a {type(value).__module__}.{type(value).__qualname__}"


def load_instruments(data: DataInput, *, policy: Policy = "raise",
                     calendar: Calendar = "auto") -> dict[str, pd.DataFrame]:
    """Validated OHLCV frames by instrument name, all on one shared index.

    ``policy`` and ``calendar`` go to :func:`framework.data.validate_ohlcv` for every instrument.
    """
    kw = {"policy": policy, "calendar": calendar}
    if isinstance(data, pd.DataFrame) and isinstance(data.columns, pd.MultiIndex):
        data = split_aligned(data)
    if isinstance(data, Mapping):
        if not data:
            raise ValueError("data is an empty mapping; give at least one instrument")
        frames = {str(name): _load_one(src, f"data[{name!r}]", **kw) for name, src in data.items()}
    else:
        name = Path(data).stem if isinstance(data, (str, Path)) else "asset"
        frames = {name: _load_one(data, "data", **kw)}
    first_name, first = next(iter(frames.items()))
    for name, frame in frames.items():
        if not frame.index.equals(first.index):
            raise ValueError(
                f"instruments {first_name!r} and {name!r} have different timestamps; "
                "align them on one index first (e.g. an inner join of their indexes)"
            )
    return frames


def split_aligned(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One OHLCV frame per symbol from a frame with two-level columns, ``(field, symbol)`` as
    :func:`framework.data.align_ohlcv` returns it, or ``(symbol, field)``."""
    if frame.columns.nlevels != 2:
        raise ValueError(
            f"data with MultiIndex columns must have 2 levels, (field, symbol) as "
            f"framework.data.align_ohlcv returns, got {frame.columns.nlevels}"
        )
    level = next((i for i in (0, 1) if set(frame.columns.get_level_values(i)) <= set(OHLCV_COLUMNS)), None)
    if level is None:
        raise ValueError(
            "data with MultiIndex columns needs one level of OHLCV field names "
            f"({', '.join(OHLCV_COLUMNS)}), as framework.data.align_ohlcv returns; got levels "
            f"{[list(frame.columns.unique(i)) for i in (0, 1)]}"
        )
    frames = {}
    for symbol in frame.columns.unique(1 - level):
        part = frame.xs(symbol, axis=1, level=1 - level)
        frames[str(symbol)] = part[[c for c in OHLCV_COLUMNS if c in part.columns]]
    return frames


def _check_ann_factor(ann_factor: Any) -> float:
    """``ann_factor`` as a float, or ``ValueError`` naming the keyword."""
    ok = isinstance(ann_factor, (int, float, np.integer, np.floating)) and not isinstance(ann_factor, (bool, np.bool_))
    if not (ok and np.isfinite(ann_factor) and ann_factor > 0):
        raise ValueError(
            "ann_factor must be a finite number > 0 (bars per year, e.g. 252 for daily stock "
            f"bars), or None to derive it from the bar spacing; got {ann_factor!r}"
        )
    return float(ann_factor)


def _check_risk_free(risk_free: Any) -> float:
    """``risk_free`` as a float, or ``ValueError`` naming the keyword."""
    ok = isinstance(risk_free, (int, float, np.integer, np.floating)) and not isinstance(risk_free, (bool, np.bool_))
    if not (ok and np.isfinite(risk_free) and risk_free > -1):
        raise ValueError(
            "risk_free must be a finite annual rate (a fraction above -1, e.g. 0.04 for 4 %), "
            f"got {risk_free!r}"
        )
    return float(risk_free)


TimeInput = str | datetime | np.datetime64  # pd.Timestamp is a datetime


def _check_time(value: TimeInput, keyword: str) -> pd.Timestamp:
    """``value`` as a UTC Timestamp (a naive time is taken as UTC), or ``ValueError`` naming
    the keyword."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{keyword} must be a time: a pandas Timestamp, a datetime or a string such as "
            f"'2024-01-31' or '2024-01-31 12:00'; got {value!r} ({err})"
        ) from None
    if ts is pd.NaT:
        raise ValueError(f"{keyword} must be a time, got {value!r} (not a time)")
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def _bar_at(index: pd.DatetimeIndex, value: TimeInput, keyword: str) -> int:
    """Index of the first bar at or after the time ``value`` of ``keyword``, which must lie
    within the bars' span (``ValueError`` otherwise)."""
    ts = _check_time(value, keyword)
    if not index[0] <= ts <= index[-1]:
        raise ValueError(
            f"{keyword}={ts} is outside the backtested bars, {index[0]} .. {index[-1]} (after "
            "start/end); give a time within them"
        )
    return int(index.searchsorted(ts, side="left"))


def _slice_frames(frames: dict[str, pd.DataFrame], start: TimeInput | None,
                  end: TimeInput | None) -> dict[str, pd.DataFrame]:
    """The bars from ``start`` to ``end`` (both inclusive, None: unbounded) of every frame."""
    if start is None and end is None:
        return frames
    index = next(iter(frames.values())).index
    lo = None if start is None else _check_time(start, "start")
    hi = None if end is None else _check_time(end, "end")
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"start={lo} is after end={hi}; start must not be later than end")
    a = 0 if lo is None else int(index.searchsorted(lo, side="left"))
    b = len(index) if hi is None else int(index.searchsorted(hi, side="right"))
    if b - a < 2:
        raise ValueError(
            f"start={lo} and end={hi} keep {max(b - a, 0)} bar(s) of the data, which spans "
            f"{index[0]} .. {index[-1]}; need at least 2 bars to backtest"
        )
    return {name: frame.iloc[a:b] for name, frame in frames.items()}


def _stack(frames: dict[str, pd.DataFrame], column: str) -> np.ndarray:
    """One field of every instrument as a C-contiguous (bars, instruments) float64 array."""
    if len(frames) == 1 and column in next(iter(frames.values())):
        # a single contiguous column is already (bars, 1) C-contiguous: no copy
        return np.ascontiguousarray(next(iter(frames.values()))[column].to_numpy(dtype=np.float64)[:, None])
    cols = []
    for frame in frames.values():
        if column in frame:
            cols.append(frame[column].to_numpy(dtype=np.float64))
        else:  # index-price series carry no volume
            cols.append(np.full(len(frame), np.nan))
    return np.ascontiguousarray(np.column_stack(cols))


BenchmarkInput = str | Path | pd.DataFrame | pd.Series
_BENCHMARK_ACCEPTS = ("an instrument of the data, a bundled dataset name, a path, an OHLCV "
                      "DataFrame of one instrument, or a Series of prices or of returns on a "
                      "DatetimeIndex")


@dataclass(frozen=True)
class BenchmarkCurve:
    """What a backtest is compared with: an equity curve over the traded bars it shares with
    the benchmark, starting at the initial cash, and its trades (none for a Series)."""

    name: str
    equity: pd.Series
    trades: np.ndarray = field(repr=False)


def buy_and_hold(frames: dict[str, pd.DataFrame], settings: SimSettings, t0: int = 0,
                 name: str = "buy_and_hold") -> tuple[pd.Series, np.ndarray]:
    """Buy-and-hold equity and trades of ``frames`` from bar ``t0``: long every instrument at
    its first close, i.e. bought at the next bar's open with the run's fees and slippage
    (equal cash per instrument), held to the end. The series starts at ``t0``; the trades'
    bars count from there."""
    index = next(iter(frames.values())).index
    close = _stack(frames, "close")[t0:]
    entry = _stack(frames, "open")[t0 + 1] * (1.0 + settings.slippage)
    n_cols = close.shape[1]
    per_col = settings.init_cash if not settings.cash_sharing else settings.init_cash / n_cols
    qty = per_col / (entry * (1.0 + settings.fees))
    fees = qty * entry * settings.fees
    held = per_col - qty * entry - fees + qty * close  # (bars, columns)
    held[0] = per_col
    trades = np.zeros(n_cols, dtype=enums.trade_dt)
    trades["col"] = np.arange(n_cols)
    trades["direction"] = 1
    trades["qty"] = qty
    trades["entry_bar"] = 1
    trades["entry_price"] = entry
    trades["entry_fees"] = fees
    trades["exit_bar"] = len(close) - 1
    trades["exit_price"] = close[-1]
    trades["pnl"] = qty * (close[-1] - entry) - fees
    trades["ret"] = trades["pnl"] / (qty * entry)
    trades["exit_reason"] = enums.REASON_END
    return pd.Series(held.sum(axis=1), index=index[t0:], name=name), trades


def resolve_benchmark(benchmark: BenchmarkInput | BenchmarkCurve | None, frames: dict[str, pd.DataFrame],
                      settings: SimSettings, trade_from: int = 0, *, policy: Policy = "raise",
                      calendar: Calendar = "auto") -> BenchmarkCurve:
    """The benchmark of a backtest of ``frames`` trading from bar ``trade_from``.

    - None: buy-and-hold of every traded instrument (``buy_and_hold``); a ``BenchmarkCurve``
      is returned as it is.
    - the name of an instrument of ``frames``: buy-and-hold of that one.
    - a dataset name, path or OHLCV DataFrame of one instrument: its buy-and-hold with the
      run's fees and slippage over the traded bars it shares with the data.

    A single benchmark instrument or Series starts with the run's whole starting cash (every
    cash group's ``init_cash``), as the strategy's equity does.
    - a Series on a DatetimeIndex (naive times are UTC): prices when every value is > 0,
      otherwise per-bar simple returns (a return at a bar is the change from the previous bar).
      Its equity is ``init_cash`` times the price over its first price, or the returns
      compounded, over the traded bars it shares with the data (the first shared bar is the
      base; its own return is not counted).

    Raises:
        ValueError / TypeError naming ``benchmark``: fewer than 2 shared bars, several
        instruments, NaN in a Series, an unknown name.
    """
    index = next(iter(frames.values())).index[trade_from:]
    if isinstance(benchmark, BenchmarkCurve):
        return benchmark
    if benchmark is None:
        name = "Buy & Hold" if len(frames) == 1 else "Buy & Hold (equal cash)"
        return BenchmarkCurve(name, *buy_and_hold(frames, settings, trade_from))
    # one instrument is bought with the run's whole starting cash (every group's)
    settings = dataclasses.replace(
        settings, init_cash=settings.init_cash * (1 if settings.cash_sharing else len(frames)))
    if isinstance(benchmark, pd.Series):
        return _series_benchmark(benchmark, index, settings.init_cash)
    if isinstance(benchmark, str) and benchmark in frames:
        one = {benchmark: frames[benchmark]}
        return BenchmarkCurve(f"Buy & Hold {benchmark}", *buy_and_hold(one, settings, trade_from, benchmark))
    if not isinstance(benchmark, (str, Path, pd.DataFrame)):
        raise TypeError(f"benchmark must be {_BENCHMARK_ACCEPTS}; got {_type_name(benchmark)}")
    try:
        loaded = load_instruments(benchmark, policy=policy, calendar=calendar)
    except FileNotFoundError as err:
        raise ValueError(f"benchmark {benchmark!r} is no instrument of the data ({', '.join(frames)}) "
                         f"and no dataset or file: {err}") from None
    if len(loaded) != 1:
        raise ValueError(f"benchmark must be one instrument, got {len(loaded)} ({', '.join(loaded)})")
    (name, frame), = loaded.items()
    common = _common_bars(frame.index, index, name)
    one = {name: frame.loc[common]}
    return BenchmarkCurve(f"Buy & Hold {name}", *buy_and_hold(one, settings, 0, name))


def _common_bars(bench_index: pd.DatetimeIndex, index: pd.DatetimeIndex, name: str) -> pd.DatetimeIndex:
    common = bench_index.intersection(index)
    if len(common) < 2:
        raise ValueError(
            f"benchmark {name!r} shares {len(common)} bars with the backtest's traded bars "
            f"({index[0]} to {index[-1]}); it needs at least 2"
        )
    return common


def _series_benchmark(series: pd.Series, index: pd.DatetimeIndex, init_cash: float) -> BenchmarkCurve:
    name = str(series.name) if series.name is not None else "Benchmark"
    if not isinstance(series.index, pd.DatetimeIndex):
        raise TypeError(f"benchmark Series {name!r} needs a DatetimeIndex (bar times), got "
                        f"{type(series.index).__name__}")
    values = pd.to_numeric(series, errors="coerce").astype(np.float64)
    if not np.isfinite(values.to_numpy()).all():
        raise ValueError(f"benchmark Series {name!r} holds NaN, inf or non-numbers; drop or fill them first")
    if values.index.tz is None:
        values.index = values.index.tz_localize("UTC")
    values = values.sort_index()
    common = _common_bars(values.index, index, name)
    values = values.loc[common].to_numpy()
    if (values > 0).all():  # prices
        growth = values / values[0]
    else:  # returns; the first shared bar is the base
        if (values <= -1).any():
            raise ValueError(f"benchmark Series {name!r}: returns must be > -1 (a loss of at most 100 %)")
        growth = np.cumprod(np.concatenate(([1.0], 1.0 + values[1:])))
    equity = pd.Series(init_cash * growth, index=common, name=name)
    return BenchmarkCurve(name, equity, np.zeros(0, dtype=enums.trade_dt))


class Backtest:
    """A strategy over historical bars of one or more instruments.

    Args:
        strategy: a ``Strategy`` instance (with its parameters), a class (defaults) or the
            registered name of a bundled strategy (``"sma_cross"``).
        data: an OHLCV DataFrame, a path (CSV/Parquet), a bundled dataset name
            (``"BTC_USDT-1d"``), a mapping ``{instrument: any of those}`` sharing timestamps,
            or the output of :func:`framework.data.align_ohlcv` (one instrument per symbol).
        policy, calendar: how the data is validated and repaired, as in
            :func:`framework.data.load_ohlcv` (default: raise on any error).
        ann_factor: bars per year, for annualised statistics and volatility-target sizing;
            default (None) derived from the bar spacing over 365-day years
            (:func:`framework.metrics.bars_per_year`). Daily stock bars want 252.
        risk_free: annual risk-free rate (fraction) that Sharpe and Sortino subtract, converted
            per bar as ``(1 + risk_free) ** (1 / ann_factor) - 1``.
        start, end: the first and last time backtested (both inclusive; a naive time is UTC);
            the bars outside are dropped before anything runs. Default: all the data.
        trade_from: the first bar whose close may place orders (the first bar at or after this
            time). The bars before it only warm up indicators and the strategy's state, as a
            live runner does on history. Statistics and the buy-and-hold benchmark cover the
            traded period, from this bar on. Default: trade from the first bar.
        emergency_at: raise the emergency stop right before the bar at (or first after) this
            time opens: pending orders are cancelled, every position exits at that bar's open
            (market), and nothing trades after. Default: never.
        run_id: the run's part of every client order id (``framework.orders``), 1 to 12
            letters, digits, ``_`` or ``-``. Default ``"backtest"``.
        benchmark: what ``stats_table``, ``benchmark_stats`` and ``relative_stats`` compare
            with (``resolve_benchmark``): an instrument of ``data``, a bundled dataset, path or
            OHLCV frame (bought and held with the run's fees), or a Series of prices or
            returns. Default: buy-and-hold of the traded instruments.
        jit: False runs the strategy's ``decide_nb`` as plain Python, with breakpoints and
            numpy's bounds checks, around the same compiled simulator: a debugging mode with
            the same fills, bit for bit, at a few microseconds per bar. Default True.
        check_causality: before ``run`` simulates, check that a vectorised strategy's signals
            use no later bar (``framework.vector.check_causality``; a ``CausalityError`` names
            the bar). False skips the check. Numba strategies are causal by construction.
        **settings: ``SimSettings`` fields (fees, sizing, stops, risk limits, ...). The
            strategy's ``sim_defaults`` apply first, your settings override them.
    """

    def __init__(self, strategy: Strategy | type[Strategy] | str, data: DataInput, *,
                 policy: Policy = "raise", calendar: Calendar = "auto",
                 ann_factor: float | None = None, risk_free: float = 0.0,
                 start: TimeInput | None = None, end: TimeInput | None = None,
                 trade_from: TimeInput | None = None, emergency_at: TimeInput | None = None,
                 run_id: str = "backtest", benchmark: BenchmarkInput | BenchmarkCurve | None = None,
                 jit: bool = True, check_causality: bool = True, **settings: Any) -> None:
        self.strategy = _resolve_strategy(strategy)
        if not isinstance(jit, bool):
            raise ValueError(f"jit must be True or False, got {jit!r}")
        if not isinstance(check_causality, bool):
            raise ValueError(f"check_causality must be True or False, got {check_causality!r}")
        self.jit, self.check_causality = jit, check_causality
        self.run_id = orders.check_run_id(run_id)
        self.settings = SimSettings.build(self.strategy.sim_defaults, **settings)
        given_ann_factor = None if ann_factor is None else _check_ann_factor(ann_factor)
        self.risk_free = _check_risk_free(risk_free)
        self.frames = load_instruments(data, policy=policy, calendar=calendar)
        self.frames = _slice_frames(self.frames, start, end)
        self.index: pd.DatetimeIndex = next(iter(self.frames.values())).index
        if len(self.index) < 2:
            raise ValueError(f"need at least 2 bars to backtest, got {len(self.index)}")
        #: bar index of ``trade_from`` (0: trading from the first bar)
        self.trade_from_bar = 0 if trade_from is None else _bar_at(self.index, trade_from, "trade_from")
        if self.trade_from_bar > len(self.index) - 2:
            raise ValueError(
                f"trade_from={trade_from!r} is the last bar ({self.index[-1]}): an order decided "
                "there never fills; give a time at least one bar before end"
            )
        #: bar index before which the emergency stop is raised, or None
        self.emergency_bar = None if emergency_at is None else _bar_at(self.index, emergency_at, "emergency_at")
        self.ann_factor = metrics.bars_per_year(self.index) if given_ann_factor is None else given_ann_factor
        self.policy, self.calendar = policy, calendar
        #: the benchmark, resolved now so that a bad one fails before the run (None: buy-and-hold)
        self.benchmark: BenchmarkCurve | None = None if benchmark is None else resolve_benchmark(
            benchmark, self.frames, self.settings, self.trade_from_bar, policy=policy, calendar=calendar)

    def kernel_prices(self) -> list[np.ndarray]:
        """Open, high, low, close, volume as (bars, instruments) float64 arrays, and the bars'
        UTC times in int64 ns: the price arguments of the compiled drivers."""
        return [*(_stack(self.frames, c) for c in ("open", "high", "low", "close", "volume")),
                runner.utc_ns(self.index)]

    def sim_vector(self) -> np.ndarray:
        """The simulator's parameter vector for this run: the settings, the annualisation
        factor, ``trade_from`` and ``emergency_at`` as bar indices (what a ``BarStepper``
        stepping the same bars from the first is given)."""
        p = self.settings.vector(self.ann_factor)
        p[enums.P_TRADE_FROM] = self.trade_from_bar
        if self.emergency_bar is not None:
            p[enums.P_EMERGENCY_AT] = self.emergency_bar
        return p

    def run(self) -> BacktestResult:
        """Simulate every bar; returns orders, trades, equity, positions and statistics."""
        n_cols = len(self.frames)
        groups = np.array([0, n_cols] if self.settings.cash_sharing else range(n_cols + 1), dtype=np.int64)
        simp = np.ascontiguousarray(np.tile(self.sim_vector(), (len(groups) - 1, 1)))
        if self.check_causality:
            for frame in self.frames.values():
                self.strategy.verify_causality(frame)
        prices = self.kernel_prices()
        sp = self.strategy.kernel_params(prices[:5], prices[5])
        # on a cold cache, a second process compiles the simulator's bar loop for these arguments
        # while this one compiles the strategy's kernels and the result's
        from framework import compile_aside  # (not at the top: `python -m` runs it)

        aside = compile_aside.compile_aside(*prices, sp, simp) if self.jit else None
        kernels = runner.drivers(type(self.strategy), jit=self.jit)
        if aside is not None:
            compile_result_kernels()
            compile_aside.wait(aside)
        equity, fills, events = kernels.backtest_nb(*prices, sp, simp, groups)
        return self.result_of(equity, fills, events, groups)

    def result_of(self, equity: np.ndarray, fills: np.ndarray, events: np.ndarray,
                  groups: np.ndarray) -> BacktestResult:
        """The result of this backtest from the simulator's output: (bars, groups) equity, the
        fill and event records, the first column of each cash group (then the columns)."""
        return BacktestResult(
            strategy=self.strategy,
            settings=self.settings,
            frames=self.frames,
            ann_factor=self.ann_factor,
            risk_free=self.risk_free,
            group_start=groups,
            group_equity=equity,
            fill_records=fills,
            event_records=events,
            trade_from=self.trade_from_bar,
            run_id=self.run_id,
            benchmark_curve=self.benchmark,
        )


def compile_result_kernels() -> None:
    """Compile the simulator's state set-up and the kernels of a backtest's result: build one
    from a made-up simulator output (a round trip on eight daily bars, arrays of the simulator's
    types) and read what ``tradpal backtest`` prints and keeps: statistics beside buy-and-hold,
    orders, fills, trades, positions."""
    sim_nb.init_state_nb(1, SimSettings().vector(365.0))
    n = 8
    close = 100.0 + np.arange(n, dtype=np.float64)
    frame = pd.DataFrame({"open": close, "high": close + 1.0, "low": close - 1.0, "close": close,
                          "volume": np.full(n, 10.0)},
                         index=pd.date_range("2024-01-01", periods=n, freq="1D", tz="UTC"))
    # any strategy: these kernels do not depend on it
    bt = Backtest(strategy_class("sma_cross")(fast=2, slow=3), frame)
    fills = np.zeros(2, dtype=enums.fill_dt)
    fills["order_id"] = [0, 1]
    fills["bar"] = [2, 5]
    fills["side"] = [1, -1]
    fills["qty"] = 1.0
    fills["price"] = close[[2, 5]]
    fills["fee_ccy"] = enums.FEE_QUOTE
    fills["order_type"] = enums.ORDER_MARKET
    fills["reason"] = enums.REASON_SIGNAL
    equity = np.full((n, 1), bt.settings.init_cash)
    result = bt.result_of(equity, fills, np.zeros(0, dtype=enums.event_dt), np.array([0, 1], dtype=np.int64))
    result.stats_table()
    result.orders, result.fills, result.trades, result.positions  # noqa: B018 (compiled when read)


@dataclass
class BacktestResult:
    """Everything a backtest produced. Series are indexed by bar timestamps (UTC)."""

    strategy: Strategy
    settings: SimSettings
    frames: dict[str, pd.DataFrame]
    ann_factor: float
    group_start: np.ndarray = field(repr=False)  # first column of each cash group, then n_cols
    group_equity: np.ndarray = field(repr=False)  # (bars, groups)
    fill_records: np.ndarray = field(repr=False)  # fill_dt records, in booking order
    event_records: np.ndarray = field(repr=False)  # event_dt records: every order's changes
    risk_free: float = 0.0  # annual rate that Sharpe and Sortino subtract
    trade_from: int = 0  # first bar that may place orders; statistics cover the bars from it
    run_id: str = "backtest"  # the run's part of the client order ids
    benchmark_curve: BenchmarkCurve | None = None  # None: buy-and-hold of the traded instruments

    @property
    def index(self) -> pd.DatetimeIndex:
        return next(iter(self.frames.values())).index

    @property
    def columns(self) -> list[str]:
        return list(self.frames)

    @cached_property
    def close(self) -> np.ndarray:
        return _stack(self.frames, "close")

    @cached_property
    def equity(self) -> pd.Series:
        """Total equity (cash plus positions at the close), summed over cash groups."""
        return pd.Series(self.group_equity.sum(axis=1), index=self.index, name="equity")

    @cached_property
    def _cash_and_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """(bars, groups) cash and (bars, columns) positions, replayed from the fills."""
        col_group = np.repeat(np.arange(len(self.group_start) - 1), np.diff(self.group_start))
        return sim_nb.replay_fills_nb(
            self.fill_records, len(self.index), col_group, len(self.group_start) - 1, self.settings.init_cash
        )

    @cached_property
    def cash(self) -> pd.Series:
        return pd.Series(self._cash_and_positions[0].sum(axis=1), index=self.index, name="cash")

    @cached_property
    def positions(self) -> pd.DataFrame:
        """Signed position quantity per instrument at each close."""
        return pd.DataFrame(self._cash_and_positions[1], index=self.index, columns=self.columns)

    @cached_property
    def drawdown(self) -> pd.Series:
        return pd.Series(metrics.drawdown(self.equity.to_numpy()), index=self.index, name="drawdown")

    @cached_property
    def trade_records(self) -> np.ndarray:
        """``trade_dt`` records; a position open at the end is a trade marked ``open_at_end``."""
        return trades_nb.trades_from_fills_nb(
            self.fill_records, len(self.columns), len(self.index) - 1, np.ascontiguousarray(self.close[-1])
        )

    @cached_property
    def order_records(self) -> np.ndarray:
        """Every order's last ``event_dt`` record (its final status), in creation order."""
        return orders.final_orders(self.event_records)

    @cached_property
    def orders(self) -> pd.DataFrame:
        """Every order the run made, one row each with its final status: client order id,
        created/updated time, instrument, side, type, quantity (NaN for an entry sized at its
        fill; ``notional`` then), limit price, trigger, status, reason (why it exists:
        signal, stop_loss, ...), reject_reason (why rejected or cancelled), filled quantity and
        average fill price."""
        return orders.orders_frame(self.event_records, self.index, self.columns,
                                   orders.strategy_tag(self.strategy), self.run_id)

    @cached_property
    def fills(self) -> pd.DataFrame:
        """Every fill: time, instrument, side, quantity, price, fee and fee currency, order
        type, reason and the order it filled."""
        return orders.fills_frame(self.fill_records, self.index, self.columns,
                                  orders.strategy_tag(self.strategy), self.run_id)

    @cached_property
    def events(self) -> pd.DataFrame:
        """Every event in order: each order's changes of status, stops moving, risk limits."""
        return orders.events_frame(self.event_records, self.index, self.columns)

    @cached_property
    def trades(self) -> pd.DataFrame:
        """One row per round trip: entry/exit time and price, qty, side, pnl, return, duration."""
        return trades_frame(self.trade_records, self.index, self.columns)

    @cached_property
    def exposure(self) -> np.ndarray:
        """True where any position is open at the bar's close."""
        return (self._cash_and_positions[1] != 0.0).any(axis=1)

    @cached_property
    def stats(self) -> dict[str, object]:
        """Performance statistics over the traded period: the bars from ``trade_from`` on (all
        bars without it); the warm-up bars before it hold only the initial cash."""
        t0 = self.trade_from
        trades = self.trade_records.copy()
        trades["entry_bar"] -= t0  # in terms of the traded bars' index
        trades["exit_bar"] -= t0
        return metrics.performance_stats(self.equity.iloc[t0:], trades, self.exposure[t0:], self.ann_factor,
                                         self.risk_free)

    @cached_property
    def _benchmark(self) -> BenchmarkCurve:
        return self.benchmark_curve or resolve_benchmark(None, self.frames, self.settings, self.trade_from)

    @property
    def benchmark(self) -> tuple[pd.Series, np.ndarray]:
        """The benchmark's equity and trades over the traded period (from ``trade_from``; the
        trades' bars count from there): by default buy-and-hold of every traded instrument,
        bought at the open after the first traded close with the same fees and slippage (equal
        cash per instrument) and held to the end; else what ``Backtest(benchmark=)`` chose
        (``resolve_benchmark``), over the bars it shares with the data."""
        return self._benchmark.equity, self._benchmark.trades

    @property
    def benchmark_name(self) -> str:
        """How tables and charts name the benchmark (``"Buy & Hold"``, ``"Buy & Hold ETH"``)."""
        return self._benchmark.name

    @cached_property
    def benchmark_stats(self) -> dict[str, object]:
        """``stats`` of the benchmark's equity (exposed from its second bar on)."""
        equity, trades = self.benchmark
        exposure = np.ones(len(equity), dtype=bool)
        exposure[0] = False
        return metrics.performance_stats(equity, trades, exposure, self.ann_factor, self.risk_free)

    @cached_property
    def relative_stats(self) -> dict[str, float]:
        """Alpha, beta, correlation, tracking error, information ratio, up and down capture
        against the benchmark (``framework.metrics.relative_stats``, with the run's
        ``ann_factor`` and ``risk_free``), over the returns between consecutive bars the
        benchmark's equity covers (the traded bars unless a Series benchmark has gaps)."""
        bench = self.benchmark[0]
        strategy = self.equity.loc[bench.index].to_numpy()
        return metrics.relative_stats(strategy[1:] / strategy[:-1] - 1.0,
                                      bench.to_numpy()[1:] / bench.to_numpy()[:-1] - 1.0,
                                      self.ann_factor, self.risk_free)

    def instrument_stats(self) -> pd.DataFrame:
        """Statistics per instrument over the traded period, one row each (index: instrument).

        Each instrument is valued as a sub-account: its capital (the initial cash of its own
        cash group; with ``cash_sharing`` an equal share, ``init_cash / instruments``) plus its
        P&L, the cash its fills moved (``replay_fills_nb`` with one cash account per
        instrument) plus its position at the close. Without cash sharing this equity is the
        instrument's group equity, so the row equals a backtest of that instrument alone.

        Columns: ``capital``, ``pnl`` (cash, from ``trade_from``), ``contribution`` (``pnl`` over
        the total equity at ``trade_from``: the rows sum to the run's total return),
        ``total_return``, ``cagr``, ``ann_volatility``, ``sharpe``, ``max_drawdown``,
        ``total_trades``, ``win_rate``, ``profit_factor``, ``expectancy``, ``exposure_time``
        (as in ``stats``, of the instrument's equity and its trades), ``fees`` (in the quote
        currency; base-currency fees at the fill price) and ``buy_and_hold_return``.
        """
        n_cols = len(self.columns)
        t0 = self.trade_from
        flows, pos = sim_nb.replay_fills_nb(self.fill_records, len(self.index), np.arange(n_cols, dtype=np.int64),
                                            n_cols, 0.0)
        shared = self.settings.cash_sharing and n_cols > 1
        capital = self.settings.init_cash / n_cols if shared else self.settings.init_cash
        sub_equity = capital + flows + pos * self.close  # (bars, instruments)
        fills = self.fill_records
        fee_cash = np.where(fills["fee_ccy"] == enums.FEE_BASE, fills["fees"] * fills["price"], fills["fees"])
        keys = ("total_return", "cagr", "ann_volatility", "sharpe", "max_drawdown", "total_trades",
                "win_rate", "profit_factor", "expectancy", "exposure_time")
        rows = []
        for col, name in enumerate(self.columns):
            equity = pd.Series(sub_equity[t0:, col], index=self.index[t0:])
            trades = self.trade_records[self.trade_records["col"] == col].copy()
            trades["entry_bar"] -= t0
            trades["exit_bar"] -= t0
            stats = metrics.performance_stats(equity, trades, pos[t0:, col] != 0.0, self.ann_factor, self.risk_free)
            bh, _ = buy_and_hold({name: self.frames[name]}, self.settings, t0)
            pnl = float(equity.iloc[-1] - equity.iloc[0])
            rows.append({"instrument": name, "capital": capital, "pnl": pnl,
                         "contribution": pnl / float(self.equity.iloc[t0]),
                         **{k: stats[k] for k in keys},
                         "fees": float(fee_cash[fills["col"] == col].sum()),
                         "buy_and_hold_return": float(bh.iloc[-1] / bh.iloc[0] - 1.0)})
        return pd.DataFrame(rows).set_index("instrument")

    def to_vectorbt(self) -> Any:
        """A vectorbt ``Portfolio`` replaying this run's fills, to use vectorbt's analytics:
        each fill is an order of its signed quantity at its fill price with its fee as a fixed
        fee, in the order they happened (several per bar allowed), with the same initial cash
        and cash groups (``framework.vbt_bridge``). Needs the ``research`` extra (vectorbt)."""
        try:
            from framework import vbt_bridge
        except ImportError as err:
            raise ImportError(
                f"to_vectorbt() needs vectorbt, which is not installed ({err}); install the "
                "research extra: pip install 'tradpal[research]'"
            ) from err
        return vbt_bridge.portfolio(self)

    def stats_table(self) -> str:
        """The strategy's statistics beside the benchmark's (buy-and-hold of the traded
        instruments unless ``Backtest(benchmark=)`` chose another), then alpha, beta,
        correlation, tracking error, information ratio and capture against it in the
        strategy's column."""
        relative = {k: self.relative_stats[k] for k in metrics.RELATIVE_KEYS}
        return metrics.stats_table({**self.stats, **relative}, self.benchmark_stats,
                                   (self.strategy.label(), self.benchmark_name))

    def plot(self, instrument: str | None = None, benchmark: Any = None, **kwargs: Any) -> Any:
        """Price with indicators and fills, equity against a benchmark, drawdown and exposure:
        a plotly Figure (``framework.plots.plot``; ``benchmark`` is a dataset to buy and hold)."""
        from framework import plots

        return plots.plot(self, instrument, benchmark, **kwargs)

    def to_html(self, path: str | Path | None = None, **kwargs: Any) -> str:
        """The HTML tear sheet, written to ``path`` when given (``framework.report.to_html``:
        ``benchmark=`` a dataset to buy and hold, ``title=``)."""
        from framework import report

        return report.to_html(self, path, **kwargs)


def trades_frame(records: np.ndarray, index: pd.DatetimeIndex, columns: list[str]) -> pd.DataFrame:
    """``trade_dt`` records as a readable DataFrame."""
    return pd.DataFrame(
        {
            "instrument": np.array(columns, dtype=object)[records["col"]],
            "side": np.where(records["direction"] > 0, "long", "short"),
            "qty": records["qty"],
            "entry_time": index[records["entry_bar"]],
            "entry_price": records["entry_price"],
            "exit_time": index[records["exit_bar"]],
            "exit_price": records["exit_price"],
            "pnl": records["pnl"],
            "return": records["ret"],
            "duration": index[records["exit_bar"]] - index[records["entry_bar"]],
            "exit_reason": np.array(enums.REASON_NAMES, dtype=object)[records["exit_reason"]],
            "fees": records["entry_fees"] + records["exit_fees"],
        }
    )
