"""The live runner's events: typed, versioned records with deterministic ids.

Every event is a frozen dataclass with the ``runner`` that emitted it and ``ts_ms`` (wall clock,
epoch milliseconds), plus the fields of its kind. :attr:`Event.id` is built from the runner,
the kind and the kind's *key* fields only (never the wall clock): the same fact published twice
(a retry after Redis dropped the connection, a restarted runner replaying a bar) has the same id,
so a consumer that remembers the ids it handled applies it once.

On the wire an event is one JSON object::

    {"v": 1, "kind": "fill", "id": "paper1:fill:BTC/USDT:t17", "runner": "paper1",
     "ts_ms": 1700000000000, "data": {...the kind's fields...}}

``v`` is the kind's schema version; :func:`decode` refuses a version it does not know
(:class:`EventVersionError`) rather than misread it.

:func:`from_step` turns what ``BarStepper.step()`` returns (``event_dt`` and ``fill_dt``
records) into bus events.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, dataclass_transform

import numpy as np
import orjson

from framework import enums, orders


class EventVersionError(ValueError):
    """An event written with a schema version this TradPal does not read."""


@dataclass_transform(kw_only_default=True, frozen_default=True)
@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event: who emitted it and when (wall clock, epoch ms).

    A kind is a subclass naming its ``kind`` and ``key`` in the class statement, then its
    fields; it becomes a frozen, keyword-only dataclass::

        class Fill(Event, kind="fill", key=("symbol", "trade_id")):
            symbol: str
            ...
    """

    kind: ClassVar[str] = ""
    version: ClassVar[int] = 1
    #: the fields that, with the runner and the kind, identify the fact (see :attr:`id`)
    key: ClassVar[tuple[str, ...]] = ()

    runner: str
    ts_ms: int

    def __init_subclass__(cls, kind: str = "", key: tuple[str, ...] | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if kind:
            cls.kind = kind
        if key is not None:
            cls.key = key
        dataclass(frozen=True, kw_only=True)(cls)

    @functools.cached_property
    def id(self) -> str:
        """Deterministic id: ``<runner>:<kind>:<key fields...>`` (computed once)."""
        return ":".join([self.runner, self.kind, *(_key_part(getattr(self, f)) for f in self.key)])

    def data(self) -> dict[str, Any]:
        """The kind's own fields (everything but ``runner`` and ``ts_ms``)."""
        return {name: getattr(self, name) for name in _data_fields(type(self))}


@functools.cache
def _data_fields(cls: type[Event]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.name not in ("runner", "ts_ms"))


def _key_part(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- session ----------------------------------------------------------------------------------

class SessionStarted(Event, kind="session_started", key=("session_id",)):
    session_id: str
    strategy: str = ""
    symbols: list[str] = field(default_factory=list)
    mode: str = ""  # paper / live


class SessionStopped(Event, kind="session_stopped", key=("session_id",)):
    session_id: str
    reason: str = ""


# --- market and strategy ----------------------------------------------------------------------

class Bar(Event, kind="bar", key=("symbol", "bar_ms")):
    symbol: str
    bar_ms: int  # open time
    open: float
    high: float
    low: float
    close: float
    volume: float


class Signal(Event, kind="signal", key=("symbol", "bar_ms")):
    symbol: str
    bar_ms: int
    action: str  # long / short / exit
    order_type: str = "market"
    price: float | None = None


# --- orders -----------------------------------------------------------------------------------

class OrderEvent(Event, key=("client_order_id", "status", "filled_qty", "bar_ms")):
    """An order's state after a change; the subclasses say which change."""

    client_order_id: str
    symbol: str
    side: str
    order_type: str
    status: str
    bar_ms: int  # the bar at which it changed
    qty: float | None = None
    notional: float | None = None
    price: float | None = None
    trigger: float | None = None
    filled_qty: float = 0.0
    avg_price: float | None = None
    reason: str = ""  # why the order exists: signal, stop_loss, ...
    reject_reason: str = ""  # why rejected / cancelled


class OrderCreated(OrderEvent, kind="order_created"):
    """Decided at a close, not yet at a broker."""


class OrderSubmitted(OrderEvent, kind="order_submitted"):
    """Working at the broker."""


class OrderUpdated(OrderEvent, kind="order_updated"):
    """Partially filled, filled, expired, or a working stop's trigger moved."""


class OrderCancelled(OrderEvent, kind="order_cancelled"):
    """Withdrawn (a risk limit, the emergency stop, its position closing)."""


class OrderRejected(OrderEvent, kind="order_rejected"):
    """Refused, with ``reject_reason``."""


class Fill(Event, kind="fill", key=("symbol", "trade_id")):
    symbol: str
    trade_id: str  # the exchange's (or the paper matcher's) id: unique per symbol
    client_order_id: str
    side: str
    qty: float
    price: float
    fee: float
    fee_currency: str
    fill_ms: int


# --- positions --------------------------------------------------------------------------------

class PositionEvent(Event, key=("symbol", "trade_id")):
    """A position after the fill ``trade_id`` changed it."""

    symbol: str
    trade_id: str
    qty: float  # signed
    avg_price: float | None = None
    realized_pnl: float = 0.0


class PositionOpened(PositionEvent, kind="position_opened"):
    """From flat to a position."""


class PositionChanged(PositionEvent, kind="position_changed"):
    """Added to, reduced or reversed."""


class PositionClosed(PositionEvent, kind="position_closed"):
    """Back to flat."""


# --- risk, feed, reconciliation, health -------------------------------------------------------

class RiskLimitFired(Event, kind="risk_limit_fired", key=("rule", "bar_ms", "symbol")):
    rule: str  # halt (max drawdown), daily_block, liquidation, ...
    bar_ms: int
    symbol: str = ""  # "" for the whole account
    detail: str = ""


class EmergencyStop(Event, kind="emergency_stop", key=("bar_ms",)):
    bar_ms: int  # the last bar stepped when it was raised
    reason: str = ""


class FeedStale(Event, kind="feed_stale", key=("symbol", "since_ms")):
    symbol: str
    since_ms: int  # when the feed was judged stale
    last_bar_ms: int | None = None


class FeedRecovered(Event, kind="feed_recovered", key=("symbol", "stale_since_ms")):
    symbol: str
    stale_since_ms: int
    recovered_ms: int


class Reconciliation(Event, kind="reconciliation", key=("at_ms",)):
    at_ms: int
    ok: bool
    differences: list[str] = field(default_factory=list)


class ControlEvent(Event, key=("bar_ms", "request")):
    """A control request the runner carried out (``request`` is the store's request id, None
    when called in process); the subclasses say which."""

    bar_ms: int  # the last bar stepped when it was carried out
    request: int | None = None


class Paused(ControlEvent, kind="paused"):
    """New entries blocked (exits and stops still managed) until :class:`Resumed`."""


class Resumed(ControlEvent, kind="resumed"):
    """Entries allowed again after :class:`Paused`."""


class Reset(ControlEvent, kind="reset"):
    """An emergency stop lifted."""


class Notice(Event, kind="notice", key=("topic", "bar_ms", "symbols")):
    """Something the runner logged and recorded that has no kind of its own: ``topic``
    ``bar_skipped`` (a symbol had no bar), ``bar_rejected``, ``feed_rejected``, ``feed_hole``."""

    topic: str
    bar_ms: int | None = None
    symbols: list[str] = field(default_factory=list)
    message: str = ""


class Heartbeat(Event, kind="heartbeat", key=("session_id", "seq")):
    session_id: str
    seq: int


class PerformanceSnapshot(Event, kind="performance", key=("bar_ms",)):
    bar_ms: int
    equity: float
    cash: float
    drawdown: float
    stats: dict[str, float | None] = field(default_factory=dict)  # the core's streaming statistics


#: every event class by its kind
EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls for cls in (
        SessionStarted, SessionStopped, Bar, Signal, OrderCreated, OrderSubmitted, OrderUpdated,
        OrderCancelled, OrderRejected, Fill, PositionOpened, PositionChanged, PositionClosed,
        RiskLimitFired, EmergencyStop, FeedStale, FeedRecovered, Reconciliation, Paused, Resumed,
        Reset, Notice, Heartbeat, PerformanceSnapshot)
}
#: kinds a trim of the Redis stream must never drop before every group acknowledged them
CRITICAL_KINDS: frozenset[str] = frozenset(
    {"order_created", "order_submitted", "order_updated", "order_cancelled", "order_rejected", "fill"})


# --- JSON -------------------------------------------------------------------------------------

# orjson (a declared dependency; ccxt needs it too): several times faster than json
def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


_loads: Callable[[str | bytes], Any] = orjson.loads


def _finite(value: Any) -> bool:
    """False if ``value`` is or holds (in dicts and lists) a NaN or an infinity."""
    kind = type(value)
    if kind is float:
        return math.isfinite(value)
    if kind is dict:
        return all(_finite(v) for v in value.values())
    if kind is list:
        return all(_finite(v) for v in value)
    return True


def to_dict(event: Event) -> dict[str, Any]:
    """The wire form (see the module docstring)."""
    return {"v": event.version, "kind": event.kind, "id": event.id, "runner": event.runner,
            "ts_ms": event.ts_ms, "data": event.data()}


def encode(event: Event) -> str:
    """One line of JSON; NaN and infinities are refused (JSON has no such numbers)."""
    obj = to_dict(event)
    if not _finite(obj["data"]):
        bad = [k for k, v in obj["data"].items() if not _finite(v)]
        raise ValueError(f"event {event.id!r}: field {bad[0]!r} holds NaN or an infinity, which JSON "
                         "cannot carry (use None)")
    return _dumps(obj)


def decode(text: str | bytes) -> Event:
    """An event from its JSON; ``ValueError`` for anything malformed and
    :class:`EventVersionError` for a schema version this TradPal does not read."""
    try:
        obj = _loads(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"an event must be a JSON object: {exc}") from None
    return from_dict(obj)


def entry_text(encoded: Sequence[str]) -> str:
    """Several encoded events as one stream entry: the event itself if alone, else a JSON array."""
    return encoded[0] if len(encoded) == 1 else "[" + ",".join(encoded) + "]"


def parse_entry(text: str | bytes) -> list[Any]:
    """The events of a stream entry, still as dicts (decode each with :func:`from_dict`);
    ``ValueError`` if it is not JSON, an object or an array."""
    try:
        obj = _loads(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"an event must be a JSON object: {exc}") from None
    if isinstance(obj, dict):
        return [obj]
    if isinstance(obj, list):
        return obj
    raise ValueError(f"a stream entry must be a JSON object or array, got {type(obj).__name__}")


def from_dict(obj: Any) -> Event:
    """An event from its wire form (a dict); see :func:`decode`."""
    if not isinstance(obj, dict):
        raise ValueError(f"an event must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("kind")
    cls = EVENT_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r}; known: {', '.join(sorted(EVENT_TYPES))}")
    version = obj.get("v")
    if version != cls.version:
        raise EventVersionError(
            f"event {obj.get('id')!r} of kind {kind!r} has schema version {version!r}; this "
            f"TradPal reads version {cls.version}" +
            (" (written by a newer TradPal: upgrade the consumer)"
             if isinstance(version, int) and version > cls.version else ""))
    data = obj.get("data")
    if not isinstance(data, dict):
        raise ValueError(f"event {obj.get('id')!r}: 'data' must be an object")
    try:
        event = cls(runner=obj["runner"], ts_ms=obj["ts_ms"], **data)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"event {obj.get('id')!r} of kind {kind!r} does not fit its schema: {exc}") from None
    if "id" in obj and obj["id"] != event.id:
        raise ValueError(f"event id {obj['id']!r} does not match its content (expected {event.id!r})")
    return event


