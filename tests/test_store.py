"""live/store.py: the live runner's SQLite state store.

Round trips of every record, fill de-duplication, the single-runner lock across processes, control
requests between processes, schema refusal, and the property that matters: a process killed with
SIGKILL at any point of a bar or a fill leaves the store holding whole bars and whole fills only,
and a restart continues to exactly the state of an uninterrupted run."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from live.broker import BrokerFill, OrderRequest, OrderUpdate
from live.store import (
    CRASH_ENV,
    CRASH_POINTS,
    SCHEMA_VERSION,
    RunnerLockedError,
    StateStore,
)

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000
HOUR = 3_600_000


def child(script: str, *args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """A fresh Python process running ``script`` with the worktree importable."""
    full_env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    full_env.update(PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.Popen([sys.executable, "-c", script, *args], env=full_env, cwd=ROOT, **kw)


def run_child(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = child(script, *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def store(tmp_path):
    with StateStore(tmp_path / "state", now_ms=lambda: 42) as s:
        yield s


# --- round trips --------------------------------------------------------------------------------


def test_orders_round_trip_and_filters(store):
    limit = OrderRequest("c1", "BTC/USDT", "buy", "limit", 0.5, price=30_000.0)
    market = OrderRequest("c2", "ETH/USDT", "sell", "market", None, cost=250.0, reduce_only=True)
    stop = OrderRequest("c3", "BTC/USDT", "sell", "stop_limit", 0.5, price=28_900.0, trigger=29_000.0)
    assert store.record_order(limit, bar_ms=T0, extra={"tag": "entry"})
    assert store.record_order(market, status="submitted")
    assert store.record_order(stop)

    got = store.order("c1")
    assert got.request == limit
    assert (got.status, got.filled_qty, got.exchange_order_id, got.reason) == ("created", 0.0, None, None)
    assert (got.created_bar_ms, got.updated_ms, got.extra) == (T0, 42, {"tag": "entry"})
    assert store.order("c2").request == market and store.order("c2").request.qty is None
    assert store.order("c3").request == stop
    assert store.order("nope") is None

    store.update_order(OrderUpdate("c1", "partially_filled", 0.2, "X1"), extra={"note": "half"})
    store.update_order(OrderUpdate("c1", "filled", 0.5))  # no exchange id: the known one stays
    store.update_order(OrderUpdate("c2", "rejected", 0.0, reason="InsufficientFunds"))
    c1 = store.order("c1")
    assert (c1.status, c1.filled_qty, c1.exchange_order_id) == ("filled", 0.5, "X1")
    assert c1.extra == {"tag": "entry", "note": "half"}
    assert c1.update == OrderUpdate("c1", "filled", 0.5, "X1", None)
    assert store.order("c2").reason == "InsufficientFunds"

    assert [o.client_order_id for o in store.orders()] == ["c1", "c2", "c3"]
    assert [o.client_order_id for o in store.orders("open")] == ["c3"]
    assert [o.client_order_id for o in store.orders("filled")] == ["c1"]
    assert [o.client_order_id for o in store.orders(["rejected", "created"])] == ["c2", "c3"]
    assert [o.client_order_id for o in store.orders(symbol="BTC/USDT")] == ["c1", "c3"]
    assert [o.is_open for o in store.orders()] == [False, False, True]
    with pytest.raises(ValueError, match="unknown order status 'done'"):
        store.orders("done")


def test_record_order_is_idempotent_and_refuses_a_reused_id(store):
    req = OrderRequest("c1", "BTC/USDT", "buy", "market", 1.0)
    assert store.record_order(req)
    store.update_order(OrderUpdate("c1", "submitted", 0.0, "X9"))
    # a restarted runner regenerates the same order: nothing changes
    assert store.record_order(req) is False
    assert store.order("c1").status == "submitted"
    with pytest.raises(ValueError, match="'c1' is already recorded for another order"):
        store.record_order(OrderRequest("c1", "BTC/USDT", "buy", "market", 2.0))
    with pytest.raises(KeyError, match="unknown client_order_id 'zz'"):
        store.update_order(OrderUpdate("zz", "filled", 1.0))
    with pytest.raises(ValueError, match="side of 'c3' must be 'buy' or 'sell', got 'long'"):
        store.record_order(OrderRequest("c3", "BTC/USDT", "long", "market", 1.0))
    with pytest.raises(ValueError, match="type of 'c3' must be one of limit, market, .*got 'iceberg'"):
        store.commit_bar({"BTC/USDT": T0}, b"s", [OrderRequest("c3", "BTC/USDT", "buy", "iceberg", 1.0)])
    assert store.cursor() == {}
    with pytest.raises(ValueError, match="unknown order status 'gone'"):
        store.record_order(OrderRequest("c2", "BTC/USDT", "buy", "market", 1.0), status="gone")
    assert [o.client_order_id for o in store.orders()] == ["c1"]


def test_fills_round_trip_and_dedup_by_symbol_and_trade_id(store):
    store.record_order(OrderRequest("c1", "BTC/USDT", "buy", "market", 1.0))
    f1 = BrokerFill("t1", "c1", "BTC/USDT", "buy", 0.4, 30_000.0, 0.012, "USDT", T0 + 5)
    f2 = BrokerFill("t2", "c1", "BTC/USDT", "buy", 0.6, 30_010.0, 0.0001, "BNB", T0 + 9)
    other = BrokerFill("t1", "c9", "ETH/USDT", "sell", 2.0, 2_000.0, 0.0, "USDT", T0 + 7)
    assert store.record_fill(f1, T0, order=OrderUpdate("c1", "partially_filled", 0.4, "X1"),
                             snapshot=b"after-t1", summary={"equity": 1.5},
                             events=[{"kind": "fill", "trade_id": "t1"}])
    assert store.record_fill(f2, T0)
    assert store.record_fill(other)  # the same trade id on another symbol is another trade
    # booked again (a restart re-reads the exchange's trades): nothing at all is written
    assert store.record_fill(f1, T0 + HOUR, order=OrderUpdate("c1", "filled", 9.9),
                             snapshot=b"double", events=[{"kind": "fill", "trade_id": "t1"}]) is False
    assert store.fills() == [f1, f2, other]
    assert store.fills("ETH/USDT") == [other]
    assert store.known_trade_ids("BTC/USDT") == {"t1", "t2"}
    assert store.known_trade_ids("XRP/USDT") == set()
    assert store.last_fill_ms("BTC/USDT") == T0 + 9
    assert store.last_fill_ms("XRP/USDT") is None
    assert store.order("c1").filled_qty == 0.4
    assert store.latest_snapshot() == (b"after-t1", T0)
    assert store.latest_summary() == {"equity": 1.5}
    assert [(e.kind, e.payload) for e in store.events()] == [("fill", {"trade_id": "t1"})]
    with pytest.raises(ValueError, match="needs bar_ms"):
        store.record_fill(BrokerFill("t3", "c1", "BTC/USDT", "buy", 1.0, 1.0, 0.0, "USDT", T0), snapshot=b"x")


def test_commit_bar_writes_snapshot_cursor_orders_events_flags(store):
    req = OrderRequest("c1", "BTC/USDT", "buy", "limit", 1.0, price=99.0)
    store.commit_bar({"BTC/USDT": T0, "ETH/USDT": T0}, b"s0", [req],
                     [{"kind": "signal", "ts_ms": 7, "side": "buy"}], summary={"equity": 1000.0},
                     flags={"halted": False})
    assert store.cursor() == {"BTC/USDT": T0, "ETH/USDT": T0}
    assert store.latest_snapshot() == (b"s0", T0)
    assert store.order("c1").request == req and store.order("c1").created_bar_ms == T0
    [event] = store.events()
    assert (event.id, event.ts_ms, event.kind, event.payload) == (1, 7, "signal", {"side": "buy"})
    # one int: the same bar on every known symbol
    store.commit_bar(T0 + HOUR, bytearray(b"s1"), [OrderUpdate("c1", "filled", 1.0, "X")],
                     [{"kind": "bar"}], flags={"halted": True, "halt_reason": "drawdown"})
    assert store.cursor() == {"BTC/USDT": T0 + HOUR, "ETH/USDT": T0 + HOUR}
    assert store.order("c1").status == "filled"
    assert store.get_flag("halted") is True and store.get_flag("halt_reason") == "drawdown"
    assert [e.kind for e in store.events(after_id=1)] == ["bar"]
    assert [e.kind for e in store.events(limit=1)] == ["signal"]
    with pytest.raises(ValueError, match="older than its stored cursor"):
        store.commit_bar({"BTC/USDT": T0}, b"old")
    assert store.latest_snapshot() == (b"s1", T0 + HOUR)


def test_a_transaction_commits_several_bars_and_their_records_at_once(store):
    """Bars committed in one ``transaction()`` (the earlier ones without a snapshot, a runner
    catching up): all of them or, after an error inside, none; records append in order."""
    store.commit_bar({"BTC/USDT": T0}, b"s0", records={"fills": b"F0", "events": b""})
    f1 = BrokerFill("t1", "c1", "BTC/USDT", "buy", 1.0, 100.0, 0.1, "USDT", T0 + HOUR)
    with store.transaction():
        assert store.in_transaction
        assert store.record_fill(f1, T0 + HOUR, events=[{"kind": "fill", "trade_id": "t1"}])
        store.commit_bar(T0 + HOUR, None, [OrderRequest("c1", "BTC/USDT", "buy", "market", 1.0)],
                         [{"kind": "bar", "n": 1}])
        store.commit_bar(T0 + 2 * HOUR, b"s2", [OrderUpdate("c1", "filled", 1.0)], [{"kind": "bar", "n": 2}],
                         summary={"equity": 2.0}, records={"fills": b"F1F2", "events": b"E"})
    assert not store.in_transaction
    assert store.cursor() == {"BTC/USDT": T0 + 2 * HOUR} and store.latest_snapshot() == (b"s2", T0 + 2 * HOUR)
    assert store.order("c1").created_bar_ms == T0 + HOUR and store.order("c1").status == "filled"
    assert [(e.kind, e.payload) for e in store.events()] == [
        ("fill", {"trade_id": "t1"}), ("bar", {"n": 1}), ("bar", {"n": 2})]
    assert store.records("fills") == b"F0F1F2" and store.records("events") == b"E" and store.records("x") == b""
    with pytest.raises(KeyError, match="ghost"), store.transaction():
        store.commit_bar(T0 + 3 * HOUR, None, (), [{"kind": "bar", "n": 3}])
        store.commit_bar(T0 + 4 * HOUR, b"s4", [OrderUpdate("ghost", "filled", 1.0)], records={"fills": b"F3"})
    assert store.cursor() == {"BTC/USDT": T0 + 2 * HOUR} and len(store.events()) == 3
    assert store.records("fills") == b"F0F1F2"
    with pytest.raises(ValueError, match="only allowed inside StateStore.transaction"):
        store.commit_bar(T0 + 3 * HOUR, None)
    with store.transaction(), pytest.raises(ValueError, match="stored with a snapshot"):
        store.commit_bar(T0 + 3 * HOUR, None, records={"fills": b"F"})
    with store.transaction(), pytest.raises(RuntimeError, match="does not nest"):
        with store.transaction():
            pass


def test_commit_bar_is_all_or_nothing_on_error(store):
    store.commit_bar({"BTC/USDT": T0}, b"s0")
    with pytest.raises(KeyError, match="unknown client_order_id 'ghost'"):
        store.commit_bar({"BTC/USDT": T0 + HOUR}, b"s1",
                         [OrderRequest("c1", "BTC/USDT", "buy", "market", 1.0),
                          OrderUpdate("ghost", "filled", 1.0)], [{"kind": "bar"}], flags={"x": 1})
    assert store.cursor() == {"BTC/USDT": T0}
    assert store.latest_snapshot() == (b"s0", T0)
    assert store.orders() == [] and store.events() == [] and store.flags() == {}
    with pytest.raises(ValueError, match="first commit_bar"):
        StateStore(store.state_dir.parent / "fresh").commit_bar(T0, b"s")
    with pytest.raises(ValueError, match="non-empty 'kind'"):
        store.commit_bar(T0 + HOUR, b"s1", events=[{"side": "buy"}])
    with pytest.raises(TypeError, match="JSON-serialisable"):
        store.commit_bar(T0 + HOUR, b"s1", summary={"equity": object()})
    with pytest.raises(TypeError, match="snapshot must be bytes"):
        store.commit_bar(T0 + HOUR, "s1")
    with pytest.raises(TypeError, match="epoch milliseconds"):
        store.commit_bar({"BTC/USDT": 1.5}, b"s1")
    assert store.cursor() == {"BTC/USDT": T0}


def test_only_the_latest_snapshots_are_kept(tmp_path):
    with StateStore(tmp_path, keep_snapshots=3) as s:
        for k in range(5):
            s.commit_bar({"BTC/USDT": T0 + k * HOUR}, f"s{k}".encode())
        rows = s.connection.execute("SELECT state, bar_ms FROM snapshots ORDER BY id").fetchall()
    assert rows == [(b"s2", T0 + 2 * HOUR), (b"s3", T0 + 3 * HOUR), (b"s4", T0 + 4 * HOUR)]
    with pytest.raises(ValueError, match="keep_snapshots must be an integer >= 1"):
        StateStore(tmp_path, keep_snapshots=0)


def test_flags_and_status(store):
    assert store.get_flag("halted", False) is False
    store.set_flag("pending_confirmation", {"balance_diff": 12.5})
    store.set_flag("halted", True)
    store.set_flag("halt_reason", "balance differs")
    store.record_order(OrderRequest("c1", "BTC/USDT", "buy", "limit", 1.0, price=10.0))
    store.record_order(OrderRequest("c2", "BTC/USDT", "sell", "market", 1.0), status="filled")
    store.record_fill(BrokerFill("t1", "c2", "BTC/USDT", "sell", 1.0, 11.0, 0.0, "USDT", T0))
    store.commit_bar({"BTC/USDT": T0}, b"s", summary={"equity": 1011.0, "cash": 1011.0})
    rid = store.request("reset")
    status = store.status()
    assert json.loads(json.dumps(status)) == status  # ready for the CLI's JSON output
    assert status["halted"] is True and status["halt_reason"] == "balance differs"
    assert status["flags"]["pending_confirmation"] == {"balance_diff": 12.5}
    assert status["cursor"] == {"BTC/USDT": T0} and status["snapshot_bar_ms"] == T0
    assert status["summary"] == {"equity": 1011.0, "cash": 1011.0}
    assert [o["client_order_id"] for o in status["open_orders"]] == ["c1"]
    assert status["open_orders"][0]["price"] == 10.0 and status["open_orders"][0]["status"] == "created"
    assert (status["orders"], status["fills"]) == (2, 1)
    assert [r["id"] for r in status["pending_requests"]] == [rid]
    assert status["runner_pid"] is None and status["schema_version"] == SCHEMA_VERSION
    store.set_flag("halted", None)
    assert "halted" not in store.flags() and store.status()["halted"] is False


# --- files, pragmas, errors ---------------------------------------------------------------------


def test_wal_and_full_synchronous(tmp_path):
    with StateStore(tmp_path) as s:
        assert s.path == tmp_path / "state.sqlite"
        assert s.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    plain = sqlite3.connect(tmp_path / "state.sqlite")
    try:  # WAL is a property of the file, seen by any reader
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert plain.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        plain.close()


def test_schema_version_mismatch_is_refused(tmp_path):
    StateStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / "state.sqlite")
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    path = tmp_path / "state.sqlite"
    with pytest.raises(ValueError, match=f"{path} has state schema version {SCHEMA_VERSION + 1}.*newer TradPal"):
        StateStore(tmp_path)


def test_bad_files_and_directories(tmp_path):
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "state.sqlite").write_bytes(b"this is not sqlite, " * 400)
    with pytest.raises(ValueError, match="corrupt/state.sqlite is not a TradPal state store"):
        StateStore(tmp_path / "corrupt")
    (tmp_path / "foreign").mkdir()
    db = sqlite3.connect(tmp_path / "foreign" / "state.sqlite")
    db.execute("CREATE TABLE prices (x)")
    db.commit()
    db.close()
    with pytest.raises(ValueError, match=r"foreign/state.sqlite is an SQLite file but not a TradPal state store \(tables \['prices'\]"):
        StateStore(tmp_path / "foreign")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError, match="cannot create the state directory .*afile/state"):
        StateStore(tmp_path / "afile" / "state")
    with pytest.raises(OSError, match="cannot create the state directory .*afile"):
        StateStore(tmp_path / "afile")
    with pytest.raises(FileNotFoundError, match="no runner state in .*missing"):
        StateStore(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()


# --- between processes --------------------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from live.store import StateStore
store = StateStore(sys.argv[1])
store.acquire_runner_lock()
print("locked", flush=True)
time.sleep(60)
"""


