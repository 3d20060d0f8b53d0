"""The ``tradpal`` command.

    tradpal strategies
    tradpal backtest STRATEGY --data PATH_OR_NAME [--data ...] | --symbols A,B [--param name=value ...]
                     [--set setting=value ...] [--start TIME] [--end TIME]
                     [--ann-factor N] [--risk-free RATE] [--benchmark B]
                     [--policy raise|drop|fill] [--calendar auto|24/7|sessions]
                     [--out FILE.csv|.json|.parquet] [--json]
    tradpal sweep STRATEGY --data PATH_OR_NAME --grid name=start:stop:step|v1,v2 [--grid ...]
                  [--sort METRIC] [--top N] [--out FILE.csv|.json|.parquet] (+ the options above)
    tradpal paper STRATEGY --exchange ID --symbol BTC/USDT [--symbol ...] --timeframe 1h
                  --state DIR [--exchange-url URL] [--max-bars N] [--fills-out CSV] [--summary-out JSON]
                  [--confirm-orders [prompt|control]] [--approval-timeout SECONDS]
                  [--redis-url URL] [--metrics-port N] [--api-port N] [--api-host HOST]
    tradpal live  (the options of paper) --live [--yes] [--credentials-file PATH]
                  [--max-order-notional AMOUNT|off] [--daily-loss FRACTION|off]
                  [--protective exchange|watch]
    tradpal runner status | stop | reset | pause | resume --state DIR
    tradpal runner approve | reject --state DIR CLIENT_ORDER_ID [--reason TEXT]
    tradpal data fetch | data check | exchange serve   (see framework.data_cli)

STRATEGY is a bundled name, ``path/to/file.py:ClassName`` or a name from the folders of
``$TRADPAL_STRATEGY_PATH`` (see ``strategies``); ``--strategy FILE.py:CLASS`` may stand instead.
An option that takes one value refuses a second one rather than keeping the last.

Exit codes: 0 ok, 1 data problems or a failed download, 2 bad usage, 130 interrupted, 141 the
reader of the output went away (``tradpal data check F | head -1``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from framework import data_cli
from framework.settings import settings_from_pairs


class _StoreOnce(argparse._StoreAction):
    """``store`` that refuses a second occurrence of the option instead of keeping the last."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = namespace.__dict__.setdefault("_given_once", {})
        if self.dest in seen:
            parser.error(f"argument {option_string}: given twice ({seen[self.dest]!r} and "
                         f"{values!r}); it takes one value")
        seen[self.dest] = values
        super().__call__(parser, namespace, values, option_string)


class _Parser(argparse.ArgumentParser):
    """Options that take one value refuse repetition; usage errors are one line (exit 2)."""

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        if args and args[0].startswith("-") and kwargs.get("action", "store") == "store":
            kwargs["action"] = _StoreOnce
        return super().add_argument(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def cmd_strategies(args: argparse.Namespace) -> int:
    from strategies import STRATEGIES, all_strategies

    for name, cls in sorted(all_strategies().items()):
        origin = "" if name in STRATEGIES else f" [{sys.modules[cls.__module__].__file__}]"
        doc = (cls.__doc__ or "").strip()
        print(f"{name}: {doc.splitlines()[0] if doc else ''}{origin}")
        for pname, param in cls.param_spec().items():
            print(f"    {pname:<14} default {param.default!s:<8} {param.range_text():<28} {param.doc}")
        if cls.indicators:
            print(f"    indicators: {', '.join(cls.indicators)}")
        if cls.sim_defaults:
            shown = ", ".join(f"{k}={v}" for k, v in cls.sim_defaults.items())
            print(f"    (runs with {shown} unless overridden)")
    return 0


def _strategy_class(args: argparse.Namespace):
    """The class named by the positional STRATEGY or ``--strategy`` (exactly one of them)."""
    from strategies import get_strategy

    if args.strategy and args.strategy_option:
        raise ValueError(f"strategy given twice ({args.strategy!r} and --strategy "
                         f"{args.strategy_option!r}); give STRATEGY or --strategy, not both")
    spec = args.strategy or args.strategy_option
    if not spec:
        raise ValueError("no strategy: give a name (see `tradpal strategies`) or "
                         "--strategy path/to/file.py:ClassName")
    option = "STRATEGY" if args.strategy else "--strategy"
    try:
        return get_strategy(spec)
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"{option}: {e}") from None


def _utc_time(option: str, text: str | None):
    """``--start``/``--end`` text as a UTC Timestamp (a time without offset is UTC)."""
    import pandas as pd

    if text is None:
        return None
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError):
        stamp = pd.NaT
    if stamp is pd.NaT:
        raise ValueError(f"{option} {text!r} is not a date/time; give ISO format, e.g. "
                         "2021-01-01 or 2021-01-01T12:00 (UTC unless an offset is given)")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _data_sources(args: argparse.Namespace) -> list[str]:
    """The ``--data`` sources, then those of ``--symbols A,B`` (repeatable), in order."""
    sources = list(args.data or [])
    for item in args.symbols or []:
        parts = [p.strip() for p in item.split(",")]
        if not all(parts):
            raise ValueError(f"--symbols {item!r}: an empty name; give names separated by commas, "
                             "e.g. --symbols BTC_USDT-1d,ETH_USDT-1d")
        sources += parts
    if not sources:
        raise ValueError("no data: give --data PATH_OR_NAME (repeatable) or --symbols A,B")
    return sources


