"""The live runner's state on disk: one SQLite file that survives ``kill -9`` at any moment.

``<state_dir>/state.sqlite`` (WAL journal, ``synchronous=FULL``: a commit that returned is on
disk) holds everything a killed runner needs to continue where it stopped:

- ``orders``: every order the runner recorded, with its last known status (never deleted);
- ``fills``: every execution booked, unique per (symbol, exchange trade id) (never deleted);
- ``snapshots``: the core's state as bytes after a bar (the latest few), with an optional JSON
  summary (equity, cash, ...) for ``tradpal runner status``;
- ``records``: the core's record arrays (fills, events) as raw bytes, appended with each
  snapshot that leaves them out (``BarStepper.snapshot(records=False)``), so a snapshot does
  not grow with the run (never deleted);
- ``cursor``: the open time of the last bar stepped, per symbol;
- ``events``: append-only, for the event bus to replay;
- ``flags``: small key/value state that outlives a restart (``halted``, ``halt_reason``, ...);
- ``requests``: control requests written by other processes (``tradpal runner stop`` /
  ``reset``, order approvals) for the runner to pick up and mark handled.

A bar (:meth:`StateStore.commit_bar`) and a fill (:meth:`StateStore.record_fill`) are each one
transaction: after a crash the store shows the whole bar or none of it.
:meth:`StateStore.transaction` groups several of them (a runner catching up commits many bars
at once) into one.

Only one runner may use a state directory: it holds ``<state_dir>/runner.lock`` (``flock``)
for its lifetime through :meth:`StateStore.acquire_runner_lock`; the kernel drops the lock when
the process dies, however it dies. Readers and control commands open the store without it.

Crash tests: :func:`crash_point` kills the process with ``SIGKILL`` at a named point when the
environment variable ``TRADPAL_CRASH_AT`` names it (``name`` or ``name@N``: the N-th time it is
reached). The store's own points are listed in :data:`CRASH_POINTS`; the runner adds its own.
"""

from __future__ import annotations

import fcntl
import json
import math
import operator
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

from live.broker import (
    FINAL_STATUSES,
    BrokerFill,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
)

#: Layout version of ``state.sqlite``. Bump it when a table changes meaning; a store written
#: with another version is refused, never misread.
SCHEMA_VERSION = 2  # 2: the records table
STATE_FILE = "state.sqlite"
LOCK_FILE = "runner.lock"

#: Control request kinds another process may post (``StateStore.request``).
REQUEST_KINDS: frozenset[str] = frozenset({"emergency_stop", "reset", "approve_order", "reject_order",
                                            "pause", "resume", "confirm_balance"})
ORDER_STATUSES: frozenset[str] = frozenset(get_args(OrderStatus))
ORDER_TYPES: frozenset[str] = frozenset(get_args(OrderType))

# --- crash test hook ------------------------------------------------------------------------

CRASH_ENV = "TRADPAL_CRASH_AT"
#: The points inside the store where ``TRADPAL_CRASH_AT`` can kill the process. ``<op>.commit``
#: is inside the transaction, just before COMMIT.
CRASH_POINTS: tuple[str, ...] = (
    "before_commit_bar", "commit_bar.snapshot", "commit_bar.cursor", "commit_bar.orders",
    "commit_bar.events", "commit_bar.commit", "after_commit_bar",
    "before_record_fill", "record_fill.commit", "after_record_fill",
    "before_record_order", "record_order.commit", "after_record_order",
    "before_update_order", "update_order.commit", "after_update_order",
)
_crash_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL here if ``TRADPAL_CRASH_AT`` is ``name`` (first time
    reached) or ``name@N`` (N-th time reached). A no-op otherwise: one environment lookup."""
    target = os.environ.get(CRASH_ENV)
    if not target:
        return
    point, _, nth = target.partition("@")
    if point != name:
        return
    if nth and not nth.isdigit():
        raise ValueError(f"{CRASH_ENV}={target!r}: expected POINT or POINT@N (N a whole number)")
    _crash_hits[name] = _crash_hits.get(name, 0) + 1
    if _crash_hits[name] >= (int(nth) if nth else 1):
        os.kill(os.getpid(), signal.SIGKILL)


# --- records read back ----------------------------------------------------------------------


@dataclass(frozen=True)
class StoredOrder:
    """An order as stored: what was asked (:attr:`request`) and its last known state."""

    request: OrderRequest
    status: str
    filled_qty: float
    exchange_order_id: str | None
    reason: str | None
    created_bar_ms: int | None
    updated_ms: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def client_order_id(self) -> str:
        return self.request.client_order_id

    @property
    def symbol(self) -> str:
        return self.request.symbol

    @property
    def is_open(self) -> bool:
        return self.status not in FINAL_STATUSES

    @property
    def update(self) -> OrderUpdate:
        """The stored state as the broker's record."""
        return OrderUpdate(self.client_order_id, self.status, self.filled_qty,  # type: ignore[arg-type]
                           self.exchange_order_id, self.reason)


