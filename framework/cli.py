"""The ``tradpal`` command.

    tradpal strategies
    tradpal backtest STRATEGY --data PATH_OR_NAME [--param name=value ...] [--set setting=value ...]
                     [--policy raise|drop|fill] [--calendar auto|24/7|sessions]
    tradpal data fetch | data check | exchange serve   (see framework.data_cli)

Exit codes: 0 ok, 1 data problems or a failed download, 2 bad usage, 130 interrupted, 141 the
reader of the output went away (``tradpal data check F | head -1``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import fields
from typing import Any

from framework import data_cli
from framework.settings import SimSettings


def _parse_setting(pair: str) -> tuple[str, Any]:
    """``fees=0.001`` -> ("fees", 0.001), typed by the SimSettings field it names."""
    key, sep, text = pair.partition("=")
    key = key.strip()
    types = {f.name: f.type for f in fields(SimSettings)}
    if not sep or key not in types:
        raise ValueError(
            f"--set expects setting=value with one of: {', '.join(types)}; got {pair!r}"
        )
    kind = str(types[key])
    text = text.strip()
    if text.lower() in ("none", "off"):
        return key, None
    if "bool" in kind:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"setting {key!r} takes true or false, got {text!r}")
        return key, text.lower() in ("true", "1", "yes")
    if "str" in kind:
        return key, text
    try:
        return key, int(text) if "int" in kind and "float" not in kind else float(text)
    except ValueError:
        raise ValueError(f"setting {key!r} takes a number, got {text!r}") from None


def cmd_strategies(args: argparse.Namespace) -> int:
    from strategies import STRATEGIES

    for name, cls in sorted(STRATEGIES.items()):
        print(f"{name}: {(cls.__doc__ or '').strip().splitlines()[0]}")
        for pname, param in cls.param_spec().items():
            print(f"    {pname:<14} default {param.default!s:<8} {param.range_text():<28} {param.doc}")
        if cls.indicators:
            print(f"    indicators: {', '.join(cls.indicators)}")
        if cls.sim_defaults:
            shown = ", ".join(f"{k}={v}" for k, v in cls.sim_defaults.items())
            print(f"    (runs with {shown} unless overridden)")
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    from framework.backtest import Backtest
    from framework.data import DataValidationError
    from strategies import get_strategy

    cls = get_strategy(args.strategy)
    strategy = cls.from_strings(args.param or [])
    settings = dict(_parse_setting(s) for s in (args.set or []))
    started = time.perf_counter()
    try:
        bt = Backtest(strategy, args.data, policy=args.policy, calendar=args.calendar, **settings)
    except DataValidationError as e:  # advice in this interface's words (--policy, not policy=)
        raise ValueError(data_cli.validation_advice(e, args.data)) from None
    result = bt.run()
    elapsed = time.perf_counter() - started
    print(f"{strategy!r} on {args.data} ({len(bt.index):,} bars, "
          f"{bt.index[0]:%Y-%m-%d %H:%M} to {bt.index[-1]:%Y-%m-%d %H:%M} UTC)")
    print(result.stats_table())
    print(f"\n{len(result.orders)} fills, {len(result.trades)} trades; ran in {elapsed:.2f} s "
          "(first run includes compiling the kernels, cached on disk afterwards)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tradpal", description="TradPal: research to live trading.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("strategies", help="list strategies and their parameters")
    p.set_defaults(func=cmd_strategies)

    p = sub.add_parser("backtest", help="backtest a strategy and print its stats beside buy-and-hold")
    p.add_argument("strategy", help="strategy name (see `tradpal strategies`)")
    p.add_argument("--data", required=True, help="CSV/Parquet path or bundled dataset name, e.g. BTC_USDT-1d")
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="strategy parameter (repeatable)")
    p.add_argument("--set", action="append", metavar="SETTING=VALUE",
                   help="simulator setting, e.g. fees=0.001 sl_pct=0.05 allow_short=true (repeatable)")
    p.add_argument("--policy", choices=("raise", "drop", "fill"), default="raise",
                   help=data_cli.POLICY_HELP)
    p.add_argument("--calendar", choices=("auto", "24/7", "sessions"), default="auto",
                   help="how to judge gaps in the data (default: guess from the data)")
    p.set_defaults(func=cmd_backtest)

    data_cli.register(sub)  # data fetch, data check, exchange serve
    __import__("framework.report").report.register(sub)  # report (framework.report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