def _load_data(args: argparse.Namespace) -> dict:
    """The ``--data`` sources, validated, cut to ``[--start, --end]`` (both included, as ``Backtest(start=, end=)``), by instrument name (the
    dataset name or file stem)."""
    from framework.data import DataValidationError, load_ohlcv

    start, end = _utc_time("--start", args.start), _utc_time("--end", args.end)
    if start is not None and end is not None and start >= end:
        raise ValueError(f"--start {args.start} is not before --end {args.end}; the range is "
                         "[start, end], so --end must be later")
    frames, sources = {}, {}
    for source in _data_sources(args):
        name = Path(source).stem
        if name in frames:
            raise ValueError(f"--data: two sources for instrument {name!r} ({sources[name]!r} and "
                             f"{source!r}); each instrument is named by its file stem, give it once")
        try:
            frame = load_ohlcv(source, policy=args.policy, calendar=args.calendar)
        except DataValidationError as e:  # advice in this interface's words (--policy, not policy=)
            raise ValueError(f"--data {source}: {data_cli.validation_advice(e, source)}") from None
        except FileNotFoundError as e:
            raise ValueError(f"--data: {e}") from None
        keep = np.ones(len(frame), dtype=bool)
        if start is not None:
            keep &= frame.index >= start
        if end is not None:
            keep &= frame.index <= end
        if keep.sum() < 2:
            raise ValueError(
                f"--start/--end: {int(keep.sum())} bar(s) of {name} in [{args.start or 'first'}, "
                f"{args.end or 'last'}]; the data covers {frame.index[0]:%Y-%m-%d %H:%M} to "
                f"{frame.index[-1]:%Y-%m-%d %H:%M} UTC and a backtest needs at least 2 bars")
        frames[name], sources[name] = frame[keep], source
    first = next(iter(frames))
    for name, frame in frames.items():
        if not frame.index.equals(frames[first].index):
            only = frame.index.symmetric_difference(frames[first].index)
            raise ValueError(
                f"--data {sources[first]} and --data {sources[name]} have different timestamps "
                f"({len(only)} bar time(s) in one only, first {only[0]:%Y-%m-%d %H:%M} UTC); "
                "instruments of one run share every bar: give files on one time grid")
    return frames
def _jsonable(value: Any) -> Any:
    """A statistic as JSON: times in ISO 8601 (UTC), durations as ISO 8601 durations
    (``P27DT3H18M37S``), NaN as null, infinities as the strings "inf" / "-inf"."""
    import pandas as pd

    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, pd.Timedelta):
        return value.isoformat()
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return None
        return float(value) if np.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, np.integer):
        return int(value)
    return value


def _stats_json(result) -> dict[str, dict[str, Any]]:
    """Statistics of the strategy and of the benchmark, and the strategy's relative to it
    (alpha, beta, correlation, ...: ``BacktestResult.relative_stats``)."""
    return {"strategy": {k: _jsonable(v) for k, v in result.stats.items()},
            "benchmark": {k: _jsonable(v) for k, v in result.benchmark_stats.items()},
            "relative": {k: _jsonable(v) for k, v in result.relative_stats.items()}}


def _records(frame) -> list[dict[str, Any]]:
    """A table as JSON records, values as :func:`_jsonable` writes them (every float exactly:
    pandas' own ``to_json`` rounds to 10 digits)."""
    return [{k: _jsonable(v) for k, v in row.items()} for row in frame.to_dict("records")]


_FORMATS = (".csv", ".json", ".parquet")


def _out_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(f"--out {path}: the file name must end in {', '.join(_FORMATS)} "
                         "(it chooses the format)")
    return suffix


def _write_table(frame, path: Path) -> None:
    """One table as CSV, JSON (a list of records) or Parquet, by the path's suffix."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        path.write_text(json.dumps(_records(frame), indent=1) + "\n")


def backtest_tables(result) -> dict[str, Any]:
    """The tables ``backtest --out`` writes: stats (one row each for the strategy and the
    benchmark, column ``run``; the strategy's row also holds its statistics relative to the
    benchmark, alpha, beta, ...), trades, orders (every order, final status), fills and equity
    (columns ``time``, ``equity``)."""
    import pandas as pd

    stats = pd.DataFrame([{**result.stats, **result.relative_stats}, result.benchmark_stats])
    stats.insert(0, "run", ["strategy", "benchmark"])
    equity = pd.DataFrame({"time": result.equity.index, "equity": result.equity.to_numpy()})
    return {"stats": stats, "trades": result.trades, "orders": result.orders, "fills": result.fills,
            "equity": equity}


def write_backtest(result, out: str) -> list[Path]:
    """``--out``: ``NAME.json`` is one JSON object with keys stats ({strategy, benchmark, relative}),
    trades, orders, fills and equity; ``NAME.csv`` / ``NAME.parquet`` are five files beside it,
    ``NAME.stats.csv``, ``NAME.trades.csv``, ``NAME.orders.csv``, ``NAME.fills.csv``,
    ``NAME.equity.csv``."""
    path = Path(out)
    suffix = _out_format(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tables = backtest_tables(result)
    if suffix == ".json":
        doc = {"stats": _stats_json(result),
               **{k: _records(v) for k, v in tables.items() if k != "stats"}}
        path.write_text(json.dumps(doc, indent=1) + "\n")
        return [path]
    written = []
    for key, frame in tables.items():
        target = path.with_name(f"{path.stem}.{key}{suffix}")
        _write_table(frame, target)
        written.append(target)
    return written


def backtest_fills(result):
    """A backtest's fills with the columns of the fills CSV (``live.runner.FILL_COLUMNS``): the
    ``symbol`` column holds the unified symbol a dataset name encodes (``BTC_USDT-1h`` ->
    ``BTC/USDT``, as a paper run writes it), else the instrument name (the file stem)."""
    import pandas as pd

    from framework.data import symbol_from_name

    f = result.fills
    symbols = [symbol_from_name(name) or name for name in f["instrument"]]
    return pd.DataFrame({
        "timestamp": [t.isoformat() for t in f["time"]], "symbol": symbols, "side": f["side"],
        "qty": f["qty"], "price": f["price"], "fee": f["fee"], "client_order_id": f["client_order_id"],
        "order_type": f["order_type"], "reason": f["reason"]})


def write_fills_csv(frame, path: str) -> Path:
    """``--fills-out``: every fill, one row each, columns ``timestamp,symbol,side,qty,price,fee,
    client_order_id,order_type,reason`` (times ISO 8601 UTC, floats exact)."""
    target = Path(path)
    if target.suffix.lower() != ".csv":
        raise ValueError(f"--fills-out {path}: the file name must end in .csv")
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(target, index=False)
    return target


_KEYWORD_OPTIONS = {"trade_from": "--trade-from", "run_id": "--run-id", "ann_factor": "--ann-factor",
                    "risk_free": "--risk-free"}


def _option_words(message: str) -> str:
    """An API error in this interface's words: the options, not the keywords."""
    for keyword, option in _KEYWORD_OPTIONS.items():
        message = message.replace(keyword, option)
    return message


