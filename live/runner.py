"""The live runner: one strategy, bar by bar, on the core's step, persisted after every bar.

    runner = LiveRunner(strategy, PaperBroker(), feed, settings, store,
                        symbols=["BTC/USDT"], timeframe="1h", warmup_bars=500, run_id="paper1")
    runner.run(max_bars=100)

One :class:`~framework.runner.BarStepper` with one column per symbol and one cash group (cash is
shared, as in a ``cash_sharing`` backtest; for one symbol it is the plain backtest). A single
thread owns it: control requests (``tradpal runner stop`` / ``reset``) arrive through the store
and signals only set a flag, both handled between two bars, so nothing ever sees a half-applied
step.

**Start.** The runner takes the store's runner lock. If the store holds a snapshot it restores
it and asks the feed for the bars after the stored cursor (the bars that closed while it was
down are stepped first). Otherwise it warms up: the last ``warmup_bars`` closed bars of every
symbol, kept where all symbols have a bar, are stepped with trading off (``trade_from``), so
the first live decision is the backtest's at that bar; the warm-up is committed as one bar.

**Each closed bar** (a :class:`~live.feed.BarBatch`): step, record the step's fills (one
transaction each, with deterministic trade ids ``<client order id>-<k>``, the k-th fill of that
order), then commit the bar (snapshot, cursor, the orders the step created or changed, its
events, the summary) in one transaction, then publish the events to the ``on_event`` callbacks.
A crash anywhere in between restarts from the last committed bar and steps the same bar again:
the same fills come out with the same trade ids and are not booked twice. A batch with a symbol
missing is skipped and logged (as a backtest on inner-aligned data skips that time); a feed
event (stale, fresh, rejected bar, hole) is logged and recorded.

**Paper.** With :class:`PaperBroker` the fills come out of the step itself (the core's paper
matcher), so a paper run is the backtest of the bars it saw. Paper does not block entries while
the feed is stale: a stale symbol's batches are incomplete and skipped, so nothing trades on it.
A broker that fills orders on an exchange plugs in here once the core books broker fills; this
module refuses it for now.

**Control.** ``emergency_stop``: the core's emergency stop (pending orders cancelled, every
position exits at the next bar's open, no new orders), committed at once with the flags
``halted`` / ``halt_reason``; the halt is in the snapshot, so it survives restarts. ``reset``
lifts it, only after an emergency stop and once flat; otherwise it is refused with the reason.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from framework import enums, metrics, orders
from framework.data import timeframe_to_ms
from framework.runner import BarStepper
from framework.settings import SimSettings
from framework.strategy import Strategy
from live.broker import BrokerFill, OrderRequest, OrderUpdate
from live.feed import BarBatch, CandleFeed, FeedEvent
from live.store import ControlRequest, StateStore, crash_point

log = logging.getLogger("tradpal.live.runner")

#: Crash points of the runner (``TRADPAL_CRASH_AT``, see ``live.store.crash_point``):
#: after the warm-up was stepped and before it is committed; after a bar was stepped and before
#: anything of it is stored; after its fills were stored and before the bar is committed.
CRASH_POINTS: tuple[str, ...] = ("runner.after_warmup", "runner.after_step", "runner.after_fills")

#: Columns of the fills CSV (``tradpal paper --fills-out``, ``tradpal backtest --fills-out``).
FILL_COLUMNS = ("timestamp", "symbol", "side", "qty", "price", "fee", "client_order_id",
                "order_type", "reason")

_RUN_FLAG = "run"  # flag holding what the run was started with (checked on a restart)
_EXIT_REASONS = {enums.REASON_STOP_LOSS, enums.REASON_TAKE_PROFIT, enums.REASON_TRAILING_STOP,
                 enums.REASON_MAX_DRAWDOWN, enums.REASON_DAILY_LOSS, enums.REASON_EMERGENCY,
                 enums.REASON_LIQUIDATION}


class PaperBroker:
    """The paper broker: orders are matched by the core's paper matcher inside the step, on the
    live bars, with the simulator's fill rules and fees. It has no matching code of its own."""

    #: fills come out of ``BarStepper.step`` (a broker that fills on an exchange says False)
    matches_in_step = True

    def __repr__(self) -> str:
        return "PaperBroker()"