@dataclass(frozen=True)
class StoredEvent:
    """One appended event; ``id`` grows with every append (replay from an id on)."""

    id: int
    ts_ms: int
    kind: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class ControlRequest:
    """A request posted by another process; ``handled_ms`` is None until the runner handled it."""

    id: int
    kind: str
    args: dict[str, Any]
    created_ms: int
    handled_ms: int | None
    result: Any


class RunnerLockedError(OSError):
    """Another live runner holds the state directory."""


class RunnerLock:
    """The single-runner lock on ``<state_dir>/runner.lock``: held until :meth:`release`, the
    end of a ``with`` block, or the death of the process."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunnerLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# --- the store ------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE orders (
    client_order_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, side TEXT NOT NULL,
    type TEXT NOT NULL, qty REAL, price REAL, "trigger" REAL, cost REAL,
    reduce_only INTEGER NOT NULL, status TEXT NOT NULL, filled_qty REAL NOT NULL,
    exchange_order_id TEXT, reason TEXT, created_bar_ms INTEGER, updated_ms INTEGER NOT NULL,
    extra TEXT NOT NULL);
CREATE INDEX orders_status ON orders (status);
CREATE TABLE fills (
    id INTEGER PRIMARY KEY AUTOINCREMENT, trade_id TEXT NOT NULL, symbol TEXT NOT NULL,
    client_order_id TEXT NOT NULL, side TEXT NOT NULL, qty REAL NOT NULL, price REAL NOT NULL,
    fee REAL NOT NULL, fee_currency TEXT NOT NULL, timestamp_ms INTEGER NOT NULL,
    booked_bar_ms INTEGER, UNIQUE (symbol, trade_id));
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT, bar_ms INTEGER NOT NULL, state BLOB NOT NULL,
    summary TEXT, created_ms INTEGER NOT NULL);
CREATE TABLE records (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE cursor (symbol TEXT PRIMARY KEY, bar_ms INTEGER NOT NULL);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms INTEGER NOT NULL, kind TEXT NOT NULL,
    payload TEXT NOT NULL);
CREATE TABLE flags (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, args TEXT NOT NULL,
    created_ms INTEGER NOT NULL, handled_ms INTEGER, result TEXT);
"""

_ORDER_COLUMNS = ('client_order_id, symbol, side, type, qty, price, "trigger", cost, reduce_only, '
                  "status, filled_qty, exchange_order_id, reason, created_bar_ms, updated_ms, extra")
_FILL_COLUMNS = "trade_id, client_order_id, symbol, side, qty, price, fee, fee_currency, timestamp_ms"
_REQUEST_COLUMNS = "id, kind, args, created_ms, handled_ms, result"
_BUSY_TIMEOUT_MS = 10_000  # a control command may wait this long for the runner's transaction


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serialisable: {exc}") from None


