"""Live runner speed: bar close to orders handed over, in process, and a paper replay through ccxt.

Framing.

(a) **Latency.** :class:`live.runner.LiveRunner` with the paper broker on ``--symbols`` 1 and 10
synthetic hourly series (``generate_ohlcv``, seed 0), warmed up on ``--warmup`` bars, then
``--bars`` closed bars handed to ``LiveRunner.on_bar`` as prebuilt :class:`live.feed.BarBatch`
objects (no network; the feed holds no backlog, so every bar is committed on its own, as when
the runner is caught up). The clock starts when ``on_bar`` is called, i.e. at the bar's close
as the runner sees it. *Orders ready* is the moment the step's orders exist as the store's order
records, which is when ``on_bar`` calls ``LiveRunner.commit``; *commit* is that call (the bar's
fills, orders, events, cursor and the core's snapshot in one fsync'd SQLite transaction, then
publishing). A broker that sends orders out records them before it hands them over, so the time
to *handed to the broker* is ready + commit; with the ccxt broker mode it is measured the same
way, by timing its submit call after the commit. p50 / p99 / max over the bars, in ms.

(a') **Broker mode.** The same bars through the runner's exchange-broker path with an
in-process broker that acknowledges each order at once and never fills (``RecordingBroker``):
the time from ``on_bar`` being called to each order's ``submit`` call (the bar is committed
first, then its orders go out), p50 / p99 / max over the orders.

(b) **Paper replay.** ``LiveRunner`` on a REST :class:`live.feed.CandleFeed` through ccxt
(``binance`` pointed at the local exchange on a free port, ``fast`` clock) over the bundled
``BTC_USDT-1h`` candles: ``--warmup`` bars of warm-up, then ``--replay`` live bars; wall time
from ``run`` to its return (the warm-up and the process start are not in it), bars per second.

The machine is shared: figures vary by run.

    python research/bench_live.py            # 10,000 bars on 1 and 10 symbols; 35,000-bar replay
    python research/bench_live.py --quick    # 1,000 bars; 2,000-bar replay
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numba  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from framework.data import load_ohlcv  # noqa: E402
from framework.exchange import create_exchange  # noqa: E402
from framework.local_exchange import LocalExchange  # noqa: E402
from framework.settings import SimSettings  # noqa: E402
from framework.synthetic import generate_ohlcv  # noqa: E402
from live.broker import OrderRequest, OrderUpdate  # noqa: E402
from live.feed import BarBatch, CandleFeed  # noqa: E402
from live.runner import LiveRunner, PaperBroker  # noqa: E402
from live.store import StateStore  # noqa: E402
from research.bench_core import cpu_model, table  # noqa: E402
from strategies import STRATEGIES  # noqa: E402

GOAL_P99_MS = 1.0  # bar close to orders handed over (issue 8)
HOUR_MS = 3_600_000


class PrebuiltFeed:
    """The feed side of the runner's contract for the latency run: warm-up history from frames,
    no bars of its own (the bench hands prebuilt batches to ``on_bar``), no backlog."""

    backlog = 0

    def __init__(self, frames: dict[str, pd.DataFrame], warmup: int) -> None:
        self.frames, self.warmup = frames, warmup
        self.symbols, self.timeframe = tuple(frames), "1h"

    def history(self, symbol: str, limit: int | None = None, since_ms=None, until_ms=None) -> pd.DataFrame:
        return self.frames[symbol].iloc[:self.warmup]

    def start_from(self, since_ms: int) -> None:
        pass

    def next_bars(self, timeout_s=None):
        return None

    def close(self) -> None:
        pass


def synthetic_bars(n_symbols: int, n_bars: int, warmup: int) -> tuple[PrebuiltFeed, list[BarBatch]]:
    """``n_symbols`` synthetic hourly series (seed 0): a feed holding the warm-up, and the
    ``n_bars`` closed bars after it as batches for ``LiveRunner.on_bar``."""
    names = [f"S{i}/USDT" for i in range(n_symbols)]
    data = generate_ohlcv(warmup + n_bars, n_symbols, freq="1h", seed=0, names=names)
    frames = data if isinstance(data, dict) else {names[0]: data}
    opens = frames[names[0]].index.as_unit("ms").asi8
    ohlcv = np.stack([f[["open", "high", "low", "close", "volume"]].to_numpy(np.float64) for f in frames.values()],
                     axis=1)
    batches = [BarBatch(int(opens[i]), HOUR_MS, tuple(names), ohlcv[i]) for i in range(warmup, warmup + n_bars)]
    return PrebuiltFeed(frames, warmup), batches


def latency(strategy_name: str, n_symbols: int, n_bars: int, warmup: int, state: Path) -> dict:
    """(a): per-bar times of one runner on ``n_symbols`` synthetic series (see the docstring)."""
    feed, batches = synthetic_bars(n_symbols, n_bars, warmup)
    strategy = STRATEGIES[strategy_name]()
    settings = SimSettings.build(strategy.sim_defaults, cash_sharing=n_symbols > 1)
    runner = LiveRunner(strategy, PaperBroker(), feed, settings, StateStore(state), warmup_bars=warmup, run_id="bench")
    commit, marks = runner.commit, []

    def timed_commit(*args) -> None:  # on_bar calls it once the step's orders exist
        marks.append(time.perf_counter())
        commit(*args)
        marks.append(time.perf_counter())

    runner.commit = timed_commit
    try:
        runner.start()
        marks.clear()  # the warm-up's own commit is not a bar
        ready, committed = np.empty(n_bars), np.empty(n_bars)
        for i, batch in enumerate(batches):
            t0 = time.perf_counter()
            runner.on_bar(batch)
            ready[i] = marks[-2] - t0
            committed[i] = marks[-1] - marks[-2]
        summary = runner.summary()
    finally:
        runner.close()
    handed = ready + committed
    out = {"symbols": n_symbols, "bars": n_bars, "orders": summary["orders"], "fills": summary["fills"]}
    for name, values in (("ready", ready), ("commit", committed), ("handed", handed)):
        ms = values * 1e3
        out.update({f"{name}_p50_ms": round(float(np.percentile(ms, 50)), 4),
                    f"{name}_p99_ms": round(float(np.percentile(ms, 99)), 4),
                    f"{name}_max_ms": round(float(ms.max()), 4)})
    return out


class RecordingBroker:
    """An exchange broker in process for the broker-mode latency run: it records when each
    order is handed to it and acknowledges it at once; nothing ever fills, so the runner's
    whole broker path (commit, then submit) runs without a network in the way."""

    matches_in_step = False

    def __init__(self) -> None:
        self.handed: list[float] = []

    def submit(self, order: OrderRequest) -> OrderUpdate:
        self.handed.append(time.perf_counter())
        return OrderUpdate(order.client_order_id, "submitted")

    def cancel(self, client_order_id: str, symbol: str) -> OrderUpdate:
        return OrderUpdate(client_order_id, "cancelled")

    def fetch_order(self, client_order_id: str, symbol: str) -> OrderUpdate:
        return OrderUpdate(client_order_id, "submitted")

    def fills_since(self, symbol: str, since_ms: int | None) -> list:
        return []

    def open_orders(self, symbol: str | None = None) -> list:
        return []

    def open_order_requests(self, symbol: str) -> list:
        return []

    def balance(self) -> dict:
        return {}


def broker_latency(strategy_name: str, n_symbols: int, n_bars: int, warmup: int, state: Path) -> dict:
    """(a'): bar close to each order handed to the broker, in broker mode (the ccxt broker's
    path in the runner), timed at the broker's ``submit`` call."""
    feed, batches = synthetic_bars(n_symbols, n_bars, warmup)
    strategy = STRATEGIES[strategy_name]()
    broker = RecordingBroker()
    runner = LiveRunner(strategy, broker, feed,
                        SimSettings.build(strategy.sim_defaults, cash_sharing=n_symbols > 1, size=0.5 / n_symbols),
                        StateStore(state), warmup_bars=warmup, run_id="bench")
    delays: list[float] = []
    try:
        runner.start()
        for batch in batches:
            n_before = len(broker.handed)
            t0 = time.perf_counter()
            runner.on_bar(batch)
            delays += [t - t0 for t in broker.handed[n_before:]]
    finally:
        runner.close()
    ms = np.asarray(delays) * 1e3
    return {"symbols": n_symbols, "bars": n_bars, "orders_handed": len(delays),
            **({f"handed_{q}_ms": round(float(np.percentile(ms, p)), 4) for q, p in (("p50", 50), ("p99", 99))}
               if len(ms) else {}),
            "handed_max_ms": round(float(ms.max()), 4) if len(ms) else None}


