"""The event bus: events and their ids, the in-process bus, and Redis Streams against a real
``redis-server`` started here (free port, temp dir, append-only file with fsync on every write),
killed with SIGKILL and restarted during a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from framework import enums
from framework.cli import main as cli_main
from live.bus import (
    InProcessBus,
    Outbox,
    ProcessedIds,
    RedisStreamsBus,
    StreamConsumer,
    dead_letter_key,
    read_journal,
    stream_key,
)
from live.events import (
    EVENT_TYPES,
    EmergencyStop,
    EventVersionError,
    Fill,
    Heartbeat,
    OrderCreated,
    OrderRejected,
    PerformanceSnapshot,
    RiskLimitFired,
    decode,
    encode,
    entry_text,
    from_step,
    parse_entry,
    to_dict,
)
from live.redis_local import LocalRedis
from live.store import SCHEMA_VERSION, StateStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server(tmp_path):
    """A private redis-server; small stream nodes so approximate trimming shows at small sizes."""
    with LocalRedis(tmp_path / "redis", extra=("--stream-node-max-entries", "10")) as r:
        yield r


def _hb(i: int) -> Heartbeat:
    return Heartbeat(runner="r1", ts_ms=1_700_000_000_000 + i, session_id="s", seq=i)


def _order(i: int) -> OrderCreated:
    return OrderCreated(runner="r1", ts_ms=1_700_000_000_000 + i, client_order_id=f"sma.r1.0.{i}",
                        symbol="BTC/USDT", side="buy", order_type="market", status="created",
                        bar_ms=1_700_000_000_000 + 60_000 * i, qty=0.5)


def _stream_events(client: redis.Redis, runner: str = "r1") -> list[dict]:
    return [ev for _, f in client.xrange(stream_key(runner)) for ev in parse_entry(f["e"])]


def _stream_seqs(client: redis.Redis, runner: str = "r1") -> list[int]:
    return [ev["data"]["seq"] for ev in _stream_events(client, runner)]


# --- events -----------------------------------------------------------------------------------


def test_step_records_become_bus_events():
    ev = np.zeros(4, dtype=enums.event_dt)
    # order 3 of column 1 created at bar 5: a market buy sized by notional (qty unknown yet)
    ev[0] = (enums.EVENT_ORDER, 5, 1, 3, 1, enums.ORDER_MARKET, np.nan, 1000.0, np.nan, np.nan,
             enums.STATUS_CREATED, enums.REASON_SIGNAL, enums.REJECT_NONE, 0.0, np.nan, 5)
    ev[1] = (enums.EVENT_ORDER, 5, 0, 4, -1, enums.ORDER_LIMIT, 2.0, np.nan, 99.5, np.nan,
             enums.STATUS_REJECTED, enums.REASON_SIGNAL, enums.REJECT_NO_CASH, 0.0, np.nan, 5)
    ev[2] = (enums.EVENT_HALT, 5, -1, -1, 0, 0, np.nan, np.nan, np.nan, np.nan, 0, 0, 0, 0.0, np.nan, 5)
    ev[3] = (enums.EVENT_EMERGENCY, 5, -1, -1, 0, 0, np.nan, np.nan, np.nan, np.nan, 0, 0, 0, 0.0, np.nan, 5)
    fills = np.zeros(2, dtype=enums.fill_dt)
    fills[0] = (3, 1, 6, 1, 0.25, 4000.0, 1.0, enums.FEE_QUOTE, enums.ORDER_MARKET, enums.REASON_SIGNAL)
    fills[1] = (3, 1, 6, 1, 0.05, 4001.0, 0.2, enums.FEE_BASE, enums.ORDER_MARKET, enums.REASON_SIGNAL)
    out = from_step(ev, fills, runner="p1", tag="smacross", run_id="paper1", symbols=["BTC/USDT", "ETH/USDT"],
                    bar_ms=lambda b: 1_000_000 + 60_000 * b, ts_ms=42)
    assert [type(e) for e in out] == [OrderCreated, OrderRejected, RiskLimitFired, EmergencyStop, Fill, Fill]
    created, rejected, halt, stop, f1, f2 = out
    assert created.client_order_id == "smacross.paper1.1.3" and created.symbol == "ETH/USDT"
    assert (created.side, created.qty, created.notional, created.bar_ms) == ("buy", None, 1000.0, 1_300_000)
    assert created.id == "p1:order_created:smacross.paper1.1.3:created:0:1300000"
    assert (rejected.side, rejected.order_type, rejected.price, rejected.reject_reason) == ("sell", "limit", 99.5, "no_cash")
    assert (halt.rule, halt.symbol, halt.id) == ("halt", "", "p1:risk_limit_fired:halt:1300000:")
    assert stop.id == "p1:emergency_stop:1300000"
    assert (f1.trade_id, f2.trade_id) == ("smacross.paper1.1.3@6#1", "smacross.paper1.1.3@6#2")
    assert (f2.fee_currency, f2.fill_ms, f1.fee_currency) == ("base", 1_360_000, "quote")
    # the same step converted again (a replay) gives the same ids
    again = from_step(ev, fills, runner="p1", tag="smacross", run_id="paper1", symbols=["BTC/USDT", "ETH/USDT"],
                      bar_ms=lambda b: 1_000_000 + 60_000 * b, ts_ms=99)
    assert [e.id for e in again] == [e.id for e in out]
    with pytest.raises(TypeError, match="event_dt"):
        from_step(fills, ev, runner="p1", tag="t", run_id="r", symbols=["X"], bar_ms=int, ts_ms=0)


def test_json_round_trip_and_version_refusal():
    perf = PerformanceSnapshot(runner="r1", ts_ms=5, bar_ms=60_000, equity=1010.5, cash=10.0, drawdown=0.02,
                               stats={"sharpe": 1.5, "sortino": None})
    for event in (perf, _order(7), _hb(3)):
        assert decode(encode(event)) == event
    wire = to_dict(_order(7))
    assert wire["v"] == 1 and wire["kind"] == "order_created" and wire["id"] == _order(7).id
    newer = {**wire, "v": 2}
    with pytest.raises(EventVersionError, match=r"schema version 2; this TradPal reads version 1 \(written by a newer"):
        decode(json.dumps(newer))
    with pytest.raises(ValueError, match="unknown event kind 'order_teleported'"):
        decode(json.dumps({**wire, "kind": "order_teleported"}))
    with pytest.raises(ValueError, match="does not match its content"):
        decode(json.dumps({**wire, "id": "r1:order_created:other"}))
    with pytest.raises(ValueError, match="does not fit its schema"):
        decode(json.dumps({**wire, "data": {"nonsense": 1}}))
    with pytest.raises(ValueError, match="JSON"):
        decode("not json")
    broken = PerformanceSnapshot(runner="r1", ts_ms=5, bar_ms=1, equity=1.0, cash=1.0, drawdown=0.0,
                                 stats={"sharpe": float("nan")})
    with pytest.raises(ValueError, match="field 'stats' holds NaN or an infinity"):
        encode(broken)
    # every kind named in the issue exists
    assert {"session_started", "session_stopped", "bar", "signal", "order_created", "order_submitted",
            "order_updated", "order_cancelled", "order_rejected", "fill", "position_opened",
            "position_changed", "position_closed", "risk_limit_fired", "emergency_stop", "feed_stale",
            "feed_recovered", "reconciliation", "heartbeat", "performance"} <= set(EVENT_TYPES)


def test_in_process_bus_survives_a_broken_subscriber():
    bus = InProcessBus()
    seen, fills = [], []

    def broken(event):
        raise RuntimeError("boom")
    bus.subscribe(broken)
    bus.subscribe(seen.append)
    unsubscribe = bus.subscribe(fills.append, kinds=["fill"])
    bus.publish_many([_hb(1), _order(2)])
    unsubscribe()
    bus.publish(_hb(3))
    assert [e.id for e in seen] == [_hb(1).id, _order(2).id, _hb(3).id]
    assert fills == [] and bus.errors == 3 and bus.published == 3


# --- Redis --------------------------------------------------------------------------------------


def test_redis_killed_and_restarted_while_publishing(server, tmp_path):
    store = StateStore(tmp_path / "state")
    bus = RedisStreamsBus(server.url, "r1", outbox=Outbox.for_store(store), retry_s=0.05, timeout_s=0.5)
    consumer = StreamConsumer(server.url, "r1", "g", "c1", timeout_s=0.5)
    seen: list[int] = []
    n, per = 300, 10
    for b in range(n // per):
        if b == 10:
            while consumer.poll(lambda e: seen.append(e.seq), block_ms=10):  # reads and acknowledges 0..99
                pass
            server.kill9()
        if b == 20:
            assert bus.outbox_depth == 100  # batches 10..19 wait on disk
            server.start()
            time.sleep(0.06)  # past retry_s: the next publish tries Redis again
        bus.publish_many(_hb(i) for i in range(b * per, (b + 1) * per))  # never raises
    assert bus.outbox_depth == 0 and bus.outboxed == 110  # batch 20 queued behind them, then all sent
    assert _stream_seqs(server.client()) == list(range(n))  # all there, in publishing order
    # the consumer's acknowledgements survived the crash: it goes on from 100, nothing twice
    while consumer.poll(lambda e: seen.append(e.seq), block_ms=10):
        pass
    assert seen == list(range(n))
    consumer.close()
    bus.close()
    store.close()
    # the outbox table leaves the store readable as before
    with StateStore(tmp_path / "state", create=False) as again:
        assert again.status()["schema_version"] == SCHEMA_VERSION


def test_outbox_survives_the_publisher_itself(server, tmp_path):
    """Events outboxed by a publisher that then died are sent by the next one, before its own."""
    store = StateStore(tmp_path / "state")
    server.kill9()
    first = RedisStreamsBus(server.url, "r1", outbox=Outbox.for_store(store), retry_s=60, timeout_s=0.3)
    first.publish_many(_hb(i) for i in range(5))
    assert first.outbox_depth == 5
    server.start()
    second = RedisStreamsBus(server.url, "r1", outbox=Outbox.for_store(store), retry_s=0.05)
    assert second.outbox_depth == 5
    second.publish(_hb(5))
    assert _stream_seqs(server.client()) == [0, 1, 2, 3, 4, 5]
    first.close()
    second.close()
    store.close()


def _consumer_script(url: str, db: Path, crash_at: str) -> list[str]:
    code = textwrap.dedent(f"""
        from live.bus import ProcessedIds, StreamConsumer
        p = ProcessedIds({str(db)!r})
        p.connection.execute("CREATE TABLE IF NOT EXISTS applied (event_id TEXT)")
        c = StreamConsumer({url!r}, "r1", "g", "doomed", processed=p)
        c.poll(lambda e: p.connection.execute("INSERT INTO applied VALUES (?)", (e.id,)), count=20)
    """)
    return [sys.executable, "-c", code], {**os.environ, "PYTHONPATH": str(ROOT), "TRADPAL_CRASH_AT": crash_at}


@pytest.mark.parametrize("crash_at", ["bus.before_commit", "bus.before_ack"])
def test_consumer_killed_before_ack_others_reclaim_and_apply_once(server, tmp_path, crash_at):
    client = server.client()
    events = [_order(i) for i in range(50)]
    client.xgroup_create(stream_key("r1"), "g", id="0", mkstream=True)
    for e in events:
        client.xadd(stream_key("r1"), {"e": encode(e)})
    db = tmp_path / "processed.sqlite"
    cmd, env = _consumer_script(server.url, db, crash_at)
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    assert client.xpending(stream_key("r1"), "g")["pending"] == 20  # delivered, never acknowledged

    processed = ProcessedIds(db)
    processed.connection.execute("CREATE TABLE IF NOT EXISTS applied (event_id TEXT)")
    survivor = StreamConsumer(server.url, "r1", "g", "survivor", processed=processed, claim_idle_ms=100)

    def apply(e):
        processed.connection.execute("INSERT INTO applied VALUES (?)", (e.id,))
    for _ in range(300):  # until everything is acknowledged
        survivor.poll(apply, count=20, block_ms=50)
        if client.xpending(stream_key("r1"), "g")["pending"] == 0 and survivor.handled + survivor.duplicates >= 50:
            break
    applied = [r[0] for r in processed.connection.execute("SELECT event_id FROM applied")]
    assert sorted(applied) == sorted(e.id for e in events)  # each applied exactly once
    assert client.xpending(stream_key("r1"), "g")["pending"] == 0
    # killed after its commit: the 20 it applied are only acknowledged by the survivor
    assert survivor.duplicates == (20 if crash_at == "bus.before_ack" else 0)
    survivor.close()
    processed.close()


def test_poison_messages_go_to_the_dead_letter_stream(server, tmp_path):
    client = server.client()
    key = stream_key("r1")
    client.xgroup_create(key, "g", id="0", mkstream=True)
    newer = {**to_dict(_hb(1)), "v": 9}
    poison = [client.xadd(key, {"e": "{not json"}), client.xadd(key, {"e": json.dumps(newer)})]
    client.xadd(key, {"e": encode(_hb(2))})
    # an entry of several events, one of them a handler chokes on: only that one is dead-lettered
    mixed = client.xadd(key, {"e": entry_text([encode(_hb(3)), encode(_hb(13)), encode(_hb(4))])})
    processed = ProcessedIds(tmp_path / "processed.sqlite")
    consumer = StreamConsumer(server.url, "r1", "g", "c1", claim_idle_ms=20, max_deliveries=3, processed=processed)
    handled = []

    def handle(e):
        if e.seq == 13:
            raise RuntimeError("cannot digest 13")
        handled.append(e.seq)
    for _ in range(300):
        consumer.poll(handle, count=10, block_ms=20)
        if client.xlen(dead_letter_key("r1")) == 3:
            break
        time.sleep(0.01)
    assert handled == [2, 3, 4]  # the good ones, once each, though the mixed entry came 3 times
    dead = client.xrange(dead_letter_key("r1"))
    assert [f["original_id"] for _, f in dead] == [*poison, mixed] and dead[1][1]["e"] == json.dumps(newer)
    assert "JSON" in dead[0][1]["error"] and "schema version 9" in dead[1][1]["error"]
    assert json.loads(dead[2][1]["e"])["data"]["seq"] == 13 and "cannot digest 13" in dead[2][1]["error"]
    assert consumer.failures == 9 and consumer.duplicates == 4  # 3 failures each; 3 and 4 seen again twice
    assert client.xpending(key, "g")["pending"] == 0
    consumer.close()
    processed.close()


def test_trimming_never_drops_what_a_group_has_not_acknowledged(server, tmp_path):
    client = server.client()
    key = stream_key("r1")
    client.xgroup_create(key, "g", id="0", mkstream=True)
    store = StateStore(tmp_path / "state")
    bus = RedisStreamsBus(server.url, "r1", outbox=Outbox.for_store(store), maxlen=20, trim_every=20,
                          entry_events=1)
    bus.publish_many(_order(i) for i in range(100))
    delivered = client.xreadgroup("g", "c", {key: ">"}, count=60)[0][1]
    client.xack(key, "g", *[mid for mid, _ in delivered[:30]])  # 30..59 pending, 60.. undelivered
    bus.publish_many(_order(i) for i in range(100, 300))
    kept = [ev["data"]["client_order_id"] for ev in _stream_events(client)]
    unacked = [f"sma.r1.0.{i}" for i in range(30, 300)]
    assert kept[-len(unacked):] == unacked  # every unacknowledged order event is still there
    assert len(kept) <= 300 - 30 + 10 and bus.trimmed >= 20  # the acknowledged ones went (node of 10 may stay)
    # once everything is acknowledged, the stream comes down towards maxlen
    rest = client.xreadgroup("g", "c", {key: ">"}, count=1000)[0][1]
    client.xack(key, "g", *[mid for mid, _ in delivered[30:] + rest])
    bus.publish_many(_order(i) for i in range(300, 320))
    assert client.xlen(key) <= 20 + 10
    bus.close()
    store.close()


def test_journal_and_tail_commands(server, tmp_path, capsys):
    store = StateStore(tmp_path / "state")
    bus = RedisStreamsBus(server.url, "r1", outbox=Outbox.for_store(store))
    events = [_order(i) for i in range(25)] + [_hb(i) for i in range(5)]
    bus.publish_many(events)
    out = tmp_path / "journal"
    assert cli_main(["events", "journal", "--redis-url", server.url, "--runner", "r1",
                     "--out", str(out), "--max-events", "30"]) == 0
    frame = read_journal(out)
    assert list(frame["id"]) == [e.id for e in events]
    assert json.loads(frame["data"][0])["client_order_id"] == "sma.r1.0.0"
    capsys.readouterr()
    assert cli_main(["events", "tail", "--redis-url", server.url, "--runner", "r1", "--from-start",
                     "--max-events", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "order_created" in lines[0] and "client_order_id=sma.r1.0.0" in lines[0]
    # through a group: the events read are acknowledged for that group
    assert cli_main(["events", "tail", "--redis-url", server.url, "--runner", "r1", "--group", "ops",
                     "--from-start", "--max-events", "30"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 30 and "heartbeat" in lines[-1] and "seq=4" in lines[-1]
    assert server.client().xpending(stream_key("r1"), "ops")["pending"] == 0
    assert cli_main(["events", "tail", "--redis-url", "http://nope"]) == 2
    assert "--redis-url must look like redis://" in capsys.readouterr().err
    bus.close()
    store.close()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="maxlen must be an integer >= 1"):
        RedisStreamsBus("redis://127.0.0.1:1", "r1", outbox=None, maxlen=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="runner name"):
        RedisStreamsBus("redis://127.0.0.1:1", "a:b", outbox=None)  # type: ignore[arg-type]


def test_bench_events_reports_its_summary():
    proc = subprocess.run([sys.executable, str(ROOT / "research" / "bench_events.py"), "--events", "3000",
                           "--batch", "500", "--consumers", "1,2", "--runner-bars", "20"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["consumers"] for r in summary["runs"]] == [1, 2]
    for run in summary["runs"]:
        assert run["events"] == 3000 and run["end_to_end_per_s"] > 0
        assert run["end_to_end_s"] >= run["publish_s"] > 0  # consumed after published
    assert [r["mode"] for r in summary["runner_latency"]] == ["off", "in_process", "redis"]
    for r in summary["runner_latency"]:
        assert r["bars"] == 20
        assert r["bar_to_order_ms_p99"] >= r["bar_to_order_ms_p50"] > 0
        assert r["bar_total_ms_p50"] >= r["bar_to_order_ms_p50"]  # the whole bar includes its orders
        # off publishes nothing; a bus gets at least the session start and a snapshot per bar
        assert (r["events_published"] == 0) if r["mode"] == "off" else (r["events_published"] >= 22)