def cmd_backtest(args: argparse.Namespace) -> int:
    from framework.backtest import Backtest

    cls = _strategy_class(args)
    strategy = cls.from_strings(args.param or [])
    settings = settings_from_pairs(args.set)
    if args.out:
        _out_format(args.out)  # a bad --out fails before the run, not after it
    if args.fills_out and Path(args.fills_out).suffix.lower() != ".csv":
        raise ValueError(f"--fills-out {args.fills_out}: the file name must end in .csv")
    trade_from = _utc_time("--trade-from", args.trade_from)
    frames = _load_data(args)
    started = time.perf_counter()
    try:
        bt = Backtest(strategy, frames, policy=args.policy, calendar=args.calendar,
                      trade_from=trade_from, run_id=args.run_id, ann_factor=args.ann_factor,
                      risk_free=args.risk_free, **settings)
    except ValueError as e:
        raise ValueError(_option_words(str(e))) from None
    if args.benchmark is not None:
        from framework import report  # the plotting stack: imported only where it may be used

        bt.benchmark = report.benchmark_option(args.benchmark, bt)
    result = bt.run()
    elapsed = time.perf_counter() - started
    written = write_backtest(result, args.out) if args.out else []
    if args.fills_out:
        written.append(write_fills_csv(backtest_fills(result), args.fills_out))
    if args.json:  # stdout is the JSON object and nothing else
        print(json.dumps(_stats_json(result), indent=1))
        return 0
    print(f"{strategy!r} on {', '.join(frames)} ({len(bt.index):,} bars, "
          f"{bt.index[0]:%Y-%m-%d %H:%M} to {bt.index[-1]:%Y-%m-%d %H:%M} UTC)")
    print(result.stats_table())
    print(f"\n{len(result.orders)} orders, {len(result.fills)} fills, {len(result.trades)} trades; ran in {elapsed:.2f} s "
          "(first run includes compiling the kernels, cached on disk afterwards)")
    for path in written:
        print(f"wrote {path}")
    return 0


# a sweep lists the best first: the highest value, except where lower is better
_LOWER_IS_BETTER = ("ann_volatility", "max_drawdown_duration")


def _grid_values(cls, item: str) -> tuple[str, list]:
    """``--grid fast=5:50:5`` (start:stop:step, stop included when the steps land on it) or
    ``--grid fast=5,10,20`` -> ("fast", [5, 10, ...]), typed and range-checked."""
    key, sep, text = item.partition("=")
    key = key.strip()
    spec = cls.param_spec()
    if not sep or not text.strip():
        raise ValueError(f"--grid expects name=start:stop:step or name=v1,v2,...; got {item!r}")
    if key not in spec:
        raise ValueError(f"--grid {item}: {cls.label()} has no parameter {key!r}; valid "
                         f"parameters: {', '.join(spec)}")
    param = spec[key]
    if ":" not in text:
        return key, [param.parse(cls.label(), key, v) for v in text.split(",")]
    parts = text.split(":")
    if len(parts) != 3 or param.kind is bool:
        raise ValueError(f"--grid {item}: a range is start:stop:step of a number parameter, "
                         "e.g. fast=5:50:5; or list the values, e.g. fast=5,10,20")
    try:
        start, stop, step = (param.kind(float(p)) if param.kind is float else int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--grid {item}: start, stop and step of {key!r} must be "
                         f"{'integers' if param.kind is int else 'numbers'}") from None
    if not step > 0 or stop < start:
        raise ValueError(f"--grid {item}: need step > 0 and start <= stop")
    count = int(np.floor((stop - start) / step + 1e-9)) + 1
    values = [start + i * step for i in range(count)]
    if param.kind is float:  # 0.1 + 2 * 0.1 is 0.30000000000000004: show what was meant
        values = [round(v, 12) for v in values]
    return key, [param.check(cls.label(), key, v) for v in values]


