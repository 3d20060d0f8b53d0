"""The event bus: the runner publishes :mod:`live.events` with one call; consumers watch.

- :class:`InProcessBus` (default): subscribers are called synchronously in the runner's
  process; a subscriber that raises is logged and counted, publishing goes on.
- :class:`RedisStreamsBus`: one Redis stream per runner (``tradpal:<runner>:events``). Publishing
  never raises into the runner: while Redis is unreachable, events go to an :class:`Outbox` in
  the runner's SQLite state file and are flushed, in order, before any newer event once Redis
  answers again. The events of one publish call (a bar's) share stream entries, up to
  ``entry_events`` per entry (field ``e``: one event's JSON, or a JSON array of them): one
  Redis entry per bar rather than per event keeps the bus fast.
- :class:`StreamConsumer`: reads through a consumer group: at-least-once, acknowledged after
  handling, reclaims what a dead consumer left pending (``XAUTOCLAIM`` after ``claim_idle_ms``),
  moves a message that failed ``max_deliveries`` times to ``tradpal:<runner>:dead``. With a
  :class:`ProcessedIds` set the handler's effect is applied once per event id.
- :class:`ParquetJournal`: a consumer's handler writing events to Parquet files for research.

Trimming. The stream is trimmed to about ``maxlen`` entries, but never past an entry some
consumer group has not acknowledged: every ``trim_every`` entries the publisher runs one Lua
script (atomic in Redis) that takes, per group, the oldest pending id (``XPENDING``) or, with
nothing pending, its last-delivered id (``XINFO GROUPS``), and trims with ``XTRIM MINID ~`` at
the lowest of those and the ``maxlen`` cut. So no order or fill event (nor any other) is
trimmed before every group acknowledged it; a group nobody reads any more holds the stream
(``XGROUP DESTROY`` it). Readers without a group (``tradpal events tail`` without ``--group``)
get no such guarantee.

Durability: "acknowledged by Redis" means on disk only with ``appendonly yes`` and
``appendfsync always``; with ``everysec`` a Redis crash may lose the last second.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from live.events import Event, encode, entry_text, from_dict, parse_entry, to_dict
from live.store import crash_point

log = logging.getLogger(__name__)

Handler = Callable[[Event], None]


def stream_key(runner: str) -> str:
    """The runner's event stream."""
    return f"tradpal:{runner}:events"


def dead_letter_key(runner: str) -> str:
    """Where messages that failed too often go."""
    return f"tradpal:{runner}:dead"


def _check_runner(runner: str) -> str:
    if not isinstance(runner, str) or not runner or any(c in runner for c in ":*? \n"):
        raise ValueError(f"runner name must be a non-empty string without ':', '*', '?' or spaces, got {runner!r}")
    return runner


def redis_client(url: str, *, timeout_s: float = 1.0) -> redis.Redis:
    """A client with short timeouts and one quick retry (a reconnect after a Redis restart), so a
    dead Redis costs the caller at most about ``2 * timeout_s``. ``url``: ``redis://[:password@]host:port/db``."""
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("--redis-url must look like redis://host:port (or rediss://, unix://)")
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                retry=Retry(NoBackoff(), 1), decode_responses=True)


class Bus(Protocol):
    """What the runner publishes to."""

    def publish(self, event: Event) -> None: ...

    def publish_many(self, events: Iterable[Event]) -> None: ...

    def flush(self, max_batches: int | None = None, *, now: bool = False) -> int:
        """Send what waits (the runner calls it on its heartbeat); returns how many were sent.
        ``now``: try at once, even within the wait after a failure (a session's last flush)."""
        ...

    @property
    def outbox_depth(self) -> int: ...

    def close(self) -> None: ...


# --- in process -------------------------------------------------------------------------------