def test_runner_lock_refuses_a_second_runner_and_dies_with_its_holder(tmp_path):
    holder = child(HOLD_LOCK, str(tmp_path), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with StateStore(tmp_path) as second:
            with pytest.raises(RunnerLockedError, match=f"another runner \\(pid {holder.pid}\\) is using"):
                second.acquire_runner_lock(wait_s=0.05)
            # readers and control commands do not need the lock
            assert second.status()["runner_pid"] == holder.pid
            second.request("emergency_stop")
            holder.send_signal(signal.SIGKILL)
            assert holder.wait(timeout=10) == -signal.SIGKILL
            assert second.runner_pid() is None
            lock = second.acquire_runner_lock()
            assert lock.held and second.runner_pid() == os.getpid()
            lock.release()
            assert second.runner_pid() is None
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()


POST_REQUEST = """
import sys
from live.store import StateStore
print(StateStore(sys.argv[1], create=False).request("approve_order", client_order_id="c7"))
"""

READ_REQUEST = """
import json, sys
from live.store import StateStore
r = StateStore(sys.argv[1], create=False).get_request(int(sys.argv[2]))
print(json.dumps([r.kind, r.args, r.handled_ms is not None, r.result]))
"""


def test_control_request_between_processes(tmp_path):
    with StateStore(tmp_path) as runner:
        runner.acquire_runner_lock()
        posted = run_child(POST_REQUEST, str(tmp_path))
        assert posted.returncode == 0, posted.stderr
        rid = int(posted.stdout)
        [req] = runner.pending_requests()
        assert (req.id, req.kind, req.args, req.handled_ms) == (rid, "approve_order", {"client_order_id": "c7"}, None)
        assert runner.mark_handled(rid, {"approved": True}, events=[{"kind": "order_approved"}])
        assert runner.mark_handled(rid) is False
        assert runner.pending_requests() == []
        read = run_child(READ_REQUEST, str(tmp_path), str(rid))
        assert read.returncode == 0, read.stderr
        assert json.loads(read.stdout) == ["approve_order", {"client_order_id": "c7"}, True, {"approved": True}]
        assert [e.kind for e in runner.events()] == ["order_approved"]
        with pytest.raises(ValueError, match="unknown control request kind 'launch'"):
            runner.request("launch")
        with pytest.raises(KeyError, match="no control request with id 99"):
            runner.mark_handled(99)


# --- kill -9 at any point -----------------------------------------------------------------------

SYMBOLS = ("BTC/USDT", "ETH/USDT")

# Step k of a toy runner: book the fill of order k-1 (with the order's update and a snapshot),
# then commit bar k (snapshot, cursor, new order k, an event, a flag). A restart resumes at the
# bar after the cursor; the fill of the resumed step may already be booked (then it is skipped).
TOY_RUNNER = """
import sys
from live.broker import BrokerFill, OrderRequest, OrderUpdate
from live.store import StateStore
T0, HOUR = 1_700_000_000_000, 3_600_000
SYMBOLS = ("BTC/USDT", "ETH/USDT")
store = StateStore(sys.argv[1])
store.acquire_runner_lock()
n = int(sys.argv[2])
cursor = store.cursor()
start = 0 if not cursor else (cursor["BTC/USDT"] - T0) // HOUR + 1
for k in range(start, n):
    if k:
        j = k - 1
        fill = BrokerFill(f"t{j}", f"o{j}", SYMBOLS[j % 2], "buy", 1.0 + j, 100.0 + j, 0.1, "USDT", T0 + j * HOUR + 60_000)
        if fill.trade_id not in store.known_trade_ids(fill.symbol):
            store.record_fill(fill, T0 + j * HOUR, order=OrderUpdate(f"o{j}", "filled", 1.0 + j, f"x{j}"),
                              snapshot=f"fill-{j}".encode(), summary={"equity": 2000.0 + j},
                              events=[{"kind": "fill", "trade_id": fill.trade_id}])
    order = OrderRequest(f"o{k}", SYMBOLS[k % 2], "buy", "limit", 1.0 + k, price=100.0 + k)
    store.commit_bar(dict.fromkeys(SYMBOLS, T0 + k * HOUR), f"bar-{k}".encode(), [order],
                     [{"kind": "bar", "k": k}], summary={"equity": 1000.0 + k}, flags={"bars": k + 1})
"""


def dump(state_dir: Path) -> dict:
    """Everything in the store but wall-clock stamps."""
    with StateStore(state_dir, create=False) as s:
        return {
            "cursor": s.cursor(),
            "snapshot": s.latest_snapshot(),
            "summary": s.latest_summary(),
            "snapshots": s.connection.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0],
            "orders": [(o.request, o.status, o.filled_qty, o.exchange_order_id, o.created_bar_ms)
                       for o in s.orders()],
            "fills": s.fills(),
            "events": [(e.id, e.kind, e.payload) for e in s.events()],
            "flags": s.flags(),
        }