def cmd_sweep(args: argparse.Namespace) -> int:
    from framework.sweep import METRICS, sweep

    cls = _strategy_class(args)
    if args.sort not in METRICS:
        raise ValueError(f"--sort {args.sort!r} is not a statistic of a sweep; valid: "
                         f"{', '.join(METRICS)}")
    if args.top is not None and args.top < 1:
        raise ValueError(f"--top must be at least 1, got {args.top}")
    if args.out:
        _out_format(args.out)
    grid: dict[str, list] = {}
    for item in args.grid:
        key, values = _grid_values(cls, item)
        if key in grid:
            raise ValueError(f"--grid {key} given twice; give each parameter once")
        grid[key] = values
    fixed = cls.parse_params(args.param or [])
    both = sorted(set(fixed) & set(grid))
    if both:
        raise ValueError(f"{', '.join(both)} given in both --param and --grid; give it in one")
    frames = _load_data(args)  # each instrument is swept on its own bars
    started = time.perf_counter()
    try:
        table = sweep(cls, frames, {**{k: [v] for k, v in fixed.items()}, **grid}, policy=args.policy,
                      calendar=args.calendar, ann_factor=args.ann_factor, risk_free=args.risk_free,
                      **settings_from_pairs(args.set))
    except ValueError as e:
        raise ValueError(_option_words(str(e))) from None
    elapsed = time.perf_counter() - started
    table = table.sort_values(args.sort, ascending=args.sort in _LOWER_IS_BETTER,
                              na_position="last", kind="stable").reset_index(drop=True)
    ran = len(table)
    if args.top is not None:
        table = table.head(args.top)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        _write_table(table, Path(args.out))
    shown = table if args.top is not None else table.head(20)
    kept = f"the best {len(table)} of {ran}" if len(table) < ran else f"{ran}"
    print(f"{cls.label()} on {', '.join(frames)}: {kept} combination(s) by {args.sort}, best first; "
          f"ran in {elapsed:.2f} s")
    print(shown.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if len(shown) < len(table):
        print(f"... {len(table) - len(shown)} more (--top N to show more"
              f"{'' if args.out else ', --out FILE to save all'})")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """The options ``backtest`` and ``sweep`` share: strategy, data, range, parameters."""
    p.add_argument("strategy", nargs="?", metavar="STRATEGY",
                   help="a strategy name (see `tradpal strategies`) or path/to/file.py:ClassName")
    p.add_argument("--strategy", dest="strategy_option", metavar="FILE.py:CLASS",
                   help="your own Strategy subclass from a file (instead of STRATEGY); "
                   "$TRADPAL_STRATEGY_PATH lists folders whose strategies go by name")
    p.add_argument("--data", action="append", metavar="PATH_OR_NAME",
                   help="CSV/Parquet path or bundled dataset name, e.g. BTC_USDT-1d; repeat for "
                   "several instruments on one index (named by file stem)")
    p.add_argument("--symbols", action="append", metavar="A,B",
                   help="several --data at once, separated by commas, e.g. BTC_USDT-1d,ETH_USDT-1d "
                   "(repeatable; with --set cash_sharing=true they share one cash pool)")
    p.add_argument("--ann-factor", type=float, metavar="N",
                   help="bars per year for annualised statistics (default: from the bar spacing, "
                   "365-day years; daily stock bars want 252)")
    p.add_argument("--risk-free", type=float, default=0.0, metavar="RATE",
                   help="annual risk-free rate that Sharpe and Sortino subtract, e.g. 0.04 (default 0)")
    p.add_argument("--start", metavar="TIME", help="first bar's time, ISO (UTC), e.g. 2021-01-01")
    p.add_argument("--end", metavar="TIME", help="stop before this time, ISO (UTC): "
                   "--start 2021-01-01 --end 2021-12-31 is the year 2021 (both ends included, as "
                   "Backtest(start=, end=))")
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="strategy parameter (repeatable)")
    p.add_argument("--set", action="append", metavar="SETTING=VALUE",
                   help="simulator setting, e.g. fees=0.001 sl_pct=0.05 allow_short=true "
                   "cash_sharing=true (repeatable)")
    p.add_argument("--policy", choices=("raise", "drop", "fill"), default="raise",
                   help=data_cli.POLICY_HELP)
    p.add_argument("--calendar", choices=("auto", "24/7", "sessions"), default="auto",
                   help="how to judge gaps in the data (default: guess from the data)")


# --- paper trading and the runner's control commands --------------------------------------


def _check_symbol(symbol: str) -> str:
    base, sep, quote = symbol.partition("/")
    if not sep or not base or not quote:
        raise ValueError(f"--symbol {symbol!r}: give a unified symbol BASE/QUOTE, e.g. BTC/USDT")
    return symbol


@dataclass
class TradeRun:
    """What ``tradpal paper`` / ``tradpal live`` runs, built and checked by :func:`build_run`
    before any runner starts: the runner's parts, and for live the credentials (to mask them
    in every log line and error) and the cap the broker enforces."""

    mode: str  # "paper" or "live"
    strategy: Any
    symbols: list[str]
    settings: Any  # SimSettings
    exchange: Any  # the ccxt exchange (with credentials in live mode)
    broker: Any  # PaperBroker or CcxtBroker
    gate: Any  # live.confirm.OrderGate with --confirm-orders, else None
    credentials: Any  # framework.exchange.Credentials (empty for paper)
    max_order_notional: float | None
    services: Any  # live.service.ServiceOptions: bus, metrics and control API around the runner

    def redact(self, text: str) -> str:
        return self.credentials.redact(text)


def _optional_number(option: str, text: str | None, *, low: float, high: float | None = None) -> float | None:
    """``--max-order-notional 500`` / ``off``: a number in range, or None for off."""
    if text is None or text.strip().lower() in ("off", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > low and (high is None or value < high)):
        bounds = f"> {low:g}" + ("" if high is None else f" and < {high:g}")
        raise ValueError(f"{option} takes a number {bounds}, or off; got {text!r}")
    return value


def _trade_settings(args: argparse.Namespace, strategy):
    """The run's SimSettings. Live: :data:`live.confirm.LIVE_SETTING_DEFAULTS` (daily loss
    limit) under the strategy's ``sim_defaults``, ``--set`` and ``--daily-loss``; paper: the
    backtest's defaults."""
    from framework.settings import SimSettings
    from live.confirm import LIVE_SETTING_DEFAULTS

    overrides = settings_from_pairs(args.set)
    base = dict(strategy.sim_defaults)
    if args.command == "live":
        base = {**LIVE_SETTING_DEFAULTS, **base}
        if args.daily_loss is not None:
            if "daily_loss" in overrides:
                raise ValueError("--daily-loss and --set daily_loss both given; give one")
            overrides["daily_loss"] = _optional_number("--daily-loss", args.daily_loss, low=0.0, high=1.0)
    return SimSettings.build(base, **overrides)