# --- the core's step output -> events ----------------------------------------------------------

_ORDER_KIND: dict[str, type[OrderEvent]] = {
    "created": OrderCreated, "submitted": OrderSubmitted, "partially_filled": OrderUpdated,
    "filled": OrderUpdated, "expired": OrderUpdated, "cancelled": OrderCancelled,
    "rejected": OrderRejected,
}
_RISK_RULE = {enums.EVENT_HALT: "halt", enums.EVENT_DAILY_BLOCK: "daily_block",
              enums.EVENT_LIQUIDATION: "liquidation"}


def _num(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def from_step(events: np.ndarray, fills: np.ndarray, *, runner: str, tag: str, run_id: str,
              symbols: Sequence[str], bar_ms: Callable[[int], int], ts_ms: int) -> list[Event]:
    """Bus events for one step of ``BarStepper``: its ``events`` (``event_dt``) then its
    ``fills`` (``fill_dt``), in that order.

    ``tag`` and ``run_id`` make the client order ids (``framework.orders.client_order_id``;
    the stepper's are ``orders.strategy_tag(strategy)`` and ``stepper.run_id``); ``symbols``
    names the columns; ``bar_ms(bar_index)`` is that bar's open time in epoch ms. A paper fill
    has no exchange trade id: it gets ``<client_order_id>@<bar>#<n>`` (n counts the order's
    fills in this step), the same on a replay of the bar.
    """
    if events.dtype != enums.event_dt or fills.dtype != enums.fill_dt:
        raise TypeError("events must be event_dt records and fills fill_dt records "
                        "(what BarStepper.step() returns)")
    out: list[Event] = []
    for e in events:
        kind, col = int(e["kind"]), int(e["col"])
        symbol = symbols[col] if col >= 0 else ""
        at = bar_ms(int(e["bar"]))
        if kind in (enums.EVENT_ORDER, enums.EVENT_AMENDED):
            status = enums.STATUS_NAMES[e["status"]]
            cls = OrderUpdated if kind == enums.EVENT_AMENDED else _ORDER_KIND[status]
            out.append(cls(
                runner=runner, ts_ms=ts_ms, client_order_id=orders.client_order_id(tag, run_id, col, e["order_id"]),
                symbol=symbol, side="buy" if e["side"] > 0 else "sell",
                order_type=enums.ORDER_TYPE_NAMES[e["order_type"]], status=status, bar_ms=at,
                qty=_num(e["qty"]), notional=_num(e["notional"]), price=_num(e["price"]),
                trigger=_num(e["trigger"]), filled_qty=float(e["filled_qty"]), avg_price=_num(e["avg_price"]),
                reason=enums.REASON_NAMES[e["reason"]], reject_reason=enums.REJECT_NAMES[e["reject"]]))
        elif kind == enums.EVENT_EMERGENCY:
            out.append(EmergencyStop(runner=runner, ts_ms=ts_ms, bar_ms=at))
        else:
            out.append(RiskLimitFired(runner=runner, ts_ms=ts_ms, rule=_RISK_RULE[kind], bar_ms=at, symbol=symbol))
    seen: dict[str, int] = {}
    for f in fills:
        col = int(f["col"])
        coid = orders.client_order_id(tag, run_id, col, f["order_id"])
        n = seen[coid] = seen.get(coid, 0) + 1
        out.append(Fill(
            runner=runner, ts_ms=ts_ms, symbol=symbols[col], trade_id=f"{coid}@{int(f['bar'])}#{n}",
            client_order_id=coid, side="buy" if f["side"] > 0 else "sell", qty=float(f["qty"]),
            price=float(f["price"]), fee=float(f["fees"]),
            fee_currency="base" if f["fee_ccy"] == enums.FEE_BASE else "quote", fill_ms=bar_ms(int(f["bar"]))))
    return out


def _ms(iso_time: str | None) -> int | None:
    """Epoch ms of the runner's ISO 8601 UTC times (``live.runner.iso``)."""
    if iso_time is None:
        return None
    from datetime import datetime

    return int(datetime.fromisoformat(iso_time).timestamp() * 1000)


class RunnerEvents:
    """Turns the event dicts a :class:`live.runner.LiveRunner` commits (``on_commit``) into bus
    events of ``runner``: orders, fills, risk limits, emergency stop, feed, control. The
    runner's ``session_started`` of a new run's warm-up is not converted: the service around
    the runner announces every session (:class:`SessionStarted`) itself. It remembers when each
    symbol's feed went stale, for :class:`FeedRecovered`."""

    def __init__(self, runner: str) -> None:
        self.runner = runner
        self._stale_since: dict[str, int] = {}

    def __call__(self, d: dict[str, Any], ts_ms: int) -> list[Event]:
        kind, runner = d["kind"], self.runner
        bar_ms = _ms(d.get("bar"))
        if kind in ("order", "amended"):
            cls = OrderUpdated if kind == "amended" else _ORDER_KIND[d["status"]]
            return [cls(runner=runner, ts_ms=ts_ms, client_order_id=d["client_order_id"], symbol=d["symbol"],
                        side=d["side"], order_type=d["order_type"], status=d["status"], bar_ms=bar_ms,
                        qty=d["qty"], price=d["price"], trigger=d["trigger"], filled_qty=d["filled_qty"],
                        reason=d["reason"], reject_reason=d["reject_reason"] or "")]
        if kind in ("order_submitted", "order_rejected"):  # the broker's answer (broker mode)
            cls = OrderSubmitted if kind == "order_submitted" else OrderRejected
            return [cls(runner=runner, ts_ms=ts_ms, client_order_id=d["client_order_id"], symbol=d["symbol"],
                        side=d.get("side") or "", order_type=d.get("order_type") or "",
                        status=d.get("status") or kind.removeprefix("order_"), bar_ms=bar_ms or ts_ms,
                        qty=d.get("qty"), price=d.get("price"), trigger=d.get("trigger"),
                        filled_qty=d.get("filled_qty") or 0.0,
                        reject_reason=(d.get("reason") or "") if kind == "order_rejected" else "")]
        if kind == "signal":
            return [Signal(runner=runner, ts_ms=ts_ms, symbol=d["symbol"], bar_ms=bar_ms, action=d["action"],
                           order_type=d.get("order_type") or "market", price=d.get("price"))]
        if kind == "reconciliation":
            return [Reconciliation(runner=runner, ts_ms=ts_ms, at_ms=ts_ms, ok=bool(d["ok"]),
                                   differences=list(d.get("differences", [])))]
        if kind == "fill":
            return [Fill(runner=runner, ts_ms=ts_ms, symbol=d["symbol"], trade_id=d["trade_id"],
                         client_order_id=d["client_order_id"], side=d["side"], qty=d["qty"], price=d["price"],
                         fee=d["fee"], fee_currency=d["fee_currency"], fill_ms=bar_ms)]
        if kind in ("halt", "daily_block", "liquidation"):
            return [RiskLimitFired(runner=runner, ts_ms=ts_ms, rule=kind, bar_ms=bar_ms,
                                   symbol=d.get("symbol", ""), detail=d.get("reason", ""))]
        if kind == "emergency_stop":
            return [EmergencyStop(runner=runner, ts_ms=ts_ms, bar_ms=bar_ms, reason=d.get("reason", ""))]
        if kind in ("paused", "resumed", "reset"):
            return [EVENT_TYPES[kind](runner=runner, ts_ms=ts_ms, bar_ms=bar_ms, request=d.get("request"))]
        if kind == "feed_stale":
            since = ts_ms if bar_ms is None else bar_ms
            out: list[Event] = []
            for symbol in d["symbols"]:
                self._stale_since.setdefault(symbol, since)
                out.append(FeedStale(runner=runner, ts_ms=ts_ms, symbol=symbol, since_ms=since, last_bar_ms=bar_ms))
            return out
        if kind == "feed_fresh":
            return [FeedRecovered(runner=runner, ts_ms=ts_ms, symbol=s, stale_since_ms=since, recovered_ms=ts_ms)
                    for s in d["symbols"] if (since := self._stale_since.pop(s, None)) is not None]
        if kind == "session_started":
            return []
        return [Notice(runner=runner, ts_ms=ts_ms, topic=kind, bar_ms=bar_ms, symbols=list(d.get("symbols", [])),
                       message=d.get("message", ""))]


def describe(event: Event) -> str:
    """One human-readable line (``tradpal events tail``)."""
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(event.ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    parts = []
    for k, v in event.data().items():
        if v is None or v == "" or v == [] or v == {}:
            continue
        parts.append(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}")
    return f"{when} {event.runner} {event.kind:<17} " + " ".join(parts)

