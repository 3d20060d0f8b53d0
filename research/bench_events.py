"""Event bus throughput: events published, consumed and acknowledged per second through a real
Redis, with one and with four consumers.

Framing. A private ``redis-server`` (``live.redis_local``; AOF on, ``--appendfsync`` as given,
default ``everysec``, Redis's own default) on this machine. One publisher process (this one)
publishes ``--events`` fill events through :class:`live.bus.RedisStreamsBus` in calls of
``--batch`` events (one pipelined round trip each, as the runner publishes a bar's events in one
call); the event objects are built before the clock starts, encoding them is timed. ``N``
consumer processes of one group (:class:`live.bus.StreamConsumer`, batches of ``--count``,
without a processed-id set unless ``--dedup``) decode each event, call a no-op handler and
acknowledge per batch. The clock runs from the first publish to the moment the group has read
every event and none is pending (``XINFO GROUPS``); events/s = events / that time. Publishing
alone is reported too.

The runner's latency with the bus off, in process and on Redis: a paper runner (``sma_cross``
2/3, BTC/USDT 1h, bundled data) on the local exchange (fast clock, this process) steps
``--runner-bars`` live bars per mode, with the services of ``live.service`` around it (none for
"off"). *bar-to-order*: from the bar's arrival in ``LiveRunner.on_bar`` to its orders committed
and ready to send (``LiveRunner.bar_to_order_s``; events are published after that); *bar total*:
the whole ``on_bar`` call, publishing included. Median and 99th percentile, milliseconds. The
machine is shared: figures vary by run.

    python research/bench_events.py                 # 200,000 events, 1 and 4 consumers, 300 bars
    python research/bench_events.py --events 20000 --runner-bars 100  # quicker
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from live.bus import Outbox, ProcessedIds, RedisStreamsBus, StreamConsumer, stream_key  # noqa: E402
from live.events import Fill  # noqa: E402
from live.redis_local import LocalRedis  # noqa: E402

GOAL = 50_000  # events per second, end to end (issue 9)


def _consume(url: str, runner: str, name: str, count: int, dedup_path: str | None, stop) -> None:
    processed = ProcessedIds(dedup_path) if dedup_path else None
    consumer = StreamConsumer(url, runner, "bench", name, processed=processed)
    consumer.run(lambda e: None, should_stop=stop.is_set, count=count, block_ms=100)
    consumer.close()


def run_once(server: LocalRedis, tmp: Path, n_events: int, n_consumers: int, batch: int, count: int,
             dedup: bool, entry_events: int) -> dict:
    runner, url = f"bench{n_consumers}", server.url
    client = server.client()
    client.xgroup_create(stream_key(runner), "bench", id="0", mkstream=True)
    events = [Fill(runner=runner, ts_ms=1_700_000_000_000 + i, symbol="BTC/USDT", trade_id=f"t{i}",
                   client_order_id=f"sma.live.0.{i // 2}", side="buy" if i % 2 else "sell", qty=0.01,
                   price=40_000.0 + i % 100, fee=0.4, fee_currency="quote", fill_ms=1_700_000_000_000 + i)
              for i in range(n_events)]
    stop = mp.Event()
    procs = [mp.Process(target=_consume, args=(url, runner, f"c{k}", count,
                                               str(tmp / f"processed{n_consumers}.sqlite") if dedup else None, stop))
             for k in range(n_consumers)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # consumers connected and blocked on XREADGROUP
    bus = RedisStreamsBus(url, runner, outbox=Outbox(tmp / f"outbox{n_consumers}.sqlite"), maxlen=max(n_events, 1),
                          entry_events=entry_events)
    t0 = time.perf_counter()
    for i in range(0, n_events, batch):
        bus.publish_many(events[i:i + batch])
    t_pub = time.perf_counter() - t0
    while True:
        group = client.xinfo_groups(stream_key(runner))[0]
        if group["lag"] == 0 and group["pending"] == 0:  # every entry read, every one acknowledged
            break
        time.sleep(0.002)
    t_all = time.perf_counter() - t0
    stop.set()
    for p in procs:
        p.join(10)
    assert bus.outbox_depth == 0 and bus.published == n_events
    bus.close()
    client.close()
    return {"consumers": n_consumers, "events": n_events, "publish_s": round(t_pub, 4),
            "publish_per_s": round(n_events / t_pub), "end_to_end_s": round(t_all, 4),
            "end_to_end_per_s": round(n_events / t_all)}


def runner_latency(mode: str, tmp: Path, bars: int, redis_url: str | None) -> dict:
    """Step ``bars`` live bars of a paper runner with the bus ``mode`` (off / in_process /
    redis); per-bar latencies in ms (see the module docstring)."""
    import numpy as np

    from framework.data import load_ohlcv
    from framework.exchange import create_exchange
    from framework.local_exchange import LocalExchange
    from framework.settings import SimSettings
    from live.feed import CandleFeed
    from live.runner import LiveRunner, PaperBroker
    from live.service import RunnerServices, ServiceOptions
    from live.store import StateStore
    from strategies import STRATEGIES

    warmup = 100
    data = {"BTC/USDT": load_ohlcv("BTC_USDT-1h").iloc[20_000:20_000 + warmup + bars + 5]}
    ex = LocalExchange(data, start=data["BTC/USDT"].index[warmup], clock="fast").start()
    strategy = STRATEGIES["sma_cross"](fast=2, slow=3)
    feed = CandleFeed(create_exchange("binance", url=ex.url), ["BTC/USDT"], "1h")
    runner = LiveRunner(strategy, PaperBroker(), feed, SimSettings.build(strategy.sim_defaults),
                        StateStore(tmp / f"runner-{mode}"), warmup_bars=warmup, run_id=mode[:12], poll_s=0.05,
                        commit_every=1)  # every bar its own commit in every mode: like with like
    services = None if mode == "off" else RunnerServices(
        runner, ServiceOptions(redis_url=redis_url if mode == "redis" else None))
    to_order: list[float] = []
    total: list[float] = []
    step = runner.on_bar

    def timed(batch) -> None:
        t0 = time.perf_counter()
        step(batch)
        total.append(time.perf_counter() - t0)
        to_order.append(runner.bar_to_order_s)

    runner.on_bar = timed  # type: ignore[method-assign]
    try:
        if services is not None:
            services.start()
        runner.run(max_bars=bars)
    finally:
        if services is not None:
            services.stop("bench")
        runner.close()
        ex.stop()
    ms = {k: np.asarray(v) * 1000 for k, v in (("to_order", to_order), ("total", total))}
    return {"mode": mode, "bars": len(to_order),
            "bar_to_order_ms_p50": round(float(np.median(ms["to_order"])), 3),
            "bar_to_order_ms_p99": round(float(np.percentile(ms["to_order"], 99)), 3),
            "bar_total_ms_p50": round(float(np.median(ms["total"])), 3),
            "bar_total_ms_p99": round(float(np.percentile(ms["total"], 99)), 3),
            "events_published": 0 if services is None else services.published}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1_000, help="events per publish_many call")
    ap.add_argument("--count", type=int, default=100, help="stream entries per consumer read")
    ap.add_argument("--entry-events", type=int, default=100, help="events per stream entry at most "
                    "(RedisStreamsBus(entry_events=); 1: one entry per event)")
    ap.add_argument("--consumers", default="1,4", help="consumer counts to run, comma-separated")
    ap.add_argument("--appendfsync", choices=("always", "everysec", "no"), default="everysec")
    ap.add_argument("--dedup", action="store_true", help="consumers keep a processed-id set (SQLite)")
    ap.add_argument("--runner-bars", type=int, default=300,
                    help="live bars of the runner-latency runs, per bus mode (0: skip them)")
    args = ap.parse_args(argv)
    counts = [int(c) for c in args.consumers.split(",")]
    rows, latency = [], []
    with tempfile.TemporaryDirectory() as d, LocalRedis(Path(d) / "redis", appendfsync=args.appendfsync) as server:
        # the runner first: Redis writing a large append-only file slows the runner's fsyncs
        if args.runner_bars > 0:
            for mode in ("off", "in_process", "redis"):
                latency.append(runner_latency(mode, Path(d), args.runner_bars, server.url))
        for n in counts:
            rows.append(run_once(server, Path(d), args.events, n, args.batch, args.count, args.dedup,
                                 args.entry_events))
    print(f"Redis Streams bus: {args.events:,} fill events, publish calls of {args.batch}, entries of up "
          f"to {args.entry_events} events, consumer reads of {args.count} entries, appendfsync "
          f"{args.appendfsync}, dedup {args.dedup}")
    print(f"{'consumers':>9} {'publish/s':>11} {'end-to-end/s':>13} {'end-to-end s':>13}  goal {GOAL:,}/s")
    for r in rows:
        ok = "met" if r["end_to_end_per_s"] >= GOAL else "missed"
        print(f"{r['consumers']:>9} {r['publish_per_s']:>11,} {r['end_to_end_per_s']:>13,} {r['end_to_end_s']:>13.3f}  {ok}")
    if latency:
        print(f"\nRunner bar-to-order latency, ms ({args.runner_bars} live bars per mode; total = on_bar "
              "with publishing)")
        print(f"{'bus':>11} {'to-order p50':>13} {'to-order p99':>13} {'total p50':>10} {'total p99':>10} {'events':>7}")
        for r in latency:
            print(f"{r['mode']:>11} {r['bar_to_order_ms_p50']:>13.3f} {r['bar_to_order_ms_p99']:>13.3f} "
                  f"{r['bar_total_ms_p50']:>10.3f} {r['bar_total_ms_p99']:>10.3f} {r['events_published']:>7}")
    print(json.dumps({"events": args.events, "batch": args.batch, "entry_events": args.entry_events,
                      "count": args.count,
                      "appendfsync": args.appendfsync, "dedup": args.dedup, "goal_per_s": GOAL, "runs": rows,
                      "runner_latency": latency}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