def _order_gate(args: argparse.Namespace):
    """``--confirm-orders [auto|prompt|control]``: an OrderGate, or None without the option."""
    from live.confirm import OrderGate, terminal_ask

    if args.confirm_orders is None:
        return None
    if args.approval_timeout <= 0:
        raise ValueError(f"--approval-timeout must be a number of seconds > 0, got {args.approval_timeout}")
    how = args.confirm_orders
    if how == "auto":
        how = "prompt" if sys.stdin.isatty() else "control"
    if how == "prompt" and not sys.stdin.isatty():
        raise ValueError("--confirm-orders=prompt needs a terminal on stdin; use "
                         "--confirm-orders=control (tradpal runner approve|reject or the control API)")
    return OrderGate(args.approval_timeout, ask=terminal_ask() if how == "prompt" else None)


def _live_summary(args: argparse.Namespace, run: TradeRun, balances: dict) -> str:
    """What the typed confirmation shows: venue, account, symbols, sizing, caps, approvals."""
    s = run.settings
    assets = sorted({sym.split("/")[1].split(":")[0] for sym in run.symbols}
                    | {sym.split("/")[0] for sym in run.symbols})
    held = ", ".join(f"{a} {balances[a].free:g} free / {balances[a].total:g} total"
                     for a in assets if a in balances) or "none of " + ", ".join(assets)
    sizing = {"fraction": f"{s.size * 100:g}% of equity (~{s.size * s.init_cash:,.2f} at start)",
              "cash": f"{s.size:,.2f} per entry"}.get(s.sizing, f"{s.sizing} {s.size:g}")
    cap = run.max_order_notional
    cap_text = "OFF" if cap is None else f"{cap:,.2f} quote per order, exits excepted (--max-order-notional)"
    loss_text = ("OFF" if s.daily_loss is None
                 else f"{s.daily_loss:.1%} of the day's opening equity: flatten, no entries until the next UTC day")
    approvals = (f"every order waits (--confirm-orders); unapproved after {args.approval_timeout:g} s it expires"
                 if run.gate is not None else "none: orders are sent as the strategy decides")
    lines = [
        "LIVE TRADING: real orders with real money",
        f"  exchange   {args.exchange}" + (f" at {args.exchange_url}" if args.exchange_url else ""),
        f"  account    credentials from {run.credentials.source}; balances: {held}",
        f"  strategy   {run.strategy!r} on {', '.join(run.symbols)} {args.timeframe}",
        f"  sizing     {sizing}; equity the strategy sizes from: init_cash {s.init_cash:,.2f}",
        f"  order cap  {cap_text}",
        f"  daily loss {loss_text}",
        f"  drawdown   {'off' if s.max_drawdown is None else f'{s.max_drawdown:.1%} (halt)'}",
        f"  approvals  {approvals}",
        f"  state      {args.state} (run id {args.run_id})",
    ]
    if cap is not None and s.sizing in ("fraction", "cash"):
        first = s.size * s.init_cash if s.sizing == "fraction" else s.size
        if first > cap:
            lines.append(f"  WARNING    entries of ~{first:,.2f} exceed the order cap and will be rejected: "
                         "lower --set size=..., or raise --max-order-notional")
    return "\n".join(lines)


def build_run(args: argparse.Namespace, *, stdin=None, out=None) -> TradeRun:
    """Check the options of ``tradpal paper`` / ``tradpal live`` and build the run's parts.

    Live: ``--live`` and the ``--yes`` rule first (refused before any request), then the
    credentials (``--credentials-file`` or the environment), the exchange, a signed balance
    read that proves the credentials and shows the account, and the typed confirmation (read
    from ``stdin``, shown on ``out``). Nothing is traded here; the caller starts the runner."""
    from framework.data import timeframe_to_ms
    from framework.exchange import Credentials, create_exchange, load_credentials
    from framework.orders import check_run_id
    from live.confirm import check_live_flags, confirm_live
    from live.service import ServiceOptions

    live = args.command == "live"
    if live:
        check_live_flags(args.live, args.yes)
    cls = _strategy_class(args)
    strategy = cls.from_strings(args.param or [])
    symbols = [_check_symbol(s) for s in args.symbol]
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"--symbol: {symbols} repeats a symbol; give each once")
    try:
        timeframe_to_ms(args.timeframe)
    except ValueError as e:
        raise ValueError(f"--timeframe {args.timeframe!r}: {e}") from None
    for option, value, low in (("--max-bars", args.max_bars, 0), ("--warmup", args.warmup, 1),
                               ("--commit-every", args.commit_every, 1)):
        if value is not None and value < low:
            raise ValueError(f"{option} must be a whole number >= {low}, got {value}")
    if args.poll <= 0:
        raise ValueError(f"--poll must be a number of seconds > 0, got {args.poll}")
    for option, path, suffix in (("--fills-out", args.fills_out, ".csv"), ("--summary-out", args.summary_out, ".json")):
        if path and Path(path).suffix.lower() != suffix:
            raise ValueError(f"{option} {path}: the file name must end in {suffix}")
    try:
        check_run_id(args.run_id)
    except ValueError as e:
        raise ValueError(str(e).replace("run_id", "--run-id")) from None
    services = ServiceOptions.from_args(args)  # a weak API secret stops us here
    settings = _trade_settings(args, strategy)
    gate = _order_gate(args)
    cap = _optional_number("--max-order-notional", args.max_order_notional, low=0.0) if live else None
    credentials = Credentials()
    if live:
        credentials = load_credentials(args.exchange, args.credentials_file)
        if not credentials.get("apiKey") or not credentials.get("secret"):
            upper = args.exchange.upper()
            raise ValueError(f"no API credentials for {args.exchange}: give --credentials-file PATH, or set "
                             f"TRADPAL_API_KEY and TRADPAL_API_SECRET (or TRADPAL_{upper}_API_KEY and "
                             f"TRADPAL_{upper}_SECRET); nothing was sent")
    try:
        exchange = create_exchange(args.exchange, url=args.exchange_url, credentials=credentials)
    except ValueError as e:
        raise ValueError(f"--exchange: {e}") from None
    if not live:
        from live.runner import PaperBroker

        return TradeRun("paper", strategy, symbols, settings, exchange, PaperBroker(), gate, credentials, None, services)
    from live.ccxt_broker import CcxtBroker

    run = TradeRun("live", strategy, symbols, settings, exchange,
                   CcxtBroker(exchange, max_order_notional=cap), gate, credentials, cap, services)
    balances = _account_balances(run)
    confirm_live(_live_summary(args, run, balances), args.exchange, yes=args.yes, stdin=stdin, out=out)
    return run