def _ms(value: Any, what: str) -> int:
    """An epoch-milliseconds integer (numpy integers accepted, floats and bools refused)."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an integer of epoch milliseconds, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer of epoch milliseconds, got {value!r}") from None


class StateStore:
    """The runner's state in ``<state_dir>/state.sqlite``.

    ``StateStore(dir)`` creates the directory and the file if needed; ``create=False`` (status,
    stop, reset commands) refuses a directory without a store. The runner itself must also call
    :meth:`acquire_runner_lock`. ``keep_snapshots`` is how many of the latest snapshots are
    kept; ``now_ms`` is the clock for ``updated_ms`` / ``created_ms`` stamps (wall clock).
    Use it from one thread; other processes open their own store on the same directory.
    """

    def __init__(self, state_dir: str | os.PathLike[str], *, create: bool = True,
                 keep_snapshots: int = 3, now_ms: Callable[[], int] = _wall_ms) -> None:
        if isinstance(keep_snapshots, bool) or not isinstance(keep_snapshots, int) or keep_snapshots < 1:
            raise ValueError(f"keep_snapshots must be an integer >= 1, got {keep_snapshots!r}")
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / STATE_FILE
        self.keep_snapshots = keep_snapshots
        self._now_ms = now_ms
        self._lock: RunnerLock | None = None
        self._grouped = False  # inside transaction()
        self._check_dir(create)
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as exc:
            raise OSError(f"cannot open the state store {self.path}: {exc}") from None
        try:
            self._open()
        except BaseException:
            self._conn.close()
            raise

    def _check_dir(self, create: bool) -> None:
        if create:
            try:
                self.state_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot create the state directory {self.state_dir}: "
                                         f"{exc.strerror}") from None
        elif not self.path.exists():
            raise FileNotFoundError(f"no runner state in {self.state_dir}: {self.path} does not exist")
        if self.path.exists() and not self.path.is_file():
            raise IsADirectoryError(f"the state store {self.path} is not a file")
        # SQLite's WAL needs to create state.sqlite-wal / -shm beside the file, readers too
        if not os.access(self.state_dir, os.W_OK | os.X_OK):
            raise PermissionError(f"the state directory {self.state_dir} is not writable")

    def _open(self) -> None:
        try:
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise OSError(f"cannot put the state store {self.path} in WAL mode (SQLite says {mode!r})")
            self._conn.execute("PRAGMA synchronous=FULL")
            tables = self._tables()
            if "schema_version" not in tables:
                with self._write(None):
                    # another process may have created it since we looked
                    if "schema_version" not in self._tables():
                        self._create_schema()
            self._check_version()
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
                raise ValueError(f"{self.path} is not a TradPal state store (SQLite: {exc})") from None
            raise OSError(f"cannot open the state store {self.path}: {exc}") from None

    def _tables(self) -> set[str]:
        rows = self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows} - {"sqlite_sequence"}

    def _create_schema(self) -> None:
        tables = self._tables()
        if tables:
            raise ValueError(f"{self.path} is an SQLite file but not a TradPal state store "
                             f"(tables {sorted(tables)}, no schema_version)")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self._conn.execute(statement)
        self._conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))

    def _check_version(self) -> None:
        rows = self._conn.execute("SELECT version FROM schema_version").fetchall()
        if len(rows) != 1:
            raise ValueError(f"{self.path}: the schema_version table holds {len(rows)} rows, not 1")
        version = rows[0][0]
        if version != SCHEMA_VERSION:
            newer = isinstance(version, int) and version > SCHEMA_VERSION
            raise ValueError(
                f"{self.path} has state schema version {version}; this TradPal reads version "
                f"{SCHEMA_VERSION}" + (" (the store was written by a newer TradPal)" if newer else ""))

    # --- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database and release the runner lock if this store holds it."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self._conn.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The underlying connection (for inspection; write only through the methods)."""
        return self._conn

    # --- the single-runner lock ---------------------------------------------------------------

    @property
    def lock_path(self) -> Path:
        return self.state_dir / LOCK_FILE

    def acquire_runner_lock(self, wait_s: float = 0.5) -> RunnerLock:
        """Take the single-runner lock for this process's lifetime (released by :meth:`close`,
        the returned lock's ``release()``, or the process's death). Raises
        :class:`RunnerLockedError` naming the holder's pid if another runner holds it after
        ``wait_s`` seconds (the short wait rides over a ``status`` probe of the lock)."""
        if self._lock is not None and self._lock.held:
            raise RuntimeError(f"this store already holds the runner lock {self.lock_path}")
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_pid(fd)
                    os.close(fd)
                    who = f"pid {holder}" if holder else "another process"
                    raise RunnerLockedError(
                        f"another runner ({who}) is using the state directory {self.state_dir}: "
                        f"{self.lock_path} is locked; stop that runner first") from None
                time.sleep(0.01)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock = RunnerLock(self.lock_path, fd)
        return self._lock

    def runner_pid(self) -> int | None:
        """The pid of the live runner holding this directory (-1 if held but the pid is not
        readable), or None if no runner holds it."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_pid(fd) or -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    # --- transactions -------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[StateStore]:
        """Group several writes (:meth:`commit_bar`, :meth:`record_fill`, ...) into ONE
        transaction: after a crash the store shows all of them or none. Inside it each write's
        crash points fire where they would alone; its data is committed with the group. Not
        nestable."""
        if self._grouped:
            raise RuntimeError("StateStore.transaction() is already open; it does not nest")
        self._conn.execute("BEGIN IMMEDIATE")
        self._grouped = True
        try:
            yield self
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        finally:
            self._grouped = False

    @property
    def in_transaction(self) -> bool:
        """True inside :meth:`transaction`."""
        return self._grouped

    @contextmanager
    def _write(self, op: str | None) -> Iterator[sqlite3.Connection]:
        """One write transaction (or a part of the open :meth:`transaction`); crash points
        ``before_<op>``, ``<op>.commit``, ``after_<op>``."""
        if op:
            crash_point(f"before_{op}")
        if self._grouped:
            yield self._conn
            if op:
                crash_point(f"{op}.commit")
                crash_point(f"after_{op}")
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            if op:
                crash_point(f"{op}.commit")
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        if op:
            crash_point(f"after_{op}")

    # --- writes -------------------------------------------------------------------------------

    def commit_bar(self, bar_ms: Mapping[str, int] | int, snapshot: bytes | None,
                   orders: Iterable[OrderRequest | OrderUpdate] = (),
                   events: Iterable[Mapping[str, Any]] = (), *,
                   summary: Mapping[str, Any] | None = None,
                   flags: Mapping[str, Any] | None = None,
                   records: Mapping[str, bytes] | None = None) -> None:
        """Persist one stepped bar in ONE transaction: the core's ``snapshot`` (with the JSON
        ``summary`` shown by :meth:`status`), the cursor, the orders, the events and ``flags``;
        ``records`` (only with a snapshot): raw record bytes by kind (``{"fills": b"...",
        "events": b"..."}``) appended to what :meth:`records` returns.

        ``bar_ms`` is the bar's open time (epoch ms) per symbol, or one int for the same bar on
        every symbol already in the cursor (the first commit must name the symbols). A bar older
        than a symbol's cursor is refused. ``orders``: an :class:`OrderRequest` is recorded as
        in :meth:`record_order` (status ``created``), an :class:`OrderUpdate` applied as in
        :meth:`update_order`. ``events``: dicts with a ``kind`` and optionally ``ts_ms``; the
        other keys are the payload. A crash leaves the whole bar or none of it.

        ``snapshot=None`` (with no ``summary``): the bar's cursor, orders and events only, for
        the earlier bars of several committed in one :meth:`transaction` whose last
        ``commit_bar`` carries the snapshot (a runner catching up)."""
        if snapshot is None:
            if not self._grouped:
                raise ValueError("commit_bar without a snapshot is only allowed inside "
                                 "StateStore.transaction(), before a commit_bar with one")
            if summary is not None or records:
                raise ValueError("commit_bar: a summary or records are stored with a snapshot; pass it")
        blob = None if snapshot is None else _blob(snapshot)
        record_rows = [(str(kind), _blob(data)) for kind, data in (records or {}).items() if len(data)]
        bars = dict(bar_ms) if isinstance(bar_ms, Mapping) else _ms(bar_ms, "bar_ms")
        if isinstance(bars, dict):
            if not bars:
                raise ValueError("bar_ms must name at least one symbol")
            bars = {str(s): _ms(ms, f"bar_ms[{s!r}]") for s, ms in bars.items()}
        orders = list(orders)
        for order in orders:
            _check_order_record(order)
        event_rows = self._event_rows(events)
        summary_json = None if summary is None else _dumps(dict(summary), "summary")
        flag_rows = self._flag_rows(flags or {})
        with self._write("commit_bar") as db:
            if isinstance(bars, int):
                symbols = [s for (s,) in db.execute("SELECT symbol FROM cursor")]
                if not symbols:
                    raise ValueError("bar_ms as one int needs known symbols: pass {symbol: bar_ms} "
                                     "on the first commit_bar")
                bars = dict.fromkeys(symbols, bars)
            snap_ms = max(bars.values())
            if blob is not None:
                self._insert_snapshot(snap_ms, blob, summary_json, record_rows)
            crash_point("commit_bar.snapshot")
            for symbol, ms in bars.items():
                row = db.execute("SELECT bar_ms FROM cursor WHERE symbol = ?", (symbol,)).fetchone()
                if row is not None and ms < row[0]:
                    raise ValueError(f"bar_ms {ms} of {symbol} is older than its stored cursor {row[0]}")
                db.execute("INSERT INTO cursor (symbol, bar_ms) VALUES (?, ?) "
                           "ON CONFLICT (symbol) DO UPDATE SET bar_ms = excluded.bar_ms", (symbol, ms))
            crash_point("commit_bar.cursor")
            for order in orders:
                if isinstance(order, OrderRequest):
                    self._insert_order(order, "created", bars.get(order.symbol, snap_ms), None)
                else:
                    self._apply_update(order, None)
            crash_point("commit_bar.orders")
            self._insert_events(event_rows)
            crash_point("commit_bar.events")
            self._upsert_flags(flag_rows)

    def record_order(self, request: OrderRequest, status: str = "created", bar_ms: int | None = None,
                     *, extra: Mapping[str, Any] | None = None,
                     events: Iterable[Mapping[str, Any]] = ()) -> bool:
        """Record a new order (own transaction), before it is sent. Returns False (and writes
        nothing) if the very same order is already recorded: client order ids are deterministic,
        so a restarted runner regenerates them. The same id with a different order is refused.
        ``bar_ms``: the bar that created it; ``extra``: JSON data kept with it."""
        _check_order_record(request)
        _check_status(status)
        created_ms = None if bar_ms is None else _ms(bar_ms, "bar_ms")
        extra_json = _dumps(dict(extra or {}), "extra")
        event_rows = self._event_rows(events)
        with self._write("record_order"):
            inserted = self._insert_order(request, status, created_ms, extra_json)
            if inserted:
                self._insert_events(event_rows)
        return inserted

    def update_order(self, update: OrderUpdate, *, extra: Mapping[str, Any] | None = None,
                     events: Iterable[Mapping[str, Any]] = ()) -> None:
        """Apply a broker's :class:`OrderUpdate` to a recorded order (own transaction); ``extra``
        keys are merged into the order's extra data. An unknown client order id is a KeyError:
        record (adopt) the order first."""
        _check_order_record(update)
        extra_items = None if extra is None else dict(extra)
        if extra_items is not None:
            _dumps(extra_items, "extra")
        event_rows = self._event_rows(events)
        with self._write("update_order"):
            self._apply_update(update, extra_items)
            self._insert_events(event_rows)

    def record_fill(self, fill: BrokerFill, bar_ms: int | None = None, *,
                    order: OrderUpdate | None = None, snapshot: bytes | None = None,
                    summary: Mapping[str, Any] | None = None,
                    events: Iterable[Mapping[str, Any]] = (),
                    orders: Iterable[OrderRequest | OrderUpdate] = (),
                    records: Mapping[str, bytes] | None = None) -> bool:
        """Book one fill in ONE transaction, with the order's new state, the core's snapshot
        after booking it (``bar_ms`` = the last bar stepped, required with a snapshot), events
        and ``orders`` the fill made or changed, and ``records`` with the snapshot (both as in
        :meth:`commit_bar`). Returns False and writes nothing if this (symbol, trade id) is already booked;
        check :meth:`known_trade_ids` before booking a fill into the core."""
        if not isinstance(fill, BrokerFill):
            raise TypeError(f"fill must be a BrokerFill, got {type(fill).__name__}")
        booked_ms = None if bar_ms is None else _ms(bar_ms, "bar_ms")
        fill_ms = _ms(fill.timestamp_ms, "timestamp_ms")
        blob = None if snapshot is None else _blob(snapshot)
        if blob is not None and booked_ms is None:
            raise ValueError("record_fill with a snapshot needs bar_ms, the bar the snapshot follows")
        if records and blob is None:
            raise ValueError("record_fill: records are stored with a snapshot; pass it")
        record_rows = [(str(kind), _blob(data)) for kind, data in (records or {}).items() if len(data)]
        if order is not None:
            _check_order_record(order)
        orders = list(orders)
        for o in orders:
            _check_order_record(o)
        summary_json = None if summary is None else _dumps(dict(summary), "summary")
        event_rows = self._event_rows(events)
        with self._write("record_fill") as db:
            cur = db.execute(
                f"INSERT INTO fills ({_FILL_COLUMNS}, booked_bar_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (symbol, trade_id) DO NOTHING",
                (fill.trade_id, fill.client_order_id, fill.symbol, fill.side, fill.qty, fill.price,
                 fill.fee, fill.fee_currency, fill_ms, booked_ms))
            if cur.rowcount == 0:
                return False
            if order is not None:
                self._apply_update(order, None)
            for o in orders:
                if isinstance(o, OrderRequest):
                    self._insert_order(o, "created", booked_ms, None)
                else:
                    self._apply_update(o, None)
            if blob is not None:
                self._insert_snapshot(booked_ms, blob, summary_json, record_rows)
            self._insert_events(event_rows)
        return True

    def append_events(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Append events on their own (one transaction)."""
        rows = self._event_rows(events)
        with self._write(None):
            self._insert_events(rows)

    def set_flag(self, key: str, value: Any) -> None:
        """Set a persistent flag to a JSON value (``None`` clears it)."""
        rows = self._flag_rows({key: value})
        with self._write(None):
            self._upsert_flags(rows)

    # --- write helpers (inside a transaction) -------------------------------------------------

    def _insert_snapshot(self, bar_ms: int, blob: bytes, summary_json: str | None,
                         record_rows: list[tuple[str, bytes]]) -> None:
        """A snapshot (the newest ``keep_snapshots`` are kept) and the records stored beside it."""
        db = self._conn
        db.execute("INSERT INTO snapshots (bar_ms, state, summary, created_ms) VALUES (?, ?, ?, ?)",
                   (bar_ms, blob, summary_json, self._now_ms()))
        db.execute("DELETE FROM snapshots WHERE id NOT IN "
                   "(SELECT id FROM snapshots ORDER BY id DESC LIMIT ?)", (self.keep_snapshots,))
        db.executemany("INSERT INTO records (kind, data) VALUES (?, ?)", record_rows)

    def _insert_order(self, request: OrderRequest, status: str, bar_ms: int | None,
                      extra_json: str | None) -> bool:
        row = self._conn.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE client_order_id = ?",
                                 (request.client_order_id,)).fetchone()
        if row is not None:
            known = _order_from_row(row).request
            if known != request:
                raise ValueError(f"client_order_id {request.client_order_id!r} is already recorded "
                                 f"for another order: {known} != {request}")
            return False
        self._conn.execute(
            f"INSERT INTO orders ({_ORDER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (request.client_order_id, request.symbol, request.side, request.type, request.qty,
             request.price, request.trigger, request.cost, int(request.reduce_only), status, 0.0,
             None, None, bar_ms, self._now_ms(), extra_json or "{}"))
        return True

    def _apply_update(self, update: OrderUpdate, extra: dict[str, Any] | None) -> None:
        row = self._conn.execute("SELECT extra FROM orders WHERE client_order_id = ?",
                                 (update.client_order_id,)).fetchone()
        if row is None:
            raise KeyError(f"order update for unknown client_order_id {update.client_order_id!r}: "
                           "record the order first")
        merged = row[0] if extra is None else _dumps({**json.loads(row[0]), **extra}, "extra")
        self._conn.execute(
            "UPDATE orders SET status = ?, filled_qty = ?, exchange_order_id = COALESCE(?, exchange_order_id), "
            "reason = COALESCE(?, reason), updated_ms = ?, extra = ? WHERE client_order_id = ?",
            (update.status, float(update.filled_qty), update.exchange_order_id, update.reason,
             self._now_ms(), merged, update.client_order_id))

    def _event_rows(self, events: Iterable[Mapping[str, Any]]) -> list[tuple[int, str, str]]:
        rows = []
        for event in events:
            if not isinstance(event, Mapping) or not isinstance(event.get("kind"), str) or not event["kind"]:
                raise ValueError(f"an event must be a dict with a non-empty 'kind', got {event!r}")
            payload = {k: v for k, v in event.items() if k not in ("kind", "ts_ms")}
            ts = _ms(event["ts_ms"], "event ts_ms") if "ts_ms" in event else self._now_ms()
            rows.append((ts, event["kind"], _dumps(payload, f"the payload of event {event['kind']!r}")))
        return rows

    def _insert_events(self, rows: list[tuple[int, str, str]]) -> None:
        self._conn.executemany("INSERT INTO events (ts_ms, kind, payload) VALUES (?, ?, ?)", rows)

    @staticmethod
    def _flag_rows(flags: Mapping[str, Any]) -> list[tuple[str, str | None]]:
        rows = []
        for key, value in flags.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"a flag key must be a non-empty string, got {key!r}")
            rows.append((key, None if value is None else _dumps(value, f"flag {key!r}")))
        return rows

    def _upsert_flags(self, rows: list[tuple[str, str | None]]) -> None:
        for key, value in rows:
            if value is None:
                self._conn.execute("DELETE FROM flags WHERE key = ?", (key,))
            else:
                self._conn.execute("INSERT INTO flags (key, value) VALUES (?, ?) "
                                   "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    # --- reads --------------------------------------------------------------------------------

    def latest_snapshot(self) -> tuple[bytes, int] | None:
        """The latest snapshot and the open time (ms) of the bar it follows, or None."""
        row = self._conn.execute("SELECT state, bar_ms FROM snapshots ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else (bytes(row[0]), row[1])

    def records(self, kind: str) -> bytes:
        """Every record of ``kind`` committed with the snapshots (``commit_bar(records=)``),
        in commit order, as one bytes string (empty if none)."""
        return b"".join(bytes(d) for (d,) in
                        self._conn.execute("SELECT data FROM records WHERE kind = ? ORDER BY id", (kind,)))

    def latest_summary(self) -> dict[str, Any] | None:
        """The JSON summary saved with the latest snapshot, or None."""
        row = self._conn.execute("SELECT summary FROM snapshots ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None or row[0] is None else json.loads(row[0])

    def cursor(self) -> dict[str, int]:
        """The open time (ms) of the last bar committed, per symbol."""
        return dict(self._conn.execute("SELECT symbol, bar_ms FROM cursor ORDER BY symbol"))

    def orders(self, status: str | Iterable[str] | None = None, symbol: str | None = None
               ) -> list[StoredOrder]:
        """Orders in the order they were recorded. ``status``: None (all), ``"open"`` (not in
        ``FINAL_STATUSES``), one status or several; ``symbol`` narrows to one symbol."""
        where, args = [], []
        if status == "open":
            where.append(f"status NOT IN ({', '.join('?' * len(FINAL_STATUSES))})")
            args += sorted(FINAL_STATUSES)
        elif status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            for s in wanted:
                _check_status(s)
            where.append(f"status IN ({', '.join('?' * len(wanted))})")
            args += wanted
        if symbol is not None:
            where.append("symbol = ?")
            args.append(symbol)
        sql = f"SELECT {_ORDER_COLUMNS} FROM orders"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_order_from_row(r) for r in self._conn.execute(sql + " ORDER BY rowid", args)]

    def order(self, client_order_id: str) -> StoredOrder | None:
        """One order by client order id, or None."""
        row = self._conn.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE client_order_id = ?",
                                 (client_order_id,)).fetchone()
        return None if row is None else _order_from_row(row)

    def fills(self, symbol: str | None = None) -> list[BrokerFill]:
        """Fills in the order they were booked (all symbols, or one)."""
        sql = f"SELECT {_FILL_COLUMNS} FROM fills"
        rows = (self._conn.execute(sql + " ORDER BY id") if symbol is None
                else self._conn.execute(sql + " WHERE symbol = ? ORDER BY id", (symbol,)))
        return [BrokerFill(*r) for r in rows]

    def known_trade_ids(self, symbol: str) -> set[str]:
        """Exchange trade ids already booked on ``symbol``."""
        return {t for (t,) in self._conn.execute("SELECT trade_id FROM fills WHERE symbol = ?", (symbol,))}

    def last_fill_ms(self, symbol: str) -> int | None:
        """The latest booked fill's exchange timestamp on ``symbol`` (where a reconcile resumes)."""
        return self._conn.execute("SELECT MAX(timestamp_ms) FROM fills WHERE symbol = ?",
                                  (symbol,)).fetchone()[0]

    def events(self, after_id: int = 0, limit: int | None = None) -> list[StoredEvent]:
        """Events with an id above ``after_id``, oldest first (at most ``limit``)."""
        rows = self._conn.execute("SELECT id, ts_ms, kind, payload FROM events WHERE id > ? ORDER BY id "
                                  "LIMIT ?", (after_id, -1 if limit is None else limit))
        return [StoredEvent(i, ts, kind, json.loads(p)) for i, ts, kind, p in rows]

    def get_flag(self, key: str, default: Any = None) -> Any:
        """A persistent flag's value, or ``default`` if it is not set."""
        row = self._conn.execute("SELECT value FROM flags WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def flags(self) -> dict[str, Any]:
        """All persistent flags."""
        return {k: json.loads(v) for k, v in self._conn.execute("SELECT key, value FROM flags ORDER BY key")}

    # --- control requests (between processes) -------------------------------------------------

    def request(self, kind: str, **args: Any) -> int:
        """Post a control request for the runner (from any process); returns its id. ``kind``
        is one of :data:`REQUEST_KINDS`; ``args`` are JSON values (e.g. ``client_order_id``)."""
        if kind not in REQUEST_KINDS:
            raise ValueError(f"unknown control request kind {kind!r}; one of {', '.join(sorted(REQUEST_KINDS))}")
        args_json = _dumps(args, f"the arguments of request {kind!r}")
        with self._write(None) as db:
            cur = db.execute("INSERT INTO requests (kind, args, created_ms) VALUES (?, ?, ?)",
                             (kind, args_json, self._now_ms()))
        return int(cur.lastrowid)

    def pending_requests(self) -> list[ControlRequest]:
        """Requests not handled yet, oldest first."""
        rows = self._conn.execute(f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE handled_ms IS NULL ORDER BY id")
        return [_request_from_row(r) for r in rows]

    def get_request(self, request_id: int) -> ControlRequest | None:
        """One request by id (its requester polls it to learn the outcome), or None."""
        row = self._conn.execute(f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE id = ?", (request_id,)).fetchone()
        return None if row is None else _request_from_row(row)

    def mark_handled(self, request_id: int, result: Any = None,
                     events: Iterable[Mapping[str, Any]] = ()) -> bool:
        """Mark a request handled with a JSON ``result`` (and events, same transaction). Returns
        False if it was handled already; an unknown id is a KeyError."""
        result_json = None if result is None else _dumps(result, "result")
        event_rows = self._event_rows(events)
        with self._write(None) as db:
            row = db.execute("SELECT handled_ms FROM requests WHERE id = ?", (request_id,)).fetchone()
            if row is None:
                raise KeyError(f"no control request with id {request_id}")
            if row[0] is not None:
                return False
            db.execute("UPDATE requests SET handled_ms = ?, result = ? WHERE id = ?",
                       (self._now_ms(), result_json, request_id))
            self._insert_events(event_rows)
        return True

    # --- summary ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A JSON-ready summary for ``tradpal runner status``: halted state, last bar per symbol,
        open orders, fill count, the latest snapshot's summary (equity, ...), pending requests
        and the pid of the runner holding the directory (None if none)."""
        db = self._conn
        snap = db.execute("SELECT bar_ms FROM snapshots ORDER BY id DESC LIMIT 1").fetchone()
        flags = self.flags()
        return {
            "state_file": str(self.path),
            "schema_version": SCHEMA_VERSION,
            "runner_pid": self.runner_pid(),
            "halted": bool(flags.get("halted", False)),
            "halt_reason": flags.get("halt_reason"),
            "paused": bool(flags.get("paused", False)),
            "flags": flags,
            "cursor": self.cursor(),
            "snapshot_bar_ms": None if snap is None else snap[0],
            "summary": self.latest_summary(),
            "open_orders": [_order_json(o) for o in self.orders("open")],
            "orders": db.execute("SELECT COUNT(*) FROM orders").fetchone()[0],
            "fills": db.execute("SELECT COUNT(*) FROM fills").fetchone()[0],
            "pending_requests": [asdict(r) for r in self.pending_requests()],
        }


# --- row <-> record -------------------------------------------------------------------------


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


def _blob(snapshot: Any) -> bytes:
    if not isinstance(snapshot, bytes | bytearray | memoryview):
        raise TypeError(f"snapshot must be bytes, got {type(snapshot).__name__}")
    return bytes(snapshot)


def _check_status(status: str) -> None:
    if status not in ORDER_STATUSES:
        raise ValueError(f"unknown order status {status!r}; one of {', '.join(sorted(ORDER_STATUSES))}")


def _check_order_record(order: Any) -> None:
    if isinstance(order, OrderUpdate):
        _check_status(order.status)
        if not (isinstance(order.filled_qty, int | float) and math.isfinite(order.filled_qty)):
            raise ValueError(f"filled_qty of {order.client_order_id!r} must be a finite number, "
                             f"got {order.filled_qty!r}")
    elif isinstance(order, OrderRequest):
        if order.side not in ("buy", "sell"):
            raise ValueError(f"side of {order.client_order_id!r} must be 'buy' or 'sell', got {order.side!r}")
        if order.type not in ORDER_TYPES:
            raise ValueError(f"type of {order.client_order_id!r} must be one of "
                             f"{', '.join(sorted(ORDER_TYPES))}, got {order.type!r}")
    else:
        raise TypeError(f"orders must be OrderRequest or OrderUpdate records, got {type(order).__name__}")


def _order_from_row(row: tuple) -> StoredOrder:
    (coid, symbol, side, type_, qty, price, trigger, cost, reduce_only, status, filled_qty,
     exchange_order_id, reason, created_bar_ms, updated_ms, extra) = row
    request = OrderRequest(coid, symbol, side, type_, qty, price, trigger, cost, bool(reduce_only))
    return StoredOrder(request, status, filled_qty, exchange_order_id, reason, created_bar_ms,
                       updated_ms, json.loads(extra))


def _order_json(order: StoredOrder) -> dict[str, Any]:
    return {**asdict(order.request), "status": order.status, "filled_qty": order.filled_qty,
            "exchange_order_id": order.exchange_order_id, "reason": order.reason,
            "created_bar_ms": order.created_bar_ms, "updated_ms": order.updated_ms, "extra": order.extra}


def _request_from_row(row: tuple) -> ControlRequest:
    rid, kind, args, created_ms, handled_ms, result = row
    return ControlRequest(rid, kind, json.loads(args), created_ms, handled_ms,
                          None if result is None else json.loads(result))