def expected(bars: int, fills: int) -> dict:
    """The toy runner's store, written out by hand, after ``bars`` whole bars and ``fills``
    whole fills (``fills`` is ``bars - 1`` or ``bars``)."""
    events = []
    for k in range(bars + 1):
        if 1 <= k <= fills:
            events.append(("fill", {"trade_id": f"t{k - 1}"}))
        if k < bars:
            events.append(("bar", {"k": k}))
    last = T0 + (bars - 1) * HOUR
    fill_last = fills == bars and bars > 0
    return {
        "cursor": dict.fromkeys(sorted(SYMBOLS), last) if bars else {},
        "snapshot": None if not bars else (f"{'fill' if fill_last else 'bar'}-{bars - 1}".encode(), last),
        "summary": None if not bars else {"equity": (2000.0 if fill_last else 1000.0) + bars - 1},
        "snapshots": min(bars + fills, 3),
        "orders": [(OrderRequest(f"o{j}", SYMBOLS[j % 2], "buy", "limit", 1.0 + j, price=100.0 + j),
                    "filled" if j < fills else "created", 1.0 + j if j < fills else 0.0,
                    f"x{j}" if j < fills else None, T0 + j * HOUR) for j in range(bars)],
        "fills": [BrokerFill(f"t{j}", f"o{j}", SYMBOLS[j % 2], "buy", 1.0 + j, 100.0 + j, 0.1, "USDT",
                             T0 + j * HOUR + 60_000) for j in range(fills)],
        "events": [(i + 1, kind, payload) for i, (kind, payload) in enumerate(events)],
        "flags": {"bars": bars} if bars else {},
    }