def _account_balances(run: TradeRun) -> dict:
    """The account's balances (a signed read: proves the credentials before the question).
    Refused credentials are a ValueError (exit 2); an exchange that cannot be reached is an
    ``ExchangeAccessError`` (exit 1). Both messages are masked."""
    import ccxt

    from framework.exchange import ExchangeAccessError

    try:
        return run.broker.balance()
    except (ccxt.AuthenticationError, ccxt.PermissionDenied, ccxt.AccountSuspended) as e:
        raise ValueError(f"{run.exchange.id} refused the credentials from {run.credentials.source} "
                         f"({type(e).__name__}: {run.redact(str(e))}); nothing was sent") from None
    except (ExchangeAccessError, ccxt.BaseError) as e:
        raise ExchangeAccessError(f"reading the account's balances failed ({type(e).__name__}: "
                                  f"{run.redact(str(e))}); nothing was sent") from None


def _check_state_mode(store, mode: str) -> None:
    """A state directory belongs to one mode: a paper run's (simulated) positions must never
    be resumed with real orders, nor a live run's on paper."""
    stored = store.get_flag("mode", "paper" if store.get_flag("run") is not None else None)
    if stored not in (None, mode):
        raise ValueError(f"{store.state_dir} holds a {stored} run; a {mode} run needs its own "
                         "state directory")


def cmd_trade(args: argparse.Namespace) -> int:
    """``tradpal paper`` and ``tradpal live``: one run for both (see :func:`build_run`). In
    live mode every log line and error passes through the credentials' redaction."""
    import logging

    from framework.exchange import ExchangeAccessError, RedactingFilter

    try:
        run = build_run(args)
    except ExchangeAccessError as e:  # the exchange could not be reached: not a usage error
        print(f"tradpal: error: {e}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if run.credentials:
        for handler in logging.getLogger().handlers:
            handler.addFilter(RedactingFilter(run.credentials))
    try:
        return _run_trade(args, run)
    except (ValueError, TypeError, FileNotFoundError) as e:  # main prints these in one line
        raise ValueError(run.redact(str(e))) from None
    except Exception:
        if not run.credentials:
            raise
        import traceback  # a live run's unexpected failure: its traceback, secrets masked

        print(run.redact(traceback.format_exc()), file=sys.stderr, end="")
        return 1


def _run_trade(args: argparse.Namespace, run: TradeRun) -> int:
    import signal

    from framework.download import DownloadError
    from live.feed import open_feed
    from live.runner import COMMIT_EVERY, LiveRunner
    from live.service import RunnerServices
    from live.store import RunnerLockedError, StateStore

    feed = open_feed(run.exchange, run.symbols, args.timeframe, mode=args.feed, url=args.exchange_url)
    try:
        store = StateStore(args.state)
        _check_state_mode(store, run.mode)
    except (OSError, ValueError) as e:
        feed.close()
        raise ValueError(f"--state: {e}") from None
    try:
        runner = LiveRunner(run.strategy, run.broker, feed, run.settings, store, warmup_bars=args.warmup,
                            run_id=args.run_id, poll_s=args.poll, commit_every=args.commit_every or COMMIT_EVERY,
                            **({"order_gate": run.gate} if run.gate is not None else {}),
                            **({"protective": args.protective} if run.mode == "live" else {}))
    except (ValueError, TypeError) as e:
        feed.close()
        store.close()
        raise ValueError(str(e)) from None
    previous = runner.install_signal_handlers()
    services = RunnerServices(runner, run.services)
    try:
        services.start()  # the runner starts (restore or warm up), then bus, metrics and API
        if store.get_flag("mode") is None:
            store.set_flag("mode", run.mode)
        runner.run(max_bars=args.max_bars)
        summary = runner.summary()
        if args.fills_out:
            write_fills_csv(runner.fills_frame(), args.fills_out)
        if args.summary_out:
            Path(args.summary_out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.summary_out).write_text(json.dumps(summary, indent=1) + "\n")
    except RunnerLockedError as e:
        print(f"tradpal: error: --state: {e}", file=sys.stderr)
        return 1
    except (DownloadError, OSError) as e:
        print(f"tradpal: error: {type(e).__name__}: {run.redact(str(e))}", file=sys.stderr)
        return 1
    finally:
        services.stop(runner.stop_reason or "finished")
        runner.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"{run.strategy!r} {run.mode} on {', '.join(run.symbols)} {args.timeframe}: {summary['live_bars']} "
          f"live bars ({summary['trade_from']} .. {summary['last_bar']}), {summary['fills']} fills, equity "
          f"{summary['equity']:.2f}{', HALTED' if summary['halted'] else ''}"
          f"{', PAUSED' if summary['paused'] else ''}")
    return 0


def _control_store(args: argparse.Namespace):
    from live.store import StateStore

    try:
        return StateStore(args.state, create=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"--state: {e}") from None


def cmd_runner_status(args: argparse.Namespace) -> int:
    with _control_store(args) as store:
        print(json.dumps(store.status(), indent=1))
    return 0


_REQUEST_KINDS = {"stop": "emergency_stop", "reset": "reset", "pause": "pause", "resume": "resume",
                  "approve": "approve_order", "reject": "reject_order"}