class InProcessBus:
    """Synchronous fan-out to subscribers in this process (the default bus)."""

    def __init__(self) -> None:
        self._subscribers: list[tuple[Handler, frozenset[str] | None]] = []
        self.published = 0
        self.errors = 0  # subscriber calls that raised

    def subscribe(self, handler: Handler, kinds: Iterable[str] | None = None) -> Callable[[], None]:
        """Call ``handler(event)`` for every event (of ``kinds`` only, if given); returns a
        function that unsubscribes it."""
        entry = (handler, None if kinds is None else frozenset(kinds))
        self._subscribers.append(entry)
        return lambda: self._subscribers.remove(entry)

    def publish(self, event: Event) -> None:
        self.published += 1
        for handler, kinds in list(self._subscribers):
            if kinds is not None and event.kind not in kinds:
                continue
            try:
                handler(event)
            except Exception:  # a broken subscriber must not stop the runner
                self.errors += 1
                log.exception("event subscriber %r failed on %s", handler, event.id)

    def publish_many(self, events: Iterable[Event]) -> None:
        for event in events:
            self.publish(event)

    def flush(self, max_batches: int | None = None, *, now: bool = False) -> int:
        return 0  # nothing ever waits

    @property
    def outbox_depth(self) -> int:
        return 0

    def close(self) -> None:
        self._subscribers.clear()


# --- the outbox -------------------------------------------------------------------------------