def after_crash(point: str, nth: int, bars: int, fills: int) -> tuple[int, int]:
    """(bars, fills) after the toy runner, restarted with ``bars``/``fills`` stored, is killed
    the ``nth`` time it reaches ``point``. Every step reaches every point once (step 0 has no
    fill); a duplicate fill is skipped before record_fill."""
    if point.startswith(("before_record_fill", "record_fill")):
        # step k books fill k-1; steps whose fill is already booked skip record_fill
        k = max(bars, 1) + (fills == bars and bars > 0) + nth - 1
        return k, k - 1
    if point == "after_record_fill":
        k = max(bars, 1) + (fills == bars and bars > 0) + nth - 1
        return k, k
    k = bars + nth - 1  # the step killed in commit_bar
    return (k + 1, k) if point == "after_commit_bar" else (k, k)


def test_kill_9_at_random_points_loses_and_doubles_nothing(tmp_path):
    points = [p for p in CRASH_POINTS if "commit_bar" in p or "record_fill" in p]
    rng = random.Random(8)
    kills = points * 3  # every point of a bar and of a fill, three times, in a random order
    rng.shuffle(kills)
    state, n = tmp_path / "crashed", 150
    bars = fills = 0
    for point in kills:
        nth = rng.randint(1, 4)
        run = run_child(TOY_RUNNER, str(state), str(n), env={CRASH_ENV: f"{point}@{nth}"})
        assert run.returncode == -signal.SIGKILL, (point, nth, run.stderr)
        bars, fills = after_crash(point, nth, bars, fills)
        assert dump(state) == expected(bars, fills), (point, nth)
    assert bars < n
    finished = run_child(TOY_RUNNER, str(state), str(n))
    assert finished.returncode == 0, finished.stderr
    whole = run_child(TOY_RUNNER, str(tmp_path / "uninterrupted"), str(n))
    assert whole.returncode == 0, whole.stderr
    assert dump(state) == dump(tmp_path / "uninterrupted") == expected(n, n - 1)