def cmd_runner_request(args: argparse.Namespace) -> int:
    """``runner stop | reset | pause | resume | approve | reject``: post the request; wait
    for a running runner's answer. An order is approved or rejected only while it waits (status created)."""
    kind = _REQUEST_KINDS[args.runner_command]
    if args.wait < 0:
        raise ValueError(f"--wait must be a number of seconds >= 0, got {args.wait}")
    with _control_store(args) as store:
        extra: dict[str, Any] = {}
        if kind in ("approve_order", "reject_order"):
            order = store.order(args.client_order_id)
            if order is None:
                raise ValueError(f"CLIENT_ORDER_ID {args.client_order_id!r}: no such order in {args.state} "
                                 "(see `tradpal runner status`)")
            if order.status != "created":
                raise ValueError(f"CLIENT_ORDER_ID {args.client_order_id!r} is {order.status}: only an "
                                 "order waiting for approval (created) can be approved or rejected")
            extra = {"client_order_id": args.client_order_id}
            if args.reason:
                extra["reason"] = args.reason
        rid = store.request(kind, by="tradpal runner " + args.runner_command, **extra)
        pid = store.runner_pid()
        if pid is None:
            print(f"posted {kind} request {rid}; no runner is running on {args.state}: the next "
                  "start handles it before trading")
            return 0
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            req = store.get_request(rid)
            if req is not None and req.handled_ms is not None:
                print(json.dumps({"request": rid, "kind": kind, "result": req.result}))
                ok = isinstance(req.result, dict) and req.result.get("ok", False)
                return 0 if ok else 1
            time.sleep(0.1)
        print(f"posted {kind} request {rid}; the runner (pid {pid}) has not handled it within "
              f"{args.wait:g} s: see `tradpal runner status --state {args.state}`")
        return 0


def _add_trade_options(p: argparse.ArgumentParser, mode: str) -> None:
    """The options ``paper`` and ``live`` share."""
    from live.service import add_service_options

    p.add_argument("strategy", nargs="?", metavar="STRATEGY",
                   help="a strategy name (see `tradpal strategies`) or path/to/file.py:ClassName")
    p.add_argument("--strategy", dest="strategy_option", metavar="FILE.py:CLASS",
                   help="your own Strategy subclass from a file (instead of STRATEGY)")
    p.add_argument("--exchange", required=True, help="ccxt exchange id, e.g. binance")
    p.add_argument("--symbol", action="append", required=True, metavar="BASE/QUOTE",
                   help="unified symbol, e.g. BTC/USDT; repeat for several (one shared cash pool)")
    p.add_argument("--timeframe", required=True, help="candle length, e.g. 1h")
    p.add_argument("--exchange-url", metavar="URL",
                   help="send API requests here, e.g. the local exchange http://127.0.0.1:8765")
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="strategy parameter (repeatable)")
    p.add_argument("--set", action="append", metavar="SETTING=VALUE", help="simulator setting (repeatable)")
    p.add_argument("--state", required=True, metavar="DIR",
                   help="the run's state directory; the same command with it resumes the run")
    p.add_argument("--max-bars", type=int, metavar="N",
                   help="stop once the run has N live bars in all (counted across restarts)")
    p.add_argument("--warmup", type=int, default=500, metavar="N",
                   help="closed bars of history stepped without trading before the first live bar (default 500)")
    p.add_argument("--run-id", default=mode, metavar="ID",
                   help=f"the run's part of every client order id (default {mode})")
    p.add_argument("--feed", choices=("rest", "ws", "auto"), default="rest",
                   help="candles by REST polling (default), websocket, or websocket where ccxt.pro has it")
    p.add_argument("--poll", type=float, default=0.5, metavar="SECONDS",
                   help="longest wait for a bar before control requests are looked at (default 0.5)")
    p.add_argument("--commit-every", type=int, metavar="N",
                   help="while catching up on closed bars, commit at least every N bars: a crash "
                   "replays at most N (default 1000; once caught up, "
                   "every bar is committed)")
    p.add_argument("--fills-out", metavar="FILE.csv", help="at the end, every fill of the run as CSV")
    p.add_argument("--summary-out", metavar="FILE.json",
                   help="at the end, the run's summary: first_bar, trade_from, last_bar, fills, equity, ...")
    p.add_argument("--confirm-orders", nargs="?", const="auto", choices=("auto", "prompt", "control"),
                   metavar="prompt|control",
                   help="every order waits for approval: y/n on the terminal (prompt; the default "
                   "with a terminal) or `tradpal runner approve|reject` / the control API (control); "
                   "live only (paper fills inside the step)")
    p.add_argument("--approval-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="an order not approved within this time expires (default 60)")
    add_service_options(p)
    p.set_defaults(func=cmd_trade)


def register_live(sub) -> None:
    """``paper``, ``live`` and ``runner status | stop | reset | approve | reject``."""
    from live.confirm import DEFAULT_MAX_ORDER_NOTIONAL, LIVE_CONFIRM_ENV, LIVE_SETTING_DEFAULTS

    p = sub.add_parser("paper", help="paper-trade a strategy on an exchange's live candles")
    _add_trade_options(p, "paper")

    p = sub.add_parser("live", help="trade a strategy with real orders (needs --live and a typed confirmation)")
    _add_trade_options(p, "live")
    p.add_argument("--live", action="store_true",
                   help="really trade: without it `tradpal live` refuses and sends nothing")
    p.add_argument("--yes", action="store_true",
                   help=f"skip the typed confirmation; only with {LIVE_CONFIRM_ENV}=1 in the environment")
    p.add_argument("--credentials-file", metavar="PATH",
                   help="API key and secret: JSON or key=value (api_key=, api_secret=), mode 600, "
                   "outside any git work tree (default: TRADPAL_API_KEY / TRADPAL_API_SECRET)")
    p.add_argument("--protective", choices=("exchange", "watch"), default="exchange",
                   help="a position's stop (or lone take-profit) rests on the exchange as a stop order "
                   "where the exchange takes them (exchange, the default), or the runner watches "
                   "them and sends a market order when a bar crosses the level (watch)")
    p.add_argument("--max-order-notional", default=str(DEFAULT_MAX_ORDER_NOTIONAL), metavar="AMOUNT|off",
                   help="largest order (quote currency) sent, exits excepted "
                   f"(default {DEFAULT_MAX_ORDER_NOTIONAL:g})")
    p.add_argument("--daily-loss", metavar="FRACTION|off",
                   help="flatten and stop entering for the UTC day after this loss (default "
                   f"{LIVE_SETTING_DEFAULTS['daily_loss']:g}; also --set daily_loss=...)")

    p = sub.add_parser("runner", help="status, emergency stop, reset or order approval of a runner")
    rsub = p.add_subparsers(dest="runner_command", required=True)
    q = rsub.add_parser("status", help="the runner's state as JSON")
    q.add_argument("--state", required=True, metavar="DIR", help="the runner's state directory")
    q.set_defaults(func=cmd_runner_status)
    for name, text in (("stop", "emergency stop: cancel orders, exit every position, halt (survives restarts)"),
                       ("reset", "lift an emergency stop once flat"),
                       ("pause", "no new entries (exits and stops still managed) until resumed; survives restarts"),
                       ("resume", "allow new entries again after a pause"),
                       ("approve", "send an order waiting for approval (--confirm-orders)"),
                       ("reject", "drop an order waiting for approval (--confirm-orders)")):
        q = rsub.add_parser(name, help=text)
        q.add_argument("--state", required=True, metavar="DIR", help="the runner's state directory")
        if name in ("approve", "reject"):
            q.add_argument("client_order_id", metavar="CLIENT_ORDER_ID",
                           help="the order's client order id (see `tradpal runner status`)")
            q.add_argument("--reason", metavar="TEXT", help="why, kept with the decision")
        q.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                       help="how long to wait for a running runner's answer (default 10)")
        q.set_defaults(func=cmd_runner_request)