class Outbox:
    """Events waiting for Redis, in the runner's SQLite state file (table ``bus_outbox``).

    It has its own connection to the file (the store's tables are untouched and its schema
    version unchanged; the store ignores tables it does not know). ``synchronous=FULL``: an
    event appended is on disk.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS bus_outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                           "stream TEXT NOT NULL, event_id TEXT NOT NULL, kind TEXT NOT NULL, event TEXT NOT NULL)")
        self._depth = self._conn.execute("SELECT COUNT(*) FROM bus_outbox").fetchone()[0]

    @classmethod
    def for_store(cls, store: Any) -> Outbox:
        """The outbox in a :class:`live.store.StateStore`'s file."""
        return cls(store.path)

    @property
    def depth(self) -> int:
        """Events waiting."""
        return self._depth

    def append(self, rows: Sequence[tuple[str, str, str, str]]) -> None:
        """Append ``(stream, event_id, kind, json)`` rows in one transaction."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany("INSERT INTO bus_outbox (stream, event_id, kind, event) VALUES (?, ?, ?, ?)", rows)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._depth += len(rows)

    def head(self, limit: int) -> list[tuple[int, str, str, str, str]]:
        """The oldest ``limit`` rows: ``(seq, stream, event_id, kind, json)``."""
        return self._conn.execute("SELECT seq, stream, event_id, kind, event FROM bus_outbox ORDER BY seq LIMIT ?",
                                  (limit,)).fetchall()

    def remove_through(self, seq: int) -> None:
        """Drop the rows up to ``seq`` (sent)."""
        cur = self._conn.execute("DELETE FROM bus_outbox WHERE seq <= ?", (seq,))
        self._depth -= cur.rowcount

    def close(self) -> None:
        self._conn.close()


# --- publishing to Redis ----------------------------------------------------------------------

# Trim KEYS[1] at MINID ~ min(ARGV[1], every group's oldest unacknowledged id); returns the count trimmed.
_TRIM_LUA = """
local key = KEYS[1]
local floor = ARGV[1]
local function lower(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local low = info['last-delivered-id']
  if tonumber(info['pending']) > 0 then
    low = redis.call('XPENDING', key, info['name'])[2]
  end
  if lower(low, floor) then floor = low end
end
return redis.call('XTRIM', key, 'MINID', '~', floor)
"""


# XADD each JSON event of ARGV to KEYS[1] as an entry with one field ``e``, in order: one command
# for a whole batch (far less client-side work than a pipeline of XADDs); returns the first id.
_XADD_MANY_LUA = """
local first = redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
for i = 2, #ARGV do redis.call('XADD', KEYS[1], '*', 'e', ARGV[i]) end
return first
"""


class RedisStreamsBus:
    """Publish to the runner's Redis stream; never raises into the runner.

    ``outbox``: where events wait while Redis is unreachable (:meth:`Outbox.for_store` of the
    runner's store). After a failure Redis is retried at most every ``retry_s`` seconds; each
    :meth:`publish_many` (and :meth:`flush`, which the runner may call on its heartbeat) then
    first sends the outbox, oldest first, ``flush_batch`` at a time, and sends new events
    directly only once the outbox is empty, so the stream keeps the publishing order.
    ``entry_events``: most events per stream entry. ``maxlen`` (entries) / ``trim_every``: see
    the module docstring. Counters: ``published`` (sent to
    Redis), ``outboxed``, ``send_errors``, ``trimmed``.
    """

    def __init__(self, url: str, runner_name: str, *, outbox: Outbox, maxlen: int = 100_000,
                 trim_every: int = 1_000, retry_s: float = 1.0, timeout_s: float = 1.0,
                 flush_batch: int = 5_000, entry_events: int = 100) -> None:
        for name, value in (("maxlen", maxlen), ("trim_every", trim_every), ("flush_batch", flush_batch),
                            ("entry_events", entry_events)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.runner = _check_runner(runner_name)
        self.stream = stream_key(runner_name)
        self.outbox = outbox
        self.maxlen, self.trim_every, self.flush_batch = maxlen, trim_every, flush_batch
        self.entry_events = entry_events
        self.retry_s = retry_s
        self._redis = redis_client(url, timeout_s=timeout_s)
        self._trim = self._redis.register_script(_TRIM_LUA)
        self._xadd_many = self._redis.register_script(_XADD_MANY_LUA)
        self._recent: deque[tuple[str, int]] = deque()  # (first id, count) of the latest batches sent
        self._recent_n = 0
        self._since_trim = 0
        self._retry_at = 0.0  # monotonic time before which Redis is not tried again
        self.published = self.outboxed = self.send_errors = self.trimmed = 0

    @property
    def outbox_depth(self) -> int:
        return self.outbox.depth

    def publish(self, event: Event) -> None:
        self.publish_many((event,))

    def publish_many(self, events: Iterable[Event]) -> None:
        """Send ``events`` in order (one round trip), or keep them in the outbox."""
        rows = []
        for event in events:
            try:
                rows.append((self.stream, event.id, event.kind, encode(event)))
            except (TypeError, ValueError):  # a bug in whoever built it: say so, keep trading
                self.send_errors += 1
                log.exception("event %s cannot be encoded; not published", event.id)
        if not rows:
            return
        if self.outbox.depth == 0 and time.monotonic() >= self._retry_at:
            try:
                self._send(rows)
                return
            except Exception as exc:  # noqa: BLE001 - whatever Redis does, the runner goes on
                self._failed(exc)
        try:
            self.outbox.append(rows)
            self.outboxed += len(rows)
        except sqlite3.Error:  # the disk is gone too: nothing left to keep them in
            self.send_errors += len(rows)
            log.exception("the event outbox %s refused %d events", self.outbox.path, len(rows))
            return
        self.flush(max_batches=2)  # a long outbox drains over several calls, not in one bar

    def flush(self, max_batches: int | None = None, *, now: bool = False) -> int:
        """Send what waits in the outbox (if Redis is due for a try, or at once with ``now``),
        at most ``max_batches`` times ``flush_batch`` events (default: all); returns how many
        were sent."""
        sent = batches = 0
        if now:
            self._retry_at = 0.0
        while self.outbox.depth and time.monotonic() >= self._retry_at and batches != max_batches:
            batch = self.outbox.head(self.flush_batch)
            batches += 1
            try:
                self._send([row[1:] for row in batch])
            except Exception as exc:  # noqa: BLE001 - whatever Redis does, the runner goes on
                self._failed(exc)
                break
            self.outbox.remove_through(batch[-1][0])
            sent += len(batch)
        return sent

    def _failed(self, exc: Exception) -> None:
        self.send_errors += 1
        self._retry_at = time.monotonic() + self.retry_s
        log.warning("Redis unreachable (%s); events go to the outbox (%d waiting)",
                    type(exc).__name__, self.outbox.depth)

    def _send(self, rows: Sequence[tuple[str, str, str, str]]) -> None:
        texts = [row[3] for row in rows]
        entries = [entry_text(texts[i:i + self.entry_events]) for i in range(0, len(texts), self.entry_events)]
        first = self._xadd_many(keys=[self.stream], args=entries)
        self.published += len(rows)
        n = len(entries)
        self._since_trim += n
        # the maxlen cut: the first id of the oldest batch still needed to keep maxlen entries
        self._recent.append((first, n))
        self._recent_n += n
        while self._recent_n - self._recent[0][1] >= self.maxlen:
            self._recent_n -= self._recent.popleft()[1]
        if self._since_trim >= self.trim_every and self._recent_n >= self.maxlen:
            self._since_trim = 0
            try:  # the events are in: a failed trim must not send them again
                self.trimmed += int(self._trim(keys=[self.stream], args=[self._recent[0][0]]))
            except redis.RedisError as exc:
                log.warning("trimming %s failed (%s); next time", self.stream, type(exc).__name__)

    def close(self) -> None:
        self._redis.close()
        self.outbox.close()


# --- consuming ------------------------------------------------------------------------------


class ProcessedIds:
    """The event ids a consumer group has applied, in SQLite (shared by the group's consumers
    on one host). :meth:`batch` is one transaction; :meth:`Batch.apply` runs the handler and
    records the id under a savepoint, so a handler that writes its effect through
    :attr:`connection` applies each event exactly once, whatever crashes. Ids older than
    ``keep_s`` are forgotten."""

    def __init__(self, path: str | os.PathLike[str], *, keep_s: float = 7 * 86400) -> None:
        self.path = Path(path)
        self.keep_ms = int(keep_s * 1000)
        self.connection = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("CREATE TABLE IF NOT EXISTS processed (id TEXT PRIMARY KEY, at_ms INTEGER NOT NULL)")
        self.connection.execute("CREATE INDEX IF NOT EXISTS processed_at ON processed (at_ms)")

    class Batch:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self._conn = conn

        def apply(self, event_id: str, effect: Callable[[], None]) -> bool:
            """Run ``effect`` and record ``event_id`` unless it was recorded; True if it ran."""
            if self._conn.execute("SELECT 1 FROM processed WHERE id = ?", (event_id,)).fetchone():
                return False
            self._conn.execute("SAVEPOINT ev")
            try:
                effect()
                self._conn.execute("INSERT INTO processed (id, at_ms) VALUES (?, ?)", (event_id, time.time_ns() // 1_000_000))
            except BaseException:
                self._conn.execute("ROLLBACK TO ev")
                self._conn.execute("RELEASE ev")
                raise
            self._conn.execute("RELEASE ev")
            return True

    @contextmanager
    def batch(self) -> Iterator[ProcessedIds.Batch]:
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield ProcessedIds.Batch(self.connection)
            crash_point("bus.before_commit")
            self.connection.execute("COMMIT")
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise

    def prune(self) -> int:
        """Forget ids older than ``keep_s``; returns how many."""
        cutoff = time.time_ns() // 1_000_000 - self.keep_ms
        return self.connection.execute("DELETE FROM processed WHERE at_ms < ?", (cutoff,)).rowcount

    def close(self) -> None:
        self.connection.close()


class _NoDedup:
    """Stands in for :class:`ProcessedIds` when none is given: every delivery is applied."""

    class Batch:
        @staticmethod
        def apply(event_id: str, effect: Callable[[], None]) -> bool:
            effect()
            return True

    @contextmanager
    def batch(self) -> Iterator[_NoDedup.Batch]:
        yield _NoDedup.Batch()
        crash_point("bus.before_commit")


class StreamConsumer:
    """One consumer ``name`` of consumer group ``group`` on the runner's stream.

    :meth:`poll` handles one batch: first what other consumers left pending longer than
    ``claim_idle_ms`` (``XAUTOCLAIM``, checked at most every ``claim_idle_ms / 4``), else new
    messages (``XREADGROUP``, waiting up to ``block_ms``); ``count`` is in entries. Each event of
    an entry is decoded and handed to ``handler`` (under ``processed`` when given, see
    :class:`ProcessedIds`), then the batch is acknowledged in one ``XACK``. An entry with an
    event that could not be read or handled stays pending and is delivered again after
    ``claim_idle_ms`` (its other events are applied again unless ``processed`` remembers them);
    on its ``max_deliveries``-th failed delivery the failing events go to the dead-letter
    stream with their error and the entry is acknowledged. An entry delivered more often than
    that without an acknowledgement (it kills its consumers) is dead-lettered whole. ``start_id`` is where a new group
    starts (``"0"``: the whole stream, ``"$"``: only new events).
    """

    def __init__(self, url: str, runner_name: str, group: str, name: str, *,
                 processed: ProcessedIds | None = None, claim_idle_ms: int = 30_000,
                 max_deliveries: int = 5, start_id: str = "0", timeout_s: float = 5.0) -> None:
        if isinstance(max_deliveries, bool) or not isinstance(max_deliveries, int) or max_deliveries < 1:
            raise ValueError(f"max_deliveries must be an integer >= 1, got {max_deliveries!r}")
        if isinstance(claim_idle_ms, bool) or not isinstance(claim_idle_ms, int) or claim_idle_ms < 1:
            raise ValueError(f"claim_idle_ms must be an integer >= 1, got {claim_idle_ms!r}")
        self.runner = _check_runner(runner_name)
        self.stream, self.dead = stream_key(runner_name), dead_letter_key(runner_name)
        self.group, self.name = group, name
        self.claim_idle_ms, self.max_deliveries = claim_idle_ms, max_deliveries
        self._processed: ProcessedIds | _NoDedup = processed or _NoDedup()
        self._redis = redis_client(url, timeout_s=timeout_s)
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self.handled = self.duplicates = self.failures = self.dead_lettered = 0
        try:
            self._redis.xgroup_create(self.stream, group, id=start_id, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def poll(self, handler: Handler, *, count: int = 500, block_ms: int = 1000,
             on_batch: Callable[[], None] | None = None) -> int:
        """Handle one batch; returns how many events it settled (handled, found handled already
        or dead-lettered; an entry dead-lettered whole counts one). ``on_batch`` runs after the batch's handlers, before the commit and the
        acknowledgement (a journal writes its file there)."""
        messages = self._claim(count)
        if not messages:
            resp = self._redis.xreadgroup(self.group, self.name, {self.stream: ">"}, count=count, block=block_ms)
            messages = [(mid, fields, 1) for mid, fields in resp[0][1]] if resp else []
        if not messages:
            return 0
        acks: list[str] = []
        dead: list[dict[str, str]] = []  # dead-letter entries
        settled = 0  # events
        with self._processed.batch() as batch:
            for mid, fields, deliveries in messages:
                text = fields.get("e", "")
                if deliveries > self.max_deliveries:  # it kills its consumers: drop it whole
                    dead.append({"e": text, "original_id": mid,
                                 "error": f"delivered {deliveries} times without an acknowledgement"})
                    acks.append(mid)
                    settled += 1
                    continue
                n_ok, failed = self._handle_entry(mid, text, deliveries, batch, handler)
                if failed and deliveries < self.max_deliveries:
                    continue  # stays pending: delivered again after claim_idle_ms
                # all handled, or this was the last try: dead-letter what failed, settle the rest
                dead += [{"e": raw, "original_id": mid, "error": err} for raw, err in failed]
                acks.append(mid)
                settled += n_ok + len(failed)
            if on_batch is not None:
                on_batch()
        crash_point("bus.before_ack")
        if acks:
            pipe = self._redis.pipeline(transaction=True)
            for entry in dead:
                pipe.xadd(self.dead, {**entry, "group": self.group})
            pipe.xack(self.stream, self.group, *acks)
            pipe.execute()
            self.dead_lettered += len(dead)
        return settled

    def _handle_entry(self, mid: str, text: str, deliveries: int, batch: Any, handler: Handler
                      ) -> tuple[int, list[tuple[str, str]]]:
        """Handle an entry's events; returns how many went through and the ones that failed
        as (JSON, error)."""
        try:
            items = parse_entry(text)
        except ValueError as exc:
            self.failures += 1
            log.warning("consumer %s: message %s is unreadable (delivery %d): %s", self.name, mid, deliveries, exc)
            return 0, [(text, f"ValueError: {exc}"[:500])]
        failed = []
        for raw in items:
            try:
                event = from_dict(raw)
                if batch.apply(event.id, lambda e=event: handler(e)):
                    self.handled += 1
                else:
                    self.duplicates += 1
            except Exception as exc:  # noqa: BLE001 - a handler's failure is the message's, not ours
                self.failures += 1
                log.warning("consumer %s failed on an event of message %s (delivery %d): %s",
                            self.name, mid, deliveries, exc)
                failed.append((text if len(items) == 1 else json.dumps(raw), f"{type(exc).__name__}: {exc}"[:500]))
        return len(items) - len(failed), failed

    def _claim(self, count: int) -> list[tuple[str, dict[str, str], int]]:
        now = time.monotonic()
        if now < self._next_claim:
            return []
        cursor, claimed, *_ = self._redis.xautoclaim(self.stream, self.group, self.name, self.claim_idle_ms,
                                                     start_id=self._claim_cursor, count=count)
        self._claim_cursor = cursor
        if cursor == "0-0":  # went round the whole pending list: rest a while, forget old ids
            self._next_claim = now + self.claim_idle_ms / 4000
            if isinstance(self._processed, ProcessedIds):
                self._processed.prune()
        claimed = [(mid, fields) for mid, fields in claimed if fields]
        if not claimed:
            return []
        info = self._redis.xpending_range(self.stream, self.group, claimed[0][0], claimed[-1][0],
                                          len(claimed), consumername=self.name)
        times = {p["message_id"]: p["times_delivered"] for p in info}
        return [(mid, fields, int(times.get(mid, 1))) for mid, fields in claimed]

    def run(self, handler: Handler, *, should_stop: Callable[[], bool] = lambda: False,
            on_batch: Callable[[], None] | None = None, count: int = 500, block_ms: int = 1000) -> None:
        """:meth:`poll` until ``should_stop()``."""
        while not should_stop():
            self.poll(handler, count=count, block_ms=block_ms, on_batch=on_batch)

    def close(self) -> None:
        self._redis.close()


# --- the Parquet journal ----------------------------------------------------------------------


class ParquetJournal:
    """A handler that collects events and writes each batch to ``<out_dir>/events-*.parquet``
    (columns ``id, kind, runner, ts_ms, v, data`` with ``data`` as JSON). Pass :meth:`handle`
    as the handler and :meth:`write` as ``on_batch`` so a batch is on disk before it is
    acknowledged. A crash between the file and the acknowledgement can write an event twice
    (in two files): :func:`read_journal` keeps the first of each id."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._rows: list[dict[str, Any]] = []
        self.files = 0

    def handle(self, event: Event) -> None:
        row = to_dict(event)
        row["data"] = json.dumps(row["data"], separators=(",", ":"))
        self._rows.append(row)

    def write(self) -> Path | None:
        """Write the collected events to a new file (atomically: temp file, then rename)."""
        if not self._rows:
            return None
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(self._rows, schema=_journal_schema())
        # named by the time of writing, so the files sort in the order they were consumed
        name = f"events-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.out_dir / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.out_dir / name)
        self._rows = []
        self.files += 1
        return self.out_dir / name


def _journal_schema():
    import pyarrow as pa  # imported on use: the runner need not load it

    return pa.schema([("v", pa.int64()), ("kind", pa.string()), ("id", pa.string()), ("runner", pa.string()),
                      ("ts_ms", pa.int64()), ("data", pa.string())])


def read_journal(out_dir: str | os.PathLike[str]):
    """Every journaled event as a DataFrame in the order consumed, one row per event id."""
    import pandas as pd

    files = sorted(Path(out_dir).glob("events-*.parquet"))
    if not files:
        return pd.DataFrame(columns=[f.name for f in _journal_schema()])
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return frame.drop_duplicates("id").reset_index(drop=True)
