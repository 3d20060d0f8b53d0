"""``tradpal data fetch``, ``tradpal data check`` and ``tradpal exchange serve``.

Wired into ``framework.cli`` by :func:`register`; every handler takes the parsed arguments and
returns the process exit code (0 ok, 1 data problems or a failed download, 2 bad usage,
130 a download interrupted with Ctrl-C, after saving the candles fetched so far).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys
import threading
from pathlib import Path

# keyword of LocalExchange -> the serve option that sets it (errors name the option)
_SERVE_OPTIONS = {"fee_rate": "--fee", "spread": "--spread", "balances": "--balance", "speed": "--speed",
                  "port": "--port", "host": "--host", "clock": "--clock", "start": "--start",
                  "min_notional": "--min-notional",
                  "max_requests": "--max-requests", "control_token": "$TRADPAL_LOCAL_CONTROL_TOKEN"}
POLICY_HELP = ("what to do with rows that fail validation: raise (default: stop and report), "
               "drop (drop them, sort out-of-order rows, keep the first of duplicates; gaps "
               "stay) or fill (as drop, then fill bad rows and missing candles with flat ones)")


def validation_advice(error, source: str) -> str:
    """A ``DataValidationError`` in command-line words: the findings, then the options that
    repair them and the command that lists them all."""
    if not error.repairable:  # a structural problem (no rows, missing columns): nothing to pass
        return error.findings
    return (f"{error.findings}. Fix the file, or pass --policy drop to drop the offending rows "
            "(and sort out-of-order ones) or --policy fill to repair them and fill missing "
            f"candles with flat ones; `tradpal data check {source}` lists every finding.")


def register(subparsers) -> None:
    """Add the ``data`` and ``exchange`` command groups to the ``tradpal`` parser."""
    data = subparsers.add_parser("data", help="download, cache and check OHLCV data")
    data_sub = data.add_subparsers(dest="data_command", required=True)

    p = data_sub.add_parser("fetch", help="download candles through ccxt into the cache")
    p.add_argument("--exchange", required=True, help="ccxt exchange id, e.g. binance")
    p.add_argument("--symbol", required=True, help="unified symbol, e.g. BTC/USDT")
    p.add_argument("--timeframe", required=True, help="ccxt timeframe, e.g. 1h")
    p.add_argument("--since", required=True, help="first candle, ISO date/time (UTC), e.g. 2023-01-01")
    p.add_argument("--until", help="stop before this time (UTC; default: the last closed candle)")
    p.add_argument("--exchange-url", help="send API requests here instead, e.g. the local "
                   "exchange at http://127.0.0.1:8765")
    p.add_argument("--cache-dir", help="cache root (default data/cache or $TRADPAL_CACHE_DIR)")
    p.add_argument("--retries", type=int, default=5, help="retries per request on network errors")
    p.add_argument("--max-delay", type=float, default=60.0, metavar="SECONDS",
                   help="longest wait between retries (default 60); a server asking to wait "
                   "longer (Retry-After) stops the download, keeping what was fetched")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_fetch)

    p = data_sub.add_parser("check", help="validate an OHLCV file and print the report")
    p.add_argument("path", help="a .csv or .parquet file, or a bundled dataset name")
    p.add_argument("--calendar", choices=("auto", "24/7", "sessions"), default="auto",
                   help="how to judge gaps (default: guess from the data)")
    p.add_argument("--strict", action="store_true", help="treat warnings (spikes) as problems")
    p.add_argument("--spike-threshold", type=float, default=None,
                   help="outlier threshold in robust standard deviations (default 25)")
    p.add_argument("--policy", choices=("raise", "drop", "fill"), default="raise",
                   help="also show what loading with this policy would change (the file is "
                   "never changed); " + POLICY_HELP)
    p.set_defaults(func=cmd_check)

    exch = subparsers.add_parser("exchange", help="the local replaying exchange")
    exch_sub = exch.add_subparsers(dest="exchange_command", required=True)
    p = exch_sub.add_parser("serve", help="serve a dataset over Binance's REST API on 127.0.0.1")
    p.add_argument("--data", required=True, help="file or folder named like BTC_USDT-1h.csv, or a "
                   "bundled dataset name")
    p.add_argument("--port", type=int, default=8765, help="TCP port (0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--start", help="replay start time (UTC); default the end of the data")
    p.add_argument("--clock", choices=("stepped", "realtime", "fast"), default="realtime",
                   help="how replay time moves (default realtime)")
    p.add_argument("--speed", type=float, default=1.0, help="realtime speed-up, e.g. 60")
    p.add_argument("--keys", help="JSON file {\"API_KEY\": \"SECRET\"} of accepted keys (made "
                   "private, mode 0600); also $TRADPAL_LOCAL_API_KEY/$TRADPAL_LOCAL_SECRET. Without "
                   "either, the pair in ~/.config/tradpal/local-exchange-keys.json (created once)")
    p.add_argument("--balance", action="append", default=None, metavar="ASSET=AMOUNT",
                   help="starting balance of each account (repeatable; default USDT=10000)")
    p.add_argument("--fee", type=float, default=0.001, help="fee as a fraction (0.001 = 0.1%%), in [0, 1)")
    p.add_argument("--spread", type=float, default=0.0,
                   help="bid-ask spread as a fraction of price, in [0, 1)")
    p.add_argument("--min-notional", type=float, default=5.0, metavar="AMOUNT",
                   help="smallest order value in the quote asset (MIN_NOTIONAL filter; default 5)")
    p.add_argument("--max-requests", type=int, default=10_000, metavar="N",
                   help="requests kept in the log of /_tradpal/requests (default 10000)")
    p.set_defaults(func=cmd_serve)


def cmd_fetch(args: argparse.Namespace) -> int:
    from framework.download import DownloadError, RetryPolicy, create_exchange, download_ohlcv

    try:
        exchange = create_exchange(args.exchange, url=args.exchange_url)
        result = download_ohlcv(
            exchange, args.symbol, args.timeframe, args.since, args.until,
            cache_dir=args.cache_dir,
            retry=RetryPolicy(max_retries=args.retries, max_delay_s=args.max_delay),
            progress=False if args.no_progress else None)
    except (DownloadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # the candles fetched so far are saved (see the note)
        print("interrupted", *getattr(e, "__notes__", ()), sep="\n", file=sys.stderr)
        return 130
    except Exception as e:  # ccxt errors that retrying cannot fix (bad symbol, auth, ...)
        print(f"error: {type(e).__name__}: {e}", *getattr(e, "__notes__", ()), sep="\n",
              file=sys.stderr)
        return 1
    print(f"fetched {result.fetched} new candle(s) in {result.requests} request(s); "
          f"{len(result.data)} candle(s) in range")
    print(f"cache: {result.path}")
    if result.holes:
        missing = sum(_slots(a, b, args.timeframe) for a, b in result.holes)
        spans = ", ".join(f"{_iso(a)} to {_iso(b)}" for a, b in result.holes[:3])
        more = f" and {len(result.holes) - 3} more" if len(result.holes) > 3 else ""
        print(f"the exchange sent no candle for {missing} candle time(s) in {len(result.holes)} "
              f"range(s) ({spans}{more}); they are not marked as cached, so running the same "
              "command again asks for them again")
    if not result.report.ok or result.report.warnings:
        print(result.report.summary())
    return 0


def _slots(start_ms: int, end_ms: int, timeframe: str) -> int:
    """Candle open times of ``timeframe`` in ``[start_ms, end_ms)`` (months: an estimate)."""
    from framework.data import timeframe_to_ms

    tf = timeframe_to_ms(timeframe)
    return -(-end_ms // tf) - (-(-start_ms // tf))


def _iso(ms: int) -> str:
    import pandas as pd

    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()


def cmd_check(args: argparse.Namespace) -> int:
    from framework.data import DataValidationError, read_ohlcv_file, resolve_source, validate_ohlcv

    kwargs = {"calendar": args.calendar, "strict": args.strict}
    if args.spike_threshold is not None:
        kwargs["spike_threshold"] = args.spike_threshold
    try:
        path = resolve_source(args.path)
        frame = read_ohlcv_file(path)
        try:
            _, report = validate_ohlcv(frame, policy=args.policy, name=str(path), **kwargs)
        except DataValidationError as e:
            if not e.repairable:
                raise
            report = e.report  # policy raise: the findings, nothing changed
    except DataValidationError as e:  # a structural problem (no rows, missing columns)
        print(f"error: {e.findings}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    # the actions were done to a copy in memory: say so, never as if the file had changed
    print(dataclasses.replace(report, actions=[]).summary(max_rows=20))
    if args.policy != "raise" and not report.ok:
        print(f"what loading with --policy {args.policy} changes in memory (the file is left as "
              "it is): " + ("; ".join(report.actions) or "nothing, the problems stay"))
    if report.ok:
        print("OK" + (" (with warnings)" if report.warnings else ""))
        return 0
    print("PROBLEMS: fix the file, or load it with --policy drop (drop the bad rows) or "
          "--policy fill (repair them, fill missing candles), e.g. `tradpal backtest STRATEGY "
          f"--data {args.path} --policy drop`; `tradpal data check {args.path} --policy drop` "
          "shows what that changes")
    return 1


def _serve_balances(items: list[str] | None) -> dict[str, float]:
    """``--balance ASSET=AMOUNT`` options as a mapping (amounts are checked by LocalExchange)."""
    if not items:
        return {"USDT": 10_000.0}
    balances = {}
    for item in items:
        asset, sep, amount = item.partition("=")
        try:
            if not sep or not asset.strip():
                raise ValueError
            key = asset.strip().upper()
            if key in balances:
                raise KeyError(key)
            balances[key] = float(amount)
        except KeyError:
            raise ValueError(f"--balance {key} given twice; give each asset once") from None
        except ValueError:
            raise ValueError(f"--balance expects ASSET=AMOUNT, e.g. USDT=10000, got {item!r}") from None
    return balances


def _wait_for_interrupt() -> None:
    threading.Event().wait()  # the server runs in its own thread until Ctrl-C


def cmd_serve(args: argparse.Namespace) -> int:
    from framework.local_exchange import LocalExchange
    from framework.local_exchange.auth import load_api_keys, load_or_create_api_keys
    from framework.local_exchange.checks import SettingError

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    try:
        ex = LocalExchange(args.data, start=args.start, clock=args.clock, speed=args.speed,
                           host=args.host, port=args.port, balances=_serve_balances(args.balance),
                           fee_rate=args.fee, spread=args.spread, min_notional=args.min_notional,
                           max_requests=args.max_requests,
                           control_token=os.environ.get("TRADPAL_LOCAL_CONTROL_TOKEN") or None)
        keys = load_api_keys(args.keys)
        note = None
        if not keys:
            path = Path.home() / ".config" / "tradpal" / "local-exchange-keys.json"
            existed = path.exists()
            keys = load_or_create_api_keys(path)
            note = f"{'using the' if existed else 'generated an'} API key pair in {path} (mode 0600)"
    except SettingError as e:
        return fail(e.describe(_SERVE_OPTIONS.get(e.keyword, e.keyword)))
    except (FileNotFoundError, ValueError) as e:
        return fail(str(e))
    ex.api_keys = keys
    try:
        ex.start()
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, errno.EACCES):
            return fail(f"--port {args.port}: {e.strerror}; choose another port, or --port 0 for any free one")
        return fail(f"--host {args.host}: {e.strerror}; give an address of this machine, e.g. 127.0.0.1")
    if note:
        print(note)
    status = ex.status()
    print(f"local exchange listening on {ex.url} ({', '.join(status['symbols'])}; "
          f"clock {status['mode']}; {len(keys)} API key(s))", flush=True)
    print(f"control token: {ex.control_token}  (X-TradPal-Token header of /_tradpal/* requests)",
          flush=True)
    print(f"point ccxt at it: framework.local_exchange.ccxt_client({ex.url!r}, api_key=..., "
          "secret=...)  — Ctrl-C to stop", flush=True)
    try:
        _wait_for_interrupt()
    except KeyboardInterrupt:
        pass
    finally:
        ex.stop()
    return 0