def register_research(sub) -> None:
    """``strategies``, ``backtest`` and ``sweep``."""
    p = sub.add_parser("strategies", help="list strategies and their parameters")
    p.set_defaults(func=cmd_strategies)

    p = sub.add_parser("backtest", help="backtest a strategy and print its stats beside buy-and-hold")
    _add_run_options(p)
    p.add_argument("--out", metavar="FILE", help="save stats, trades, orders, fills and equity: FILE.json "
                   "(one object) or FILE.csv / FILE.parquet (FILE.stats.csv, FILE.trades.csv, ...)")
    p.add_argument("--json", action="store_true",
                   help="print the stats (strategy and benchmark) as one JSON object, nothing else")
    p.add_argument("--benchmark", metavar="B", help="compare with buy-and-hold of B: an instrument of "
                   "--data, a bundled dataset or a CSV/Parquet file (default: buy-and-hold of --data)")
    p.add_argument("--trade-from", metavar="TIME", help="first bar whose close may place orders "
                   "(ISO, UTC); the bars before only warm up, as a live runner's warm-up")
    p.add_argument("--run-id", default="backtest", metavar="ID",
                   help="the run's part of every client order id (default backtest)")
    p.add_argument("--fills-out", metavar="FILE.csv", help="save every fill as CSV: timestamp,"
                   "symbol,side,qty,price,fee,client_order_id,order_type,reason")
    p.set_defaults(func=cmd_backtest)

    p = sub.add_parser("sweep", help="backtest every combination of a parameter grid (on each --data)")
    _add_run_options(p)
    p.add_argument("--grid", action="append", required=True, metavar="NAME=RANGE",
                   help="values to try: start:stop:step (stop included), e.g. fast=5:50:5, or a "
                   "list, e.g. fast=5,10,20 (repeat for each parameter)")
    p.add_argument("--sort", default="sharpe", metavar="METRIC",
                   help="order by this statistic, best first (default sharpe)")
    p.add_argument("--top", type=int, metavar="N", help="keep the best N (default: print 20, save all)")
    p.add_argument("--out", metavar="FILE", help="save the table: FILE.csv, FILE.json or FILE.parquet")
    p.set_defaults(func=cmd_sweep)


def _register_report(sub) -> None:
    from framework import report  # the plotting stack

    report.register(sub)  # report STRATEGY --data ... --out report.html


def _register_api(sub) -> None:
    from live import api_cli

    api_cli.register(sub)  # api token, api serve, audit verify


def _register_events(sub) -> None:
    from live import events_cli

    events_cli.register(sub)  # events tail, events journal


#: the command groups of the parser, each with the commands it adds: a command is parsed by its
#: group alone, so ``tradpal backtest`` does not import the live runner, ccxt, redis or plotly
_GROUPS = (
    (("strategies", "backtest", "sweep"), register_research),
    (("paper", "live", "runner"), register_live),
    (("data", "exchange"), data_cli.register),
    (("report",), _register_report),
    (("api", "audit"), _register_api),
    (("events",), _register_events),
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``tradpal`` parser: every command, or only the group of ``command`` when that is one
    of them (what ``main`` parses with: starting a command imports what it needs, no more)."""
    parser = _Parser(prog="tradpal", description="TradPal: research to live trading.")
    sub = parser.add_subparsers(dest="command", required=True)
    owners = [register for commands, register in _GROUPS if command in commands]
    for register in owners or [register for _, register in _GROUPS]:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that went away shows here, not as a traceback at exit
        return code
    except BrokenPipeError:
        # `tradpal ... | head -1`: the reader stopped early; send what is left nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as for a tool killed by the signal
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"tradpal: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