@dataclass(frozen=True)
class RunInfo:
    """What a run was started with, stored on its first commit: the first warm-up bar, the
    first tradable bar and its index (``trade_from``), symbols, timeframe, strategy, run id."""

    first_bar_ms: int
    trade_from_ms: int
    trade_from: int
    symbols: tuple[str, ...]
    timeframe: str
    strategy: str
    run_id: str

    def as_json(self) -> dict[str, Any]:
        return {"first_bar_ms": self.first_bar_ms, "trade_from_ms": self.trade_from_ms,
                "trade_from": self.trade_from, "symbols": list(self.symbols),
                "timeframe": self.timeframe, "strategy": self.strategy, "run_id": self.run_id}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunInfo:
        return cls(int(d["first_bar_ms"]), int(d["trade_from_ms"]), int(d["trade_from"]),
                   tuple(d["symbols"]), str(d["timeframe"]), str(d["strategy"]), str(d["run_id"]))


def iso(ms: int | None) -> str | None:
    """Epoch milliseconds as an ISO 8601 UTC time (None stays None)."""
    return None if ms is None else pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()


def _strategy_id(strategy: Strategy) -> str:
    return f"{orders.strategy_tag(strategy)}{strategy.param_vector().tolist()}"


class LiveRunner:
    """One strategy on the bars of ``feed``, its state in ``store`` (see the module docstring).

    Args:
        strategy: a ``Strategy`` instance (the very object a backtest runs).
        broker: :class:`PaperBroker` (the only mode for now).
        feed: a :class:`~live.feed.CandleFeed` (or websocket feed) of ``symbols`` on ``timeframe``,
            not polled yet.
        settings: the simulator settings (``SimSettings.build(strategy.sim_defaults, ...)`` as a
            backtest builds them); ``cash_sharing`` is implied: all symbols share one cash pool.
        store: the run's :class:`~live.store.StateStore`.
        symbols, timeframe: default the feed's.
        warmup_bars: closed bars of history stepped with trading off before the first live bar
            (fresh runs only; a restart continues from its snapshot).
        run_id: the run's part of every client order id (1 to 12 of ``A-Z a-z 0-9 _ -``).
        ann_factor: bars per year for the settings that need it; default the timeframe's bars
            per 365-day year, as a backtest derives it from hourly bars (8760).
        poll_s: longest wait for the feed before looking at control requests and signals again.
        on_event: callbacks receiving every event (a dict with ``kind``) once it is committed.
    """

    def __init__(self, strategy: Strategy, broker: Any, feed: CandleFeed, settings: SimSettings,
                 store: StateStore, *, symbols: Sequence[str] | None = None,
                 timeframe: str | None = None, warmup_bars: int = 500, run_id: str = "paper",
                 ann_factor: float | None = None, poll_s: float = 0.5,
                 on_event: Sequence[Callable[[dict[str, Any]], None]] = ()) -> None:
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a Strategy instance, got {type(strategy).__name__}")
        if not getattr(broker, "matches_in_step", False):
            raise NotImplementedError(
                f"broker {broker!r}: only the paper broker (live.runner.PaperBroker) runs for now; "
                "exchange brokers need the core's broker-fill mode")
        if not isinstance(settings, SimSettings):
            raise TypeError(f"settings must be a SimSettings, got {type(settings).__name__}")
        self.symbols = tuple(feed.symbols if symbols is None else symbols)
        if self.symbols != tuple(feed.symbols):
            raise ValueError(f"symbols {list(self.symbols)} differ from the feed's {list(feed.symbols)}")
        self.timeframe = feed.timeframe if timeframe is None else timeframe
        if self.timeframe != feed.timeframe:
            raise ValueError(f"timeframe {self.timeframe!r} differs from the feed's {feed.timeframe!r}")
        self.tf_ms = timeframe_to_ms(self.timeframe)
        if isinstance(warmup_bars, bool) or not isinstance(warmup_bars, int) or warmup_bars < 1:
            raise ValueError(f"warmup_bars must be a whole number >= 1, got {warmup_bars!r}")
        if not (isinstance(poll_s, (int, float)) and 0 < poll_s < float("inf")):
            raise ValueError(f"poll_s must be a number of seconds > 0, got {poll_s!r}")
        self.strategy, self.broker, self.feed, self.settings, self.store = strategy, broker, feed, settings, store
        self.warmup_bars = warmup_bars
        self.run_id = orders.check_run_id(run_id)
        if ann_factor is None:
            ann_factor = metrics.YEAR / pd.Timedelta(milliseconds=self.tf_ms)
        self.ann_factor = float(ann_factor)
        self.poll_s = float(poll_s)
        self.on_event: list[Callable[[dict[str, Any]], None]] = list(on_event)
        self.stepper: BarStepper | None = None
        self.info: RunInfo | None = None
        self.last_bar_ms: int | None = None
        self._stop_reason: str | None = None
        self._order_keys: set[tuple[int, int]] = set()  # (col, order id) of every order recorded
        self._fill_counts: dict[tuple[int, int], int] = {}  # fills per order so far
        self._quote = [s.split("/")[1].split(":")[0] if "/" in s else "quote" for s in self.symbols]
        self._base = [s.split("/")[0] for s in self.symbols]

    # --- public ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Take the runner lock, then restore the stored run or warm a new one up; handle the
        control requests posted while no runner was running."""
        self.store.acquire_runner_lock()
        stored = self.store.get_flag(_RUN_FLAG)
        snap = self.store.latest_snapshot()
        if stored is not None and snap is not None:
            self._restore(RunInfo.from_json(stored), snap)
        else:
            self._warm_up()
        self.handle_requests()

    def run(self, max_bars: int | None = None) -> int:
        """Start (unless started) and step live bars until the run has ``max_bars`` live bars in
        all (counted across restarts, so a restarted run ends where an uninterrupted one does),
        or :meth:`request_stop` (SIGTERM / Ctrl-C with :meth:`install_signal_handlers`) is
        called; the bar being stepped is finished first. Returns the live bars stepped."""
        if max_bars is not None and (isinstance(max_bars, bool) or not isinstance(max_bars, int) or max_bars < 0):
            raise ValueError(f"max_bars must be a whole number >= 0, got {max_bars!r}")
        if self.stepper is None:
            self.start()
        while self._stop_reason is None and (max_bars is None or self.live_bars < max_bars):
            item = self.feed.next_bars(timeout_s=self.poll_s)
            if isinstance(item, BarBatch):
                self.on_bar(item)
            elif isinstance(item, FeedEvent):
                self._feed_event(item)
            self.handle_requests()
        if self._stop_reason is not None:
            log.info("runner stopped: %s", self._stop_reason)
        return self.live_bars

    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop after the bar being stepped (safe to call from a signal handler)."""
        self._stop_reason = reason

    def install_signal_handlers(self) -> dict[int, Any]:
        """SIGTERM and SIGINT stop the runner cleanly after the current step (main thread only).
        Returns the handlers replaced, for ``signal.signal`` to put back."""
        return {sig: signal.signal(sig, lambda signum, frame: self.request_stop(signal.Signals(signum).name))
                for sig in (signal.SIGTERM, signal.SIGINT)}

    def close(self) -> None:
        """Release the feed's connections and the store (with its runner lock)."""
        self.feed.close()
        self.store.close()

    @property
    def live_bars(self) -> int:
        """Bars stepped after the warm-up (across restarts)."""
        return 0 if self.stepper is None or self.info is None else self.stepper.t - self.info.trade_from

    def summary(self) -> dict[str, Any]:
        """The run in numbers: ``first_bar``, ``trade_from``, ``last_bar`` (ISO times of the
        first warm-up bar, first tradable bar, last bar stepped), ``bars``, ``live_bars``,
        ``fills``, ``orders``, ``equity``, ``cash``, ``positions`` by symbol, ``halted``."""
        st, info = self.stepper, self.info
        assert st is not None and info is not None, "start() the runner first"
        return {
            "strategy": repr(self.strategy), "run_id": self.run_id, "symbols": list(self.symbols),
            "timeframe": self.timeframe, "first_bar": iso(info.first_bar_ms),
            "trade_from": iso(info.trade_from_ms), "last_bar": iso(self.last_bar_ms),
            "bars": st.t, "live_bars": self.live_bars, "fills": len(st.fills),
            "orders": len(self._order_keys), "equity": st.equity, "cash": st.cash,
            "positions": dict(zip(self.symbols, st.positions.tolist(), strict=True)),
            "halted": bool(st.halted),
        }

    def fills_frame(self) -> pd.DataFrame:
        """Every fill of the run (from the store, so across restarts) with the columns of
        :data:`FILL_COLUMNS`, as ``tradpal backtest --fills-out`` writes them."""
        st = self.stepper
        assert st is not None, "start() the runner first"
        kinds = {st.client_order_id(int(f["col"]), int(f["order_id"])):
                 (enums.ORDER_TYPE_NAMES[f["order_type"]], enums.REASON_NAMES[f["reason"]]) for f in st.fills}
        rows = [(iso(f.timestamp_ms), f.symbol, f.side, f.qty, f.price, f.fee, f.client_order_id,
                 *kinds.get(f.client_order_id, ("", ""))) for f in self.store.fills()]
        return pd.DataFrame(rows, columns=list(FILL_COLUMNS))

    # --- start ----------------------------------------------------------------------------------
    def _new_stepper(self, trade_from: int) -> BarStepper:
        return BarStepper(self.strategy, self.settings.vector(self.ann_factor), n_columns=len(self.symbols),
                          trade_from=trade_from, run_id=self.run_id)

    def _restore(self, info: RunInfo, snap: tuple[bytes, int]) -> None:
        expected = (self.symbols, self.timeframe, _strategy_id(self.strategy), self.run_id)
        stored = (info.symbols, info.timeframe, info.strategy, info.run_id)
        if stored != expected:
            names = ("symbols", "timeframe", "strategy", "run_id")
            diff = ", ".join(f"{n} {s!r} (now {e!r})" for n, s, e in zip(names, stored, expected, strict=True) if s != e)
            raise ValueError(f"the state in {self.store.state_dir} is of another run: {diff}; use "
                             "another state directory for a new run")
        stepper = self._new_stepper(info.trade_from)
        stepper.restore(snap[0])
        self.stepper, self.info, self.last_bar_ms = stepper, info, snap[1]
        self._index_records()
        resume = max(self.store.cursor().values()) + self.tf_ms
        self.feed.start_from(resume)
        log.info("restored %s at bar %s (%d bars, %d live); resuming at %s", self.run_id,
                 iso(snap[1]), stepper.t, self.live_bars, iso(resume))

    def _index_records(self) -> None:
        st = self.stepper
        assert st is not None
        self._order_keys = {(int(o["col"]), int(o["order_id"])) for o in st.orders}
        self._fill_counts = {}
        for f in st.fills:
            key = (int(f["col"]), int(f["order_id"]))
            self._fill_counts[key] = self._fill_counts.get(key, 0) + 1

    def _warm_up(self) -> None:
        """Step the last ``warmup_bars`` closed bars (where every symbol has one) without
        trading, and commit them as the run's first bar."""
        first = self.feed.history(self.symbols[0], limit=self.warmup_bars)
        if first.empty:
            raise RuntimeError(f"no closed candles of {self.symbols[0]} {self.timeframe} to warm up on")
        until = int(first.index[-1].value // 1_000_000) + self.tf_ms
        frames = [first] + [self.feed.history(s, limit=self.warmup_bars, until_ms=until) for s in self.symbols[1:]]
        index = frames[0].index
        for f in frames[1:]:
            index = index.intersection(f.index)
        if len(index) == 0:
            raise RuntimeError(f"the last {self.warmup_bars} candles of {', '.join(self.symbols)} share no time")
        if len(index) < self.warmup_bars:
            log.warning("warm-up: %d of %d bars (the others lack a symbol or the exchange has "
                        "fewer)", len(index), self.warmup_bars)
        n = len(index)
        for f in frames:  # promotion: a vectorised strategy's signals must not look ahead
            self.strategy.verify_causality(f.loc[index])
        stepper = self._new_stepper(n)
        ohlcv = np.stack([f.loc[index, ["open", "high", "low", "close", "volume"]].to_numpy(np.float64)
                          for f in frames], axis=1)  # (bars, symbols, 5)
        open_ms = index.as_unit("ms").asi8
        events: list[np.ndarray] = []
        for i in range(n):
            out = stepper.step(int(open_ms[i] // 86_400_000), *(ohlcv[i, :, k] for k in range(5)),
                               time=int(open_ms[i]) * 1_000_000)
            events.append(out.events.copy())
        crash_point("runner.after_warmup")
        last = int(open_ms[-1])
        self.info = RunInfo(int(open_ms[0]), last + self.tf_ms, n, self.symbols, self.timeframe,
                            _strategy_id(self.strategy), self.run_id)
        self.stepper, self.last_bar_ms = stepper, last
        recs = np.concatenate(events) if events else np.empty(0, dtype=enums.event_dt)
        order_records, event_dicts = self._records(recs, last)
        event_dicts.insert(0, {"kind": "session_started", "warmup_bars": n, "first_bar": iso(int(open_ms[0])),
                               "trade_from": iso(last + self.tf_ms)})
        self.store.commit_bar(dict.fromkeys(self.symbols, last), stepper.snapshot(), order_records,
                              event_dicts, summary=self.summary(), flags={_RUN_FLAG: self.info.as_json()})
        self._publish(event_dicts)
        self.feed.start_from(last + self.tf_ms)
        log.info("warmed up on %d bars, %s .. %s; trading from %s", n, iso(int(open_ms[0])),
                 iso(last), iso(last + self.tf_ms))

    # --- the loop -------------------------------------------------------------------------------
    def on_bar(self, batch: BarBatch) -> None:
        """Step one closed batch, persist it, publish its events."""
        st = self.stepper
        assert st is not None, "start() the runner first"
        if batch.missing:
            message = (f"bar {iso(batch.open_ms)} skipped: no bar of {', '.join(sorted(batch.missing))} "
                       "(the run steps only times every symbol has)")
            log.warning(message)
            self._record({"kind": "bar_skipped", "bar": iso(batch.open_ms), "message": message})
            return
        if self.last_bar_ms is not None and batch.open_ms <= self.last_bar_ms:
            log.warning("bar %s is not after the last one stepped (%s); ignored", iso(batch.open_ms),
                        iso(self.last_bar_ms))
            return
        try:
            out = st.step(batch.day, batch.open, batch.high, batch.low, batch.close, batch.volume,
                          time=batch.open_ms * 1_000_000)
        except ValueError as e:  # the feed checks bars already; the core's check is the last word
            log.warning("%s", e)
            self._record({"kind": "bar_rejected", "bar": iso(batch.open_ms), "message": str(e)})
            return
        crash_point("runner.after_step")
        fill_events = [self._book_paper_fill(f, batch.open_ms) for f in out.fills]
        crash_point("runner.after_fills")
        self.last_bar_ms = batch.open_ms
        order_records, event_dicts = self._records(out.events, batch.open_ms)
        self.store.commit_bar(dict.fromkeys(self.symbols, batch.open_ms), st.snapshot(), order_records,
                              event_dicts, summary=self.summary())
        self._publish([e for e in fill_events if e is not None] + event_dicts)

    def _book_paper_fill(self, rec: np.ndarray, bar_ms: int) -> dict[str, Any] | None:
        """Store one fill of the paper matcher (already booked in the core by the step); returns
        its event, or None if a run restarted after a crash had stored it already."""
        st = self.stepper
        assert st is not None
        col, oid = int(rec["col"]), int(rec["order_id"])
        k = self._fill_counts.get((col, oid), 0)
        self._fill_counts[(col, oid)] = k + 1
        coid = st.client_order_id(col, oid)
        ccy = self._base[col] if rec["fee_ccy"] == enums.FEE_BASE else self._quote[col]
        fill = BrokerFill(f"{coid}-{k}", coid, self.symbols[col], "buy" if rec["side"] > 0 else "sell",
                          float(rec["qty"]), float(rec["price"]), float(rec["fees"]), ccy, int(bar_ms))
        event = {"kind": "fill", "trade_id": fill.trade_id, "client_order_id": coid, "symbol": fill.symbol,
                 "side": fill.side, "qty": fill.qty, "price": fill.price, "fee": fill.fee,
                 "fee_currency": ccy, "bar": iso(bar_ms),
                 "order_type": enums.ORDER_TYPE_NAMES[rec["order_type"]],
                 "reason": enums.REASON_NAMES[rec["reason"]]}
        return event if self.store.record_fill(fill, bar_ms, events=[event]) else None

    def _records(self, events: np.ndarray, bar_ms: int) -> tuple[list[OrderRequest | OrderUpdate], list[dict[str, Any]]]:
        """The store's order records and event dicts of a step's (or an emergency stop's) events."""
        st = self.stepper
        assert st is not None
        records: list[OrderRequest | OrderUpdate] = []
        dicts: list[dict[str, Any]] = []
        for e in events:
            col, oid, kind = int(e["col"]), int(e["order_id"]), int(e["kind"])
            d: dict[str, Any] = {"kind": enums.EVENT_NAMES[kind], "bar": iso(bar_ms)}
            if col >= 0:
                d["symbol"] = self.symbols[col]
            d["reason"] = enums.REASON_NAMES[e["reason"]]
            if oid >= 0 and col >= 0:
                coid = st.client_order_id(col, oid)
                status = enums.STATUS_NAMES[e["status"]]
                reject = enums.REJECT_NAMES[e["reject"]] or None
                d.update(client_order_id=coid, side="buy" if e["side"] > 0 else "sell",
                         order_type=enums.ORDER_TYPE_NAMES[e["order_type"]], status=status,
                         qty=_num(e["qty"]), price=_num(e["price"]), trigger=_num(e["trigger"]),
                         filled_qty=float(e["filled_qty"]), reject_reason=reject)
                if kind == enums.EVENT_ORDER:
                    if (col, oid) not in self._order_keys:
                        self._order_keys.add((col, oid))
                        records.append(OrderRequest(
                            coid, self.symbols[col], d["side"], d["order_type"], d["qty"], d["price"],
                            d["trigger"], _num(e["notional"]) if d["qty"] is None else None,
                            int(e["reason"]) in _EXIT_REASONS))
                    if status != "created":
                        records.append(OrderUpdate(coid, status, float(e["filled_qty"]), None, reject))
            dicts.append(d)
        return records, dicts

    def _feed_event(self, event: FeedEvent) -> None:
        log.log(logging.INFO if event.kind == "fresh" else logging.WARNING, "feed: %s", event.message)
        self._record({"kind": f"feed_{event.kind}", "symbols": list(event.symbols), "message": event.message,
                      "bar": iso(event.open_ms)})

    def _record(self, event: dict[str, Any]) -> None:
        self.store.append_events([event])
        self._publish([event])

    def _publish(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            for callback in self.on_event:
                try:
                    callback(event)
                except Exception:  # a subscriber's bug must not stop the runner
                    log.exception("on_event callback %r failed on %s", callback, event.get("kind"))

    # --- control --------------------------------------------------------------------------------
    def handle_requests(self) -> None:
        """Handle the control requests posted to the store, oldest first."""
        for req in self.store.pending_requests():
            if req.kind == "emergency_stop":
                result = self.emergency_stop(req)
            elif req.kind == "reset":
                result = self.reset(req)
            else:  # order approvals belong to --confirm-orders of the broker mode
                result = {"ok": False, "error": f"{req.kind} is not handled by a paper runner"}
            self.store.mark_handled(req.id, result)

    def emergency_stop(self, req: ControlRequest | None = None) -> dict[str, Any]:
        """Raise the core's emergency stop now and commit it (flags ``halted``, ``halt_reason``)."""
        st = self.stepper
        assert st is not None and self.last_bar_ms is not None, "start() the runner first"
        why = f"emergency stop (request {req.id})" if req is not None else "emergency stop"
        if st.g[enums.G_EMERGENCY] != 0.0:  # already raised (a request handled before a crash)
            if not self.store.get_flag("halted"):
                self.store.set_flag("halted", True)
            return {"ok": True, "halted": True, "note": "already halted"}
        events = st.emergency_stop()
        order_records, dicts = self._records(events, self.last_bar_ms)
        self.store.commit_bar(dict.fromkeys(self.symbols, self.last_bar_ms), st.snapshot(), order_records,
                              dicts, summary=self.summary(), flags={"halted": True, "halt_reason": why})
        self._publish(dicts)
        log.warning("%s: open orders cancelled, positions exit at the next bar's open, no new orders", why)
        return {"ok": True, "halted": True, "exits": sum(isinstance(r, OrderRequest) for r in order_records)}

    def reset(self, req: ControlRequest | None = None) -> dict[str, Any]:
        """Lift an emergency stop once flat; refused (with the reason) otherwise."""
        st = self.stepper
        assert st is not None and self.last_bar_ms is not None, "start() the runner first"
        try:
            st.clear_emergency_stop()
        except ValueError as e:
            log.warning("reset refused: %s", e)
            return {"ok": False, "error": str(e)}
        event = {"kind": "reset", "bar": iso(self.last_bar_ms)}
        self.store.commit_bar(dict.fromkeys(self.symbols, self.last_bar_ms), st.snapshot(), (), [event],
                              summary=self.summary(), flags={"halted": None, "halt_reason": None})
        self._publish([event])
        log.warning("emergency stop reset: trading resumes from the next close")
        return {"ok": True, "halted": False}


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


__all__ = ["CRASH_POINTS", "FILL_COLUMNS", "LiveRunner", "PaperBroker", "RunInfo", "iso"]