def replay(strategy_name: str, n_bars: int, warmup: int, state: Path) -> dict:
    """(b): a paper replay through ccxt and the local exchange's fast clock."""
    btc = load_ohlcv("BTC_USDT-1h")
    if warmup + n_bars > len(btc):
        raise ValueError(f"--replay {n_bars} + --warmup {warmup} exceed the {len(btc)} bundled hourly bars")
    btc = btc.iloc[:warmup + n_bars]
    strategy = STRATEGIES[strategy_name]()
    with LocalExchange({"BTC/USDT": btc}, start=btc.index[warmup], clock="fast") as ex:
        feed = CandleFeed(create_exchange("binance", url=ex.url), ["BTC/USDT"], "1h")
        runner = LiveRunner(strategy, PaperBroker(), feed, SimSettings.build(strategy.sim_defaults),
                            StateStore(state), warmup_bars=warmup, run_id="replay")
        try:
            runner.start()
            t0 = time.perf_counter()
            bars = runner.run(max_bars=n_bars)
            wall = time.perf_counter() - t0
            summary, requests = runner.summary(), feed.stats["requests"]
        finally:
            runner.close()
    return {"bars": bars, "wall_s": round(wall, 3), "bars_per_s": round(bars / wall), "requests": requests,
            "fills": summary["fills"], "last_bar": summary["last_bar"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run (1,000 bars; a 2,000-bar replay)")
    ap.add_argument("--bars", type=int, help="bars timed per latency run (default 10,000; quick: 1,000)")
    ap.add_argument("--symbols", default="1,10", help="symbol counts of the latency runs, comma-separated")
    ap.add_argument("--replay", type=int, help="live bars of the paper replay (default 35,000; quick: 2,000)")
    ap.add_argument("--warmup", type=int, default=300, help="warm-up bars before the timed bars")
    ap.add_argument("--strategy", default="sma_cross", choices=sorted(STRATEGIES))
    args = ap.parse_args(argv)
    n_bars = args.bars or (1_000 if args.quick else 10_000)
    n_replay = args.replay or (2_000 if args.quick else 35_000)
    counts = [int(c) for c in args.symbols.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        runs = [latency(args.strategy, k, n_bars, args.warmup, Path(tmp) / f"lat{k}") for k in counts]
        brokered = [broker_latency(args.strategy, k, n_bars, args.warmup, Path(tmp) / f"brk{k}") for k in counts]
        rep = replay(args.strategy, n_replay, args.warmup, Path(tmp) / "replay")

    print(f"machine : {cpu_model()}, {os.cpu_count()} logical cores, python {platform.python_version()}, "
          f"numba {numba.__version__}")
    print(f"(a) bar close -> orders handed to the broker, in process: {args.strategy}, paper broker, "
          f"{n_bars:,} bars after {args.warmup} warm-up, every bar committed (ms)")
    rows = [[str(r["symbols"]), *(f"{r[f'{k}_{q}_ms']:.3f}" for k in ("ready", "commit", "handed")
                                  for q in ("p50", "p99", "max")), str(r["orders"])] for r in runs]
    print(table(["symbols", "ready p50", "p99", "max", "commit p50", "p99", "max", "handed p50", "p99", "max",
                 "orders"], rows))
    print(f"goal: handed p99 < {GOAL_P99_MS:g} ms; " + ", ".join(
        f"{r['symbols']} symbol(s) {'met' if r['handed_p99_ms'] < GOAL_P99_MS else 'missed'}" for r in runs))
    print("(a') broker mode (the ccxt broker's path, an in-process broker that acknowledges at once): "
          "bar close -> each order's submit call (ms)")
    print(table(["symbols", "orders", "handed p50", "p99", "max"],
                [[str(r["symbols"]), str(r["orders_handed"]),
                  *(f"{r[k]:.3f}" if r.get(k) is not None else "-" for k in ("handed_p50_ms", "handed_p99_ms", "handed_max_ms"))]
                 for r in brokered]))
    print(f"(b) paper replay through ccxt and the local exchange (fast clock): {rep['bars']:,} hourly bars in "
          f"{rep['wall_s']:.2f} s = {rep['bars_per_s']:,} bars/s ({rep['requests']:,} requests, "
          f"{rep['fills']} fills)")
    print(json.dumps({"strategy": args.strategy, "warmup": args.warmup, "goal_p99_ms": GOAL_P99_MS,
                      "latency": runs, "broker_latency": brokered, "replay": rep,
                      "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                                  "python": platform.python_version(), "numba": numba.__version__}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
