"""The live runner: one strategy, bar by bar, on the core's step, persisted after every bar.

    runner = LiveRunner(strategy, PaperBroker(), feed, settings, store,
                        symbols=["BTC/USDT"], timeframe="1h", warmup_bars=500, run_id="paper1")
    runner.run(max_bars=100)
    # on an exchange: the same, with CcxtBroker(create_exchange(..., credentials=...))

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

**Each closed bar** (a :class:`~live.feed.BarBatch`): step, then commit in one transaction
the step's fills (deterministic trade ids ``<client order id>-<k>``, the k-th fill of that
order), the orders it created or changed, its events, the cursor, the snapshot and the summary,
then publish the events to the ``on_event`` callbacks. A crash anywhere in between restarts from
the last committed bar and steps the same bars again: the same fills come out with the same
trade ids and are not booked twice.

**Catching up.** While the feed already holds more closed bars (``feed.backlog > 0``: a restart
after downtime, a replay on the local exchange's ``fast`` clock), a paper run steps them and
commits them together (:meth:`LiveRunner.commit`, one transaction, bar by bar with one snapshot
after the last) every ``commit_every`` bars and when the backlog is empty, before a control
request, a feed event or the end of :meth:`LiveRunner.run`. This is safe because nothing of
such a bar leaves the process before its commit: the paper broker sends no order anywhere and
events are published after the commit. A crash replays at most the uncommitted bars, from the
same candles, to the same state. Once caught up every bar is committed on its own, as above; a
broker that sends orders out (not ``matches_in_step``) commits every bar before anything is
handed over. A batch with a symbol
missing is skipped and logged (as a backtest on inner-aligned data skips that time); a feed
event (stale, fresh, rejected bar, hole) is logged and recorded.

**Paper.** With :class:`PaperBroker` the fills come out of the step itself (the core's paper
matcher), so a paper run is the backtest of the bars it saw. Paper does not block entries while
the feed is stale: a stale symbol's batches are incomplete and skipped, so nothing trades on it.

**Broker mode.** With an exchange broker (``matches_in_step`` False, e.g.
:class:`~live.ccxt_broker.CcxtBroker`) the stepper runs with ``broker_fills=True``. At each
close, before the step: orders still waiting for the gate expire; orders good for the bar that
closed (market, limit, stop entries) still open at the broker are cancelled; the broker's fills
are fetched (``fills_since``), de-duplicated by exchange trade id and booked with
``BarStepper.apply_fill`` (price, quantity, fee and fee currency as the exchange reports them;
a fee in the base asset comes out of the position), each in one transaction with the snapshot;
a watched stop or take-profit that the bar crossed is sent as a market order (the core holds
their levels, trailing ones included). Then the step; the bar is
committed (its new orders recorded as ``created``); then every new order goes to
``broker.submit`` with its deterministic client order id (exits ``reduce_only``, market
entries sized by notional as ``cost``, ``ref_price`` the close), the broker's answer stored
(crash point ``runner.after_submit`` between the two), and the fills booked. An order that
filled while its cancel was on the way is booked like any fill. A rejection (insufficient
funds, invalid order) is final with the exchange's words (event ``order_rejected`` with the
refreshed balance); an order the exchange never got is ``lost`` (event ``order_lost``,
``alert``). A stale feed blocks entries (``BarStepper.block_entries``; exits still managed),
fresh allows them again. With ``order_gate`` every order waits, unsent, for approval (a
protective placement does not: it only closes a position that was approved); one still waiting
when the runner stops is offered again at the restart, if decided at the last close, its wait
counted from when it was decided (``awaiting_since`` in the order's record).

**Protective orders** (broker mode, ``protective="exchange"``, on symbols whose broker says
``supports_stop_orders``): the core's stop order (its stop-loss or trailing stop, the tighter
one) rests on the exchange as a stop-market order, sized as the position, placed as soon as the
entry fill is booked (right after a market entry is sent, so it protects from the first bar
and while the runner is down). One protective order at a time, because on spot the first sell
order locks the coins: the stop, else a lone take-profit (``take_profit``); a target beside a
stop is watched. Each placement has its own client order id, ``<the core order's id>.<k>``
with revision ``k`` = 1, 2, ..., recorded before it is sent; when the core's level moves (a
trailing stop, at a close) or the position changes size, the resting one is cancelled and
revision ``k + 1`` placed. Before any exit is sent (signal, reversal, risk limit, emergency
stop, watched target) the placement is cancelled; a fill that raced the cancel is booked and
the exit sized from the position left (none left: not sent, recorded cancelled). A placement
refused because the market is already through its level goes out at once as a market order
(what the resting stop would have done at that gap); one refused otherwise leaves that order
watched. A placement's fills are booked as the core's stop (``apply_fill``) in the bar they
happened in: a fill after the bar forming now (a gap at the next open, or while the runner was
down) waits until that bar forms, so the strategy sees the position as the backtest does. The
limits of parity: a limit or stop entry's position is protected from the close after its fill
(the backtest checks its stop inside the entry bar); a watched target fills at the next open;
an exit decided at the close before a bar that gaps through the stop meets the stop's fill
instead (same price and bar, the stop's id).

**Reconcile** (broker mode, every start): an order recorded but never acknowledged is looked
up by client order id (adopted if the exchange has it, sent if it was decided at the last
close and the exchange has not); open orders with this run's id prefix that the store lacks
are adopted (event ``order_adopted``), others are ``order_external`` (left, or cancelled with
``external_orders="cancel"``); the protective placements are looked up (filled, cancelled or
resting), stale revisions cancelled and the missing one placed; fills missed while down are
booked once (a placement's in its bar, see above); the account's totals
are compared with the start balance plus the core's positions and cash change: a difference
beyond rounding is ``balance_mismatch`` and blocks entries (flag ``balance_hold``) until a
``confirm_balance`` request (or ``reset``).

**Control.** ``pause``: new entries are refused by the core (reason ``entries_blocked``) while
exits, stops and targets are still managed; ``resume`` lifts it. Committed at once with the
flag ``paused`` (and the core's block flag in the snapshot), so a pause survives restarts.
``emergency_stop``: the core's emergency stop (pending orders cancelled, every
position exits at the next bar's open, no new orders), committed at once with the flags
``halted`` / ``halt_reason``; the halt is in the snapshot, so it survives restarts. ``reset``
lifts it, only after an emergency stop and once flat; otherwise it is refused with the reason.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from framework import enums, metrics, orders, sim_nb
from framework.data import timeframe_to_ms
from framework.runner import BarStepper
from framework.settings import SimSettings
from framework.strategy import Strategy
from live.broker import FINAL_STATUSES, BrokerFill, OrderRequest, OrderUpdate
from live.feed import BarBatch, CandleFeed, FeedEvent
from live.store import ControlRequest, StateStore, StoredOrder, crash_point

log = logging.getLogger("tradpal.live.runner")

#: Crash points of the runner (``TRADPAL_CRASH_AT``, see ``live.store.crash_point``):
#: after the warm-up was stepped and before it is committed; after a bar was stepped and before
#: anything of it is stored; after its fills were stored and before the bar is committed (inside
#: the commit's transaction).
#: Broker mode: after the exchange acknowledged an order and before the store records it; after
#: the exchange cancelled a protective order (to replace it, or before an exit) and before the
#: store records it.
CRASH_POINTS: tuple[str, ...] = ("runner.after_warmup", "runner.after_step", "runner.after_fills",
                                 "runner.after_submit", "runner.after_cancel")

#: What broker mode does with an open order on the exchange that is not this run's.
EXTERNAL_POLICIES = ("report", "cancel")

#: Broker mode: where a position's stop and take-profit live (see "Protective orders").
PROTECTIVE_POLICIES = ("exchange", "watch")

#: Columns of the fills CSV (``tradpal paper --fills-out``, ``tradpal backtest --fills-out``).
FILL_COLUMNS = ("timestamp", "symbol", "side", "qty", "price", "fee", "client_order_id",
                "order_type", "reason")

_RUN_FLAG = "run"  # flag holding what the run was started with (checked on a restart)
_BALANCE_FLAG = "balance_start"  # broker mode: the account's totals the balance check starts from
_HOLD_FLAG = "balance_hold"  # broker mode: entries blocked until a balance difference is confirmed
_ONE_BAR_TYPES = ("market", "limit", "stop", "stop_limit")  # good for one bar unless protective
_WORKING = ("submitted", "partially_filled")  # at the broker, may still fill
_ACTIONS = {enums.ACTION_LONG: "long", enums.ACTION_SHORT: "short", enums.ACTION_EXIT: "exit"}
_EXIT_REASONS = {enums.REASON_STOP_LOSS, enums.REASON_TAKE_PROFIT, enums.REASON_TRAILING_STOP,
                 enums.REASON_MAX_DRAWDOWN, enums.REASON_DAILY_LOSS, enums.REASON_EMERGENCY,
                 enums.REASON_LIQUIDATION}


#: Bars a paper run catching up steps at most between two commits (``commit_every``).
COMMIT_EVERY = 1000


@dataclass(frozen=True)
class _SteppedBar:
    """A bar stepped and not committed yet: its fills (store record, event), the store's order
    records and its events."""

    open_ms: int
    fills: list[tuple[BrokerFill, dict[str, Any]]]
    orders: list[OrderRequest | OrderUpdate]
    events: list[dict[str, Any]]


GateDecision = Literal["approved", "rejected", "pending", "expired"]


class OrderGate(Protocol):
    """``--confirm-orders``: the runner asks before sending each order, and again between polls
    while the answer is ``"pending"``. ``created_s`` is when the order was decided and ``now_s``
    the time now (both seconds since the epoch). A ``"rejected"`` or ``"expired"`` order is never
    sent: it is recorded as rejected with the reason ``not_approved`` / ``approval_expired``.
    An order still pending at the next close expires (the core expires it there too).

    Optional: ``on_request(req)`` gets every control request first and returns the result of
    the ones it handles (``approve_order`` / ``reject_order``) or None; ``reason(client_order_id)``
    says why an order was refused (``live.confirm.OrderGate`` has both)."""

    def decide(self, order: OrderRequest, created_s: float, now_s: float) -> GateDecision: ...


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
        broker: :class:`PaperBroker` (paper: the core's matcher fills), or an exchange broker
            (``matches_in_step`` False, e.g. :class:`~live.ccxt_broker.CcxtBroker`): broker mode,
            see "Broker mode" in the module docstring.
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
        commit_every: while catching up, commit at least every this many bars (a crash replays
            at most that many); see "Catching up".
        on_event: callbacks receiving every event (a dict with ``kind``) once it is committed.
        external_orders: broker mode: what to do with an open order on the exchange whose client
            id is not this run's: ``"report"`` (leave it, event ``order_external``) or
            ``"cancel"`` (cancel it, with the event).
        order_gate: broker mode (``--confirm-orders``): an object with ``decide(order, created_s,
            now_s)`` returning ``"approved"``, ``"rejected"``, ``"pending"`` or ``"expired"``;
            every order waits, unsent, until approved (see :class:`OrderGate`).
        protective: broker mode: ``"exchange"`` (default) places a position's stop (or its lone
            take-profit) on the exchange as a resting order where the broker's
            ``supports_stop_orders(symbol)`` says it can, and watches the rest; ``"watch"``
            watches them all (see "Protective orders" in the module docstring).
        wall_clock: seconds since the epoch, for the gate's ``created_s`` / ``now_s``.

    Hooks for the services around a runner (``live.service``): :attr:`on_commit` callbacks get
    each committed batch of events at once, ``hook(events, batch)`` with the
    :class:`~live.feed.BarBatch` stepped (None for control and feed events; then
    :attr:`bar_to_order_s` is the time from the batch's arrival to its orders committed, ready to
    send); :attr:`on_poll` callbacks run once per turn of :meth:`run`'s loop (at least every
    ``poll_s``).
    """

    def __init__(self, strategy: Strategy, broker: Any, feed: CandleFeed, settings: SimSettings,
                 store: StateStore, *, symbols: Sequence[str] | None = None,
                 timeframe: str | None = None, warmup_bars: int = 500, run_id: str = "paper",
                 ann_factor: float | None = None, poll_s: float = 0.5, commit_every: int = COMMIT_EVERY,
                 on_event: Sequence[Callable[[dict[str, Any]], None]] = (),
                 external_orders: str = "report", order_gate: OrderGate | None = None,
                 protective: str = "exchange", wall_clock: Callable[[], float] = time.time) -> None:
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a Strategy instance, got {type(strategy).__name__}")
        #: True for a broker that fills on an exchange (``matches_in_step`` False): broker mode
        self.broker_mode = not getattr(broker, "matches_in_step", False)
        if self.broker_mode:
            missing = [m for m in ("submit", "cancel", "fetch_order", "fills_since", "open_order_requests",
                                   "balance") if not callable(getattr(broker, m, None))]
            if missing:
                raise TypeError(f"broker {broker!r} is neither the paper broker nor an exchange broker "
                                f"(it lacks {', '.join(missing)}; see live.broker.Broker)")
        if external_orders not in EXTERNAL_POLICIES:
            raise ValueError(f"external_orders must be one of {', '.join(EXTERNAL_POLICIES)}, got {external_orders!r}")
        if protective not in PROTECTIVE_POLICIES:
            raise ValueError(f"protective must be one of {', '.join(PROTECTIVE_POLICIES)}, got {protective!r}")
        if order_gate is not None and not callable(getattr(order_gate, "decide", None)):
            raise TypeError(f"order_gate must have a decide(order, created_s, now_s) method, got {order_gate!r}")
        if order_gate is not None and not self.broker_mode:
            raise ValueError("order_gate (--confirm-orders) needs a broker that sends orders to an exchange "
                             "(tradpal live); the paper broker fills its orders inside the step")
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
        if isinstance(commit_every, bool) or not isinstance(commit_every, int) or commit_every < 1:
            raise ValueError(f"commit_every must be a whole number >= 1, got {commit_every!r}")
        self.commit_every = commit_every
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
        self.on_commit: list[Callable[[list[dict[str, Any]], BarBatch | None], None]] = []
        self.on_poll: list[Callable[[], None]] = []
        self.bar_to_order_s: float | None = None
        self.stepper: BarStepper | None = None
        self.info: RunInfo | None = None
        self.last_bar_ms: int | None = None
        self._stop_reason: str | None = None
        self._order_keys: set[tuple[int, int]] = set()  # (col, order id) of every order recorded
        self._fill_counts: dict[tuple[int, int], int] = {}  # fills per order so far
        self._uncommitted: list[_SteppedBar] = []  # bars stepped, not committed yet (catching up)
        self._saved = (0, 0)  # fill and event records in the store
        self._quote = [s.split("/")[1].split(":")[0] if "/" in s else "quote" for s in self.symbols]
        self._base = [s.split("/")[0] for s in self.symbols]
        # broker mode
        self.external_orders, self.order_gate, self._wall = external_orders, order_gate, wall_clock
        self._paused = False  # entries blocked by an operator's pause (flag "paused")
        self._stale = False  # entries blocked while the feed is stale (broker mode)
        self._balance_hold = False  # entries blocked until a balance difference is confirmed
        self._awaiting: dict[str, tuple[OrderRequest, float]] = {}  # orders waiting for the gate
        self._updates: dict[str, OrderUpdate] = {}  # the broker's last word on each order
        self._runner_final: set[str] = set()  # rejected / lost at the broker or the gate: final
        self._closes: np.ndarray | None = None  # the last stepped bar's closes (orders' ref_price)
        self.protective = protective
        #: per symbol: its stop (or lone take-profit) rests on the exchange (set at start)
        self.on_exchange: list[bool] = [False] * len(self.symbols)
        self._revisions: dict[str, int] = {}  # core stop/target id -> its last placement's revision
        self._deferred: dict[int, list[BrokerFill]] = {}  # per column: placement fills of a later bar

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
        self._paused = bool(self.store.get_flag("paused"))
        self._update_entry_block()
        if self.broker_mode:
            supports = getattr(self.broker, "supports_stop_orders", None)
            self.on_exchange = [self.protective == "exchange" and callable(supports) and bool(supports(s))
                                for s in self.symbols]
            self._reconcile()
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
            if self._awaiting:
                self._ask_gate()
            self.handle_requests()
            for hook in self.on_poll:
                hook()
        self.commit()
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

    @property
    def stop_reason(self) -> str | None:
        """Why :meth:`run` stopped (a signal's name, ...), None if it was not asked to."""
        return self._stop_reason

    @property
    def paused(self) -> bool:
        """True while a ``pause`` request blocks new entries."""
        return self._paused

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
        ``fills``, ``orders``, ``equity``, ``cash``, ``positions`` by symbol, ``halted``, ``paused``."""
        st, info = self.stepper, self.info
        assert st is not None and info is not None, "start() the runner first"
        return {
            "strategy": repr(self.strategy), "run_id": self.run_id, "symbols": list(self.symbols),
            "timeframe": self.timeframe, "first_bar": iso(info.first_bar_ms),
            "trade_from": iso(info.trade_from_ms), "last_bar": iso(self.last_bar_ms),
            "bars": st.t, "live_bars": self.live_bars, "fills": len(st.fills),
            "orders": len(self._order_keys), "equity": st.equity, "cash": st.cash,
            "positions": dict(zip(self.symbols, st.positions.tolist(), strict=True)),
            "halted": bool(st.halted), "paused": self._paused,
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
                          trade_from=trade_from, run_id=self.run_id, broker_fills=self.broker_mode)

    def _restore(self, info: RunInfo, snap: tuple[bytes, int]) -> None:
        expected = (self.symbols, self.timeframe, _strategy_id(self.strategy), self.run_id)
        stored = (info.symbols, info.timeframe, info.strategy, info.run_id)
        if stored != expected:
            names = ("symbols", "timeframe", "strategy", "run_id")
            diff = ", ".join(f"{n} {s!r} (now {e!r})" for n, s, e in zip(names, stored, expected, strict=True) if s != e)
            raise ValueError(f"the state in {self.store.state_dir} is of another run: {diff}; use "
                             "another state directory for a new run")
        stepper = self._new_stepper(info.trade_from)
        restore_stepper(stepper, self.store)
        self.stepper, self.info, self.last_bar_ms = stepper, info, snap[1]
        self._saved = (len(stepper.fills), len(stepper.events))
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
        flags: dict[str, Any] = {_RUN_FLAG: self.info.as_json()}
        if self.broker_mode:  # what the account held when the run began (the balance check's base)
            flags[_BALANCE_FLAG] = self._account_totals()
        self._saved = self._commit_state(last, order_records, event_dicts, flags=flags)
        self._publish(event_dicts)
        self.feed.start_from(last + self.tf_ms)
        log.info("warmed up on %d bars, %s .. %s; trading from %s", n, iso(int(open_ms[0])),
                 iso(last), iso(last + self.tf_ms))

    # --- the loop -------------------------------------------------------------------------------
    def on_bar(self, batch: BarBatch) -> None:
        """Step one closed batch, persist it, publish its events."""
        arrived = time.perf_counter()
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
        if self.broker_mode:
            self._before_close(batch)
            self._closes = batch.close
        try:
            out = st.step(batch.day, batch.open, batch.high, batch.low, batch.close, batch.volume,
                          time=batch.open_ms * 1_000_000)
        except ValueError as e:  # the feed checks bars already; the core's check is the last word
            log.warning("%s", e)
            self._record({"kind": "bar_rejected", "bar": iso(batch.open_ms), "message": str(e)})
            return
        crash_point("runner.after_step")
        fills = [self._paper_fill(f, batch.open_ms) for f in out.fills]
        self.last_bar_ms = batch.open_ms
        order_records, event_dicts = self._records(out.events, batch.open_ms)
        event_dicts = self._signals(batch.open_ms) + event_dicts
        self._uncommitted.append(_SteppedBar(batch.open_ms, fills, order_records, event_dicts))
        if not self._defer_commit():
            self.commit(batch, arrived)
        if self.broker_mode:
            self._dispatch(order_records)

    def _defer_commit(self) -> bool:
        """True while the commit of the bars stepped may wait (see "Catching up" above): paper
        only, no services watching (their ``on_commit`` hooks see every bar with the state after
        it), the feed holds more bars, fewer than ``commit_every`` bars are waiting."""
        return (not self.broker_mode and not self.on_commit
                and getattr(self.feed, "backlog", 0) > 0
                and len(self._uncommitted) < self.commit_every)

    def commit(self, batch: BarBatch | None = None, arrived: float | None = None) -> None:
        """Persist the bars stepped and not committed yet, in ONE transaction (their fills,
        orders, events and cursor, bar by bar, then the core's snapshot and the summary), then
        publish their events. A no-op when every bar is committed. ``batch`` / ``arrived``
        (``time.perf_counter()`` when it arrived): the bar this commit follows at once, for the
        services' hooks and :attr:`bar_to_order_s`."""
        if not self._uncommitted:
            return
        bars, last = self._uncommitted, len(self._uncommitted) - 1
        published: list[dict[str, Any]] = []
        with self.store.transaction():
            for i, bar in enumerate(bars):
                # a fill stored before a crash comes out of the replayed step again: stored once
                published += [event for fill, event in bar.fills
                              if self.store.record_fill(fill, bar.open_ms, events=[event])]
                crash_point("runner.after_fills")
                if i == last:
                    saved = self._commit_state(bar.open_ms, bar.orders, bar.events)
                else:
                    self.store.commit_bar(dict.fromkeys(self.symbols, bar.open_ms), None, bar.orders, bar.events)
                published += bar.events
        self._uncommitted, self._saved = [], saved
        if arrived is not None:
            self.bar_to_order_s = time.perf_counter() - arrived
        self._publish(published, batch)

    def _commit_state(self, bar_ms: int, orders: Sequence[OrderRequest | OrderUpdate],
                      events: list[dict[str, Any]], flags: dict[str, Any] | None = None) -> tuple[int, int]:
        """``commit_bar`` with the core's snapshot, without its records, and the records added
        since the last such commit (the store keeps them: a snapshot does not grow with the run).
        Returns the fill and event record counts stored once it is committed (``_saved``)."""
        snapshot, records, saved = self._state()
        self.store.commit_bar(dict.fromkeys(self.symbols, bar_ms), snapshot, orders, events,
                              summary=self.summary(), flags=flags, records=records)
        return saved

    def _state(self) -> tuple[bytes, dict[str, bytes], tuple[int, int]]:
        """The core's snapshot without its records, the records added since the last snapshot
        stored, and the record counts once this one is stored (``_saved``)."""
        st = self.stepper
        assert st is not None
        n_fills, n_events = self._saved
        records = {"fills": st.fills[n_fills:].tobytes(), "events": st.events[n_events:].tobytes()}
        return st.snapshot(records=False), records, (len(st.fills), len(st.events))

    def _paper_fill(self, rec: np.ndarray, bar_ms: int) -> tuple[BrokerFill, dict[str, Any]]:
        """One fill of the paper matcher (already booked in the core by the step) as the
        store's record, with its event."""
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
        return fill, event

    def _signals(self, bar_ms: int) -> list[dict[str, Any]]:
        """A ``signal`` event for each column whose strategy decided something at this close
        (the step's intents: long, short or exit, with the order type and price it asked for)."""
        st = self.stepper
        assert st is not None
        out = []
        for j, symbol in enumerate(self.symbols):
            action = int(st.intents[j, enums.INTENT_ACTION])
            if action != enums.ACTION_NONE:
                out.append({"kind": "signal", "symbol": symbol, "bar": iso(bar_ms), "action": _ACTIONS[action],
                            "order_type": enums.ORDER_TYPE_NAMES[int(st.intents[j, enums.INTENT_ORDER_TYPE])],
                            "price": _num(st.intents[j, enums.INTENT_PRICE])})
        return out

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
                        records.append(self._request(e, coid, d))
                    if status != "created" and coid not in self._runner_final:
                        records.append(OrderUpdate(coid, status, float(e["filled_qty"]), None, reject))
            dicts.append(d)
        return records, dicts

    def _request(self, e: np.ndarray, coid: str, d: dict[str, Any]) -> OrderRequest:
        """The :class:`OrderRequest` of a new order's event (``d``: the event as a dict)."""
        col, oid = int(e["col"]), float(e["order_id"])
        st = self.stepper
        assert st is not None
        cs = st.cs[col]
        # an exit: a risk or stop exit, a signal's exit, or the closing half of a reversal
        exit_ = (int(e["reason"]) in _EXIT_REASONS or oid == cs[enums.C_PEND_CLOSE_ID]
                 or (oid == cs[enums.C_PEND_ID] and cs[enums.C_PEND_ACTION] == enums.ACTION_EXIT))
        qty, ref = d["qty"], None
        if self.broker_mode:
            ref = None if self._closes is None else float(self._closes[col])
            level = d["price"] if d["price"] is not None else d["trigger"]
            if qty is None and d["order_type"] != "market" and level is not None and not np.isnan(e["notional"]):
                qty = float(e["notional"]) / level  # an exchange sizes only market orders by cost
            if qty is not None:  # an exchange's base amounts have 8 decimals; a float sum may miss by 1e-17
                qty = round(qty, 12)
        return OrderRequest(coid, self.symbols[col], d["side"], d["order_type"], qty, d["price"], d["trigger"],
                            _num(e["notional"]) if qty is None else None, exit_, ref)

    def _feed_event(self, event: FeedEvent) -> None:
        if self.broker_mode and event.kind in ("stale", "fresh"):
            self._stale = event.kind == "stale"
            self._update_entry_block()
        log.log(logging.INFO if event.kind == "fresh" else logging.WARNING, "feed: %s", event.message)
        self._record({"kind": f"feed_{event.kind}", "symbols": list(event.symbols), "message": event.message,
                      "bar": iso(event.open_ms)})

    def _record(self, event: dict[str, Any]) -> None:
        self.commit()  # the bars stepped before it come first in the event log
        self.store.append_events([event])
        self._publish([event])

    def _publish(self, events: list[dict[str, Any]], batch: BarBatch | None = None) -> None:
        for event in events:
            for callback in self.on_event:
                try:
                    callback(event)
                except Exception:  # a subscriber's bug must not stop the runner
                    log.exception("on_event callback %r failed on %s", callback, event.get("kind"))
        for hook in self.on_commit:
            try:
                hook(events, batch)
            except Exception:  # a service's bug must not stop the runner either
                log.exception("on_commit hook %r failed", hook)

    # --- broker mode ----------------------------------------------------------------------------
    def _update_entry_block(self) -> None:
        """Entries are blocked while paused, while the feed is stale or while a balance
        difference waits for confirmation; exits are managed all along."""
        st = self.stepper
        blocked = self._paused or self._stale or self._balance_hold
        if st is not None and st.entries_blocked != blocked:
            st.block_entries(blocked)
            log.warning("entries %s (paused=%s, stale feed=%s, balance hold=%s)",
                        "blocked" if blocked else "allowed again", self._paused, self._stale, self._balance_hold)

    def _ids(self, client_order_id: str) -> tuple[int, int] | None:
        """(column, order id) of one of this run's client order ids (of the core's stop or
        target for a placement of it); None for another's."""
        st = self.stepper
        assert st is not None
        parts = client_order_id.split(".")
        prefix = f"{orders.strategy_tag(self.strategy)}.{self.run_id}."
        # a protective order placed on the exchange carries its revision: ``<id>.<revision>``
        if len(parts) not in (4, 5) or not client_order_id.startswith(prefix) \
                or not all(p.isdigit() for p in parts[2:]):
            return None
        col = int(parts[2])
        return (col, int(parts[3])) if col < len(self.symbols) else None

    def _forming_day(self) -> int:
        """UTC day of the bar forming now (the one after the last stepped)."""
        assert self.last_bar_ms is not None
        return (self.last_bar_ms + self.tf_ms) // 86_400_000

    def _note(self, update: OrderUpdate, symbol: str, what: str, order: OrderRequest | None = None) -> None:
        """Store the broker's answer about an order (own transaction), with an event for a
        rejection (and the balance, refreshed), a lost order (an alert) or, for ``order`` just
        sent, its acceptance (``order_submitted``)."""
        self._updates[update.client_order_id] = update
        events: list[dict[str, Any]] = []
        base = {"client_order_id": update.client_order_id, "symbol": symbol, "reason": update.reason}
        if order is not None:
            base.update(side=order.side, order_type=order.type, qty=order.qty, price=order.price,
                        trigger=order.trigger, bar=iso(self.last_bar_ms))
        if order is not None and update.status in ("submitted", "partially_filled", "filled"):
            events.append({"kind": "order_submitted", **base, "status": update.status,
                           "filled_qty": update.filled_qty, "exchange_order_id": update.exchange_order_id})
        elif update.status == "rejected":
            self._runner_final.add(update.client_order_id)
            balance = {a: b.total for a, b in self.broker.balance().items() if b.total}
            events.append({"kind": "order_rejected", **base, "balance": balance})
            log.warning("%s %s rejected: %s", what, update.client_order_id, update.reason)
        elif update.status == "lost":
            self._runner_final.add(update.client_order_id)
            events.append({"kind": "order_lost", "alert": True, **base})
            log.error("ALERT: order %s is lost: %s", update.client_order_id, update.reason)
        elif update.reason:  # outcome unknown: looked up again at the next sync
            events.append({"kind": "order_unknown", **base})
        self.store.update_order(update, events=events)
        self._publish(events)

    def _refuse(self, order: OrderRequest, reason: str) -> None:
        """An order the gate did not approve: never sent, recorded as rejected."""
        self._awaiting.pop(order.client_order_id, None)
        reason_of = getattr(self.order_gate, "reason", None)
        why = reason_of(order.client_order_id) if reason_of is not None else None
        if why:
            log.warning("order %s not sent: %s", order.client_order_id, why)
        self._note(OrderUpdate(order.client_order_id, "rejected", reason=reason), order.symbol, "order")

    def _send(self, order: OrderRequest, created_s: float) -> None:
        """Through the gate (if any) to the broker; the broker's answer stored."""
        if self.order_gate is not None:
            decision = self.order_gate.decide(order, created_s, self._wall())
            if decision == "pending":
                if order.client_order_id not in self._awaiting:  # kept for a restart: offered again
                    self.store.update_order(OrderUpdate(order.client_order_id, "created"),
                                            extra={"awaiting_since": created_s})
                self._awaiting[order.client_order_id] = (order, created_s)
                return
            if decision != "approved":
                self._refuse(order, "not_approved" if decision == "rejected" else "approval_expired")
                return
            self._awaiting.pop(order.client_order_id, None)
        if order.reduce_only:
            cleared = self._clear_for_exit(order)
            if cleared is None:
                return
            order = cleared
        update = self.broker.submit(order)
        crash_point("runner.after_submit")
        self._note(update, order.symbol, "order", order)

    def _ask_gate(self) -> None:
        """Ask the gate again about the orders waiting for approval; send the approved ones."""
        for order, created_s in list(self._awaiting.values()):
            self._send(order, created_s)
        self._sync_fills()
        self._protect()

    def _dispatch(self, records: Sequence[OrderRequest | OrderUpdate]) -> None:
        """Cancel at the broker what the core withdrew, send the orders a step (or the emergency
        stop) created, book their fills, then bring the protective orders resting on the
        exchange in line with the core (:meth:`_protect`). The core's stop and take-profit
        orders are not sent as they are: they rest as placements or are watched."""
        refused = {r.client_order_id for r in records if isinstance(r, OrderUpdate) and r.status in FINAL_STATUSES}
        for r in records:  # the core withdrew an order working at the broker (emergency stop, risk)
            last = self._updates.get(r.client_order_id)
            if isinstance(r, OrderUpdate) and r.status == "cancelled" and last is not None \
                    and last.status not in FINAL_STATUSES:
                symbol = self.symbols[self._ids(r.client_order_id)[0]]
                self._note(self.broker.cancel(r.client_order_id, symbol), symbol, "cancel")
        now = self._wall()
        sent = False
        for r in records:
            if isinstance(r, OrderRequest) and r.client_order_id not in refused and not _protective(r):
                self._send(r, now)
                sent = True
        if sent:
            self._sync_fills()
        self._protect()

    def _before_close(self, batch: BarBatch) -> None:
        """What happens at a close before the step: orders still waiting for approval expire;
        orders good for the bar that just closed are cancelled at the broker (a fill that
        raced the cancel is booked below); fills are booked; watched stops that the bar
        crossed are sent as market orders."""
        for order, _ in list(self._awaiting.values()):
            self._refuse(order, "approval_expired")
        for o in self.store.orders(("submitted", "partially_filled")):
            if o.request.type in _ONE_BAR_TYPES and not _protective(o.request):
                self._note(self.broker.cancel(o.client_order_id, o.symbol), o.symbol, "cancel")
        self._sync_fills(batch.day)
        if self._watch_stops(batch):
            self._sync_fills(batch.day)

    def _watch_stops(self, batch: BarBatch) -> bool:
        """Send a market order for each position's stop or take-profit the closed bar crossed
        (the core holds their levels, trailing included) unless it rests on the exchange.
        Returns True if any was sent."""
        st = self.stepper
        assert st is not None
        sent = False
        for col, symbol in enumerate(self.symbols):
            pos = float(st.cs[col, enums.C_POS])
            if pos == 0.0:
                continue
            resting = {self._ids(o.client_order_id)[1] for o in self._placements(col) if o.status in _WORKING}
            d = 1.0 if pos > 0 else -1.0
            level, _ = sim_nb._stop_level(st.cs, col, d)
            target = float(st.cs[col, enums.C_TP_PRICE])
            low, high = float(batch.low[col]), float(batch.high[col])
            sl_id, tp_id = st.cs[col, enums.C_SL_ID], st.cs[col, enums.C_TP_ID]
            hit = None
            if not np.isnan(sl_id) and int(sl_id) not in resting and not np.isnan(level) and (
                    low <= level if d > 0 else high >= level):
                hit = int(sl_id)
            elif not np.isnan(tp_id) and int(tp_id) not in resting and not np.isnan(target) and (
                    high >= target if d > 0 else low <= target):
                hit = int(tp_id)
            if hit is None:
                continue
            cid = st.client_order_id(col, hit)
            stored = self.store.order(cid)
            if stored is not None and stored.status != "created":
                continue  # sent already (before a restart)
            order = OrderRequest(cid, symbol, "sell" if d > 0 else "buy", "market", round(abs(pos), 12),
                                 reduce_only=True, ref_price=float(batch.close[col]))
            log.info("watched %s of %s triggered: market order %s", "stop" if hit == st.cs[col, enums.C_SL_ID]
                     else "take-profit", symbol, cid)
            cleared = self._clear_for_exit(order)  # the stop resting on the exchange comes off first
            if cleared is None:
                continue
            update = self.broker.submit(cleared)
            crash_point("runner.after_submit")
            self._note(update, symbol, "stop order")
            sent = True
        return sent

    # --- protective orders resting on the exchange (broker mode) ----------------------------
    def _placements(self, col: int) -> list[StoredOrder]:
        """The column's protective orders recorded and not final (resting, or about to)."""
        return [o for o in self.store.orders(("created", *_WORKING), self.symbols[col])
                if _is_placement(o.client_order_id)]

    def _exit_working(self, col: int) -> bool:
        """True while an exit of the column is at the broker (a signal or risk exit, a
        reversal's closing half, a watched stop or target sent as a market order): no
        protective order may rest beside it (on spot both would sell the same coins)."""
        st = self.stepper
        assert st is not None
        cs = st.cs[col]
        ids = [cs[enums.C_PEND_CLOSE_ID], cs[enums.C_SL_ID], cs[enums.C_TP_ID]]
        if int(cs[enums.C_PEND_ACTION]) == enums.ACTION_EXIT:
            ids.append(cs[enums.C_PEND_ID])
        for oid in ids:
            if not np.isnan(oid):
                o = self.store.order(st.client_order_id(col, int(oid)))
                if o is not None and o.status in _WORKING:
                    return True
        return False

    def _desired(self, col: int) -> tuple[int, str, float, float] | None:
        """The protective order the column should have resting on the exchange now: (the core
        order's id, type, trigger, quantity), or None. One at a time, since on spot the first
        sell order locks the coins: the stop, else a lone take-profit (a target beside a stop
        is watched)."""
        st = self.stepper
        assert st is not None
        cs = st.cs[col]
        pos = float(cs[enums.C_POS])
        if not self.on_exchange[col] or pos == 0.0:
            return None
        qty = round(abs(pos), 12)  # as an exit's: the exchange's 8 decimals, not a float sum's 1e-17
        want: tuple[int, str, float, float] | None = None
        if not np.isnan(cs[enums.C_SL_ID]) and not np.isnan(cs[enums.C_STOP_LEVEL]):
            want = int(cs[enums.C_SL_ID]), "stop", float(cs[enums.C_STOP_LEVEL]), qty
        elif not np.isnan(cs[enums.C_TP_ID]) and not np.isnan(cs[enums.C_TP_PRICE]):
            want = int(cs[enums.C_TP_ID]), "take_profit", float(cs[enums.C_TP_PRICE]), qty
        return None if want is None or self._exit_working(col) else want

    def _matches(self, o: StoredOrder, want: tuple[int, str, float, float]) -> bool:
        ids = self._ids(o.client_order_id)
        r = o.request
        return ids is not None and (ids[1], r.type, r.trigger, r.qty) == want

    def _protect(self, cols: Sequence[int] | None = None, clear: bool = False) -> None:
        """Bring the protective orders resting on the exchange in line with the core: each
        column (all, or ``cols``) has the one :meth:`_desired` says (none with ``clear``, before
        an exit goes out) and nothing else. A stale one (the position changed size, a trailing
        stop moved, the position closed) is cancelled, then the new one placed with the next
        revision of its client order id; a fill that raced a cancel is booked and the column
        looked at again."""
        if not any(self.on_exchange):
            return
        for col in range(len(self.symbols)) if cols is None else cols:
            for _ in range(3):
                if not self.on_exchange[col] or col in self._deferred:
                    break  # watched; or its protective order filled in a later bar: nothing rests
                want = None if clear else self._desired(col)
                placed = self._placements(col)
                keep = next((o for o in placed if want is not None and self._matches(o, want)), None)
                raced = False
                for o in placed:
                    if o is not keep:
                        raced |= self._cancel_placement(o).filled_qty > o.filled_qty
                if raced:
                    self._sync_fills()
                    continue
                if want is not None and (keep is None or keep.status == "created"):
                    self._place(col, want, keep)
                break

    def _revision(self, core_id: str) -> int:
        """The last revision placed of the core's order ``core_id`` (0: none yet)."""
        if core_id not in self._revisions:
            rev = 0
            while self.store.order(f"{core_id}.{rev + 1}") is not None:
                rev += 1
            self._revisions[core_id] = rev
        return self._revisions[core_id]

    def _place(self, col: int, want: tuple[int, str, float, float], keep: StoredOrder | None) -> None:
        """Place the protective order ``want`` (or ``keep``: recorded but never sent, a crash in
        between), recorded before it is sent. A placement the exchange refused stays refused
        (the runner watches that order); one refused because the market is already through
        its level goes out at once as a market order, as the exchange's stop would have."""
        st = self.stepper
        assert st is not None
        symbol = self.symbols[col]
        oid, kind, trigger, qty = want
        core_id = st.client_order_id(col, oid)
        side = "sell" if st.cs[col, enums.C_POS] > 0 else "buy"
        ref = None if self._closes is None else float(self._closes[col])
        request = None if keep is None else keep.request
        update: OrderUpdate | None = None
        if request is None:
            rev = self._revision(core_id)
            latest = self.store.order(f"{core_id}.{rev}") if rev else None
            if latest is not None and latest.status in ("rejected", "lost") and self._matches(latest, want):
                update = latest.update  # refused as it is: watched, unless through its level (below)
            else:
                request = OrderRequest(f"{core_id}.{rev + 1}", symbol, side, kind, qty, None, trigger,  # type: ignore[arg-type]
                                       reduce_only=True, ref_price=ref)
                self._revisions[core_id] = rev + 1
                self.store.record_order(request, "created", self.last_bar_ms, extra={"protects": core_id})
        if update is None:
            assert request is not None
            update = self.broker.submit(request)
            crash_point("runner.after_submit")
            self._note(update, symbol, "protective order", request)
        stored = self.store.order(core_id)
        if update.status == "rejected" and "immediately" in (update.reason or "") \
                and stored is not None and stored.status == "created":  # not sent yet (a crash in between)
            market = OrderRequest(core_id, symbol, side, "market", qty, reduce_only=True, ref_price=ref)  # type: ignore[arg-type]
            log.info("%s of %s is already through its level %s: market order %s", kind, symbol, trigger, core_id)
            update = self.broker.submit(market)
            crash_point("runner.after_submit")
            self._note(update, symbol, "stop order")
            self._sync_fills()

    def _cancel_placement(self, o: StoredOrder) -> OrderUpdate:
        """Cancel a protective order resting on the exchange; its final state, stored."""
        update = self.broker.cancel(o.client_order_id, o.symbol)
        crash_point("runner.after_cancel")
        if update.status == "lost":  # recorded, never placed (a crash before it was sent)
            update = OrderUpdate(o.client_order_id, "cancelled", reason="never placed")
        self._note(update, o.symbol, "cancel")
        return update

    def _clear_for_exit(self, order: OrderRequest) -> OrderRequest | None:
        """An exit about to go out: its column's protective order comes off the exchange first
        (a fill that raced the cancel is booked), and the exit sells no more than the position
        left. None when nothing is left to close; the exit is then recorded as cancelled."""
        st = self.stepper
        ids = self._ids(order.client_order_id)
        assert st is not None and ids is not None
        col = ids[0]
        self._protect([col], clear=True)
        left = round(abs(float(st.cs[col, enums.C_POS])), 12)
        if left == 0.0 or col in self._deferred:
            log.warning("exit %s not sent: its protective order closed the position on the exchange",
                        order.client_order_id)
            self._note(OrderUpdate(order.client_order_id, "cancelled", reason=(
                "not sent: the position was closed by its protective order on the exchange")), order.symbol, "exit")
            return None
        return replace(order, qty=left) if order.qty is not None and order.qty > left else order

    def _sync_fills(self, day: int | None = None) -> None:
        """Book the broker's fills not booked yet (by exchange trade id), oldest first, each
        with the core's snapshot in one transaction. ``day``: UTC day of the bar they belong to
        (default the bar forming now)."""
        assert self.info is not None and self.last_bar_ms is not None
        day = self._forming_day() if day is None else day
        end_ms = self.last_bar_ms + 2 * self.tf_ms  # the end of the bar forming now
        self._deferred = {}
        for col, symbol in enumerate(self.symbols):
            since = self.store.last_fill_ms(symbol)
            fills = self.broker.fills_since(symbol, self.info.trade_from_ms if since is None else since)
            known = self.store.known_trade_ids(symbol)
            new = [f for f in fills if f.trade_id not in known]
            for i, fill in enumerate(new):
                # a resting stop's fill in a later bar (a gap at the next open, or while the runner
                # was down) is booked when that bar forms, as the backtest books it; the column's
                # later fills wait with it
                if fill.timestamp_ms >= end_ms and _is_placement(fill.client_order_id) \
                        and self._ids(fill.client_order_id) is not None:
                    self._deferred[col], new = new[i:], new[:i]
                    break
            last = {f.client_order_id: i for i, f in enumerate(new)}
            for i, fill in enumerate(new):
                done = False
                if last[fill.client_order_id] == i:  # the order's latest fill: is the order complete?
                    update = self._updates.get(fill.client_order_id)
                    if update is None or update.status not in FINAL_STATUSES:
                        update = self.broker.fetch_order(fill.client_order_id, symbol)
                        self._updates[fill.client_order_id] = update
                        if _is_placement(fill.client_order_id) and self.store.order(fill.client_order_id):
                            self.store.update_order(update)  # the core tracks its own order, not this one
                    done = update.status in FINAL_STATUSES
                self._book_broker_fill(fill, col, day, done)

    def _book_broker_fill(self, fill: BrokerFill, col: int, day: int, done: bool) -> None:
        st = self.stepper
        assert st is not None and self.last_bar_ms is not None
        ids = self._ids(fill.client_order_id)
        event: dict[str, Any] = {"kind": "fill", "trade_id": fill.trade_id, "client_order_id": fill.client_order_id,
                                 "symbol": fill.symbol, "side": fill.side, "qty": fill.qty, "price": fill.price,
                                 "fee": fill.fee, "fee_currency": fill.fee_currency, "bar": iso(self.last_bar_ms + self.tf_ms)}
        if ids is None or ids[0] != col:
            event["kind"] = "fill_external"
            log.warning("fill %s of %s is not this run's order %s: recorded, not booked", fill.trade_id,
                        fill.symbol, fill.client_order_id)
            if self.store.record_fill(fill, events=[event]):
                self._publish([event])
            return
        fee, ccy = self._booked_fee(col, fill)
        if ccy is None:  # a third currency (BNB): the core cannot value it; the balance check will tell
            ccy = "quote"
            event["fee_unbooked"] = True
        try:
            out = st.apply_fill(col, ids[1], fill.qty, fill.price, fee, ccy, day=day, done=done)
        except ValueError as e:  # the core no longer has that order working
            event.update(kind="fill_unbooked", alert=True, message=str(e))
            log.error("ALERT: fill %s of %s could not be booked: %s", fill.trade_id, fill.client_order_id, e)
            if self.store.record_fill(fill, events=[event]):
                self._publish([event])
            return
        rec = out.fills[-1]
        event.update(order_type=enums.ORDER_TYPE_NAMES[rec["order_type"]], reason=enums.REASON_NAMES[rec["reason"]])
        records, dicts = self._records(out.events, self.last_bar_ms)
        snapshot, state_records, saved = self._state()
        if self.store.record_fill(fill, self.last_bar_ms, snapshot=snapshot, summary=self.summary(),
                                  events=[event, *dicts], orders=records, records=state_records):
            self._saved = saved
        self._publish([event, *dicts])
        if any(isinstance(r, OrderRequest) and not _protective(r) for r in records):
            self._dispatch(records)

    def _booked_fee(self, col: int, fill: BrokerFill) -> tuple[float, str | None]:
        """A fill's fee as the core books it: ``(fee, "quote" | "base")``, or ``(0.0, None)`` for
        a fee in a third currency (BNB), which the core cannot value."""
        if fill.fee == 0.0 or fill.fee_currency in (self._quote[col], ""):
            return fill.fee, "quote"
        if fill.fee_currency == self._base[col]:
            return fill.fee, "base"
        return 0.0, None

    def _account_totals(self) -> dict[str, float]:
        """The account's total of each asset the run trades."""
        balance = self.broker.balance()
        return {a: (balance[a].total if a in balance else 0.0) for a in sorted({*self._base, *self._quote})}

    def _expected_totals(self, start: dict[str, float]) -> dict[str, float]:
        """What the account should hold: what it held at the start plus the core's positions
        and its change of cash (one quote currency is assumed for the cash)."""
        st = self.stepper
        assert st is not None
        expected = dict(start)
        for col, base in enumerate(self._base):
            expected[base] = expected.get(base, 0.0) + float(st.cs[col, enums.C_POS])
        quote = self._quote[0]
        expected[quote] = expected.get(quote, 0.0) + st.cash - float(st.p[enums.P_INIT_CASH])
        for col, fills in self._deferred.items():  # on the exchange already, booked at their bar
            base = self._base[col]
            for f in fills:
                sign = 1.0 if f.side == "buy" else -1.0
                fee, ccy = self._booked_fee(col, f)  # as the core will book it
                expected[base] = expected.get(base, 0.0) + sign * f.qty - (fee if ccy == "base" else 0.0)
                expected[quote] -= sign * f.qty * f.price + (fee if ccy == "quote" else 0.0)
        return expected

    def _reconcile(self) -> None:
        """Before trading (broker mode): orders recorded but never acknowledged are looked up
        and sent if still due; the exchange's open orders are matched with the store (this
        run's unknown ones adopted, others flagged ``external``); fills missed are booked; the
        balance is checked against the core's positions and cash."""
        st = self.stepper
        assert st is not None and self.last_bar_ms is not None and self.info is not None
        self._runner_final = {o.client_order_id for o in self.store.orders(("rejected", "lost"))}
        self._balance_hold = self.store.get_flag(_HOLD_FLAG) is not None
        self._update_entry_block()
        events: list[dict[str, Any]] = []
        for o in self.store.orders(("created", *_WORKING)):
            if _is_placement(o.client_order_id):  # resting on the exchange: what became of it while down
                update = self.broker.fetch_order(o.client_order_id, o.symbol)
                if update.status != "lost" or o.status != "created":  # else never placed: _protect sends it
                    self._note(update, o.symbol, "protective order")
        for o in self.store.orders("created"):
            if _protective(o.request):
                continue  # the core's stop or target: placed or watched (below, and at closes)
            update = self.broker.fetch_order(o.client_order_id, o.symbol)
            if update.status != "lost":
                self._note(update, o.symbol, "order")
            elif o.created_bar_ms == self.last_bar_ms:  # decided at the last close: still due
                # one that was waiting for approval is offered again, its wait counted from then
                self._send(o.request, float(o.extra.get("awaiting_since", self._wall())))
        for symbol in self.symbols:
            for request, update in self.broker.open_order_requests(symbol):
                known = self.store.order(request.client_order_id)
                if known is not None:
                    self.store.update_order(update)
                elif self._ids(request.client_order_id) is not None:
                    event = {"kind": "order_adopted", "client_order_id": request.client_order_id, "symbol": symbol}
                    self.store.record_order(request, "created", self.last_bar_ms, extra={"adopted": True},
                                            events=[event])
                    self.store.update_order(update)
                    events.append(event)
                else:
                    event = {"kind": "order_external", "client_order_id": request.client_order_id,
                             "symbol": symbol, "side": request.side, "type": request.type, "qty": request.qty,
                             "policy": self.external_orders}
                    if self.external_orders == "cancel":
                        event["status"] = self.broker.cancel(request.client_order_id, symbol).status
                    log.warning("external open order %s on %s: %s", request.client_order_id, symbol,
                                "cancelled" if self.external_orders == "cancel" else "left alone")
                    self.store.append_events([event])
                    events.append(event)
        self._publish(events)
        self._sync_fills()
        self._check_balance()
        self._protect()
        differences = [f"{e['kind']} {e['client_order_id']} on {e['symbol']}" for e in events]
        if self._balance_hold:
            differences.append("balance differs (balance_hold): entries blocked until confirm_balance or reset")
        summary = {"kind": "reconciliation", "ok": not differences, "differences": differences}
        self.store.append_events([summary])
        self._publish([summary])

    def _check_balance(self) -> None:
        """Compare the account with what the core expects; a difference beyond rounding halts
        entries (flag ``balance_hold``) until ``confirm_balance`` (or ``reset``)."""
        start = self.store.get_flag(_BALANCE_FLAG)
        if start is None or self._balance_hold:
            return
        actual, expected = self._account_totals(), self._expected_totals(start)
        diff = {a: {"exchange": actual.get(a, 0.0), "expected": e} for a, e in expected.items()
                if abs(actual.get(a, 0.0) - e) > 1e-8 + 1e-9 * abs(e)}
        if not diff:
            return
        event = {"kind": "balance_mismatch", "alert": True, "assets": diff,
                 "message": "the account differs from the run's positions and cash beyond fees: entries "
                            "halted until confirm_balance (or reset)"}
        self._balance_hold = True
        self._update_entry_block()
        self._saved = self._commit_state(self.last_bar_ms, (), [event], flags={_HOLD_FLAG: diff})
        self._publish([event])
        log.error("ALERT: balance differs: %s", diff)

    def confirm_balance(self, req: ControlRequest | None = None) -> dict[str, Any]:
        """Accept the account's balance as it is now (the check starts from it) and allow
        entries again."""
        st = self.stepper
        assert st is not None and self.last_bar_ms is not None, "start() the runner first"
        if not self._balance_hold:
            return {"ok": False, "error": "no balance difference to confirm"}
        actual = self._account_totals()
        zero = self._expected_totals(dict.fromkeys(actual, 0.0))
        start = {a: actual[a] - zero.get(a, 0.0) for a in actual}
        self._balance_hold = False
        self._update_entry_block()
        event = {"kind": "balance_confirmed", "balance": actual}
        self._saved = self._commit_state(self.last_bar_ms, (), [event],
                                         flags={_HOLD_FLAG: None, _BALANCE_FLAG: start})
        self._publish([event])
        return {"ok": True, "balance_hold": False}

    # --- control --------------------------------------------------------------------------------
    def handle_requests(self) -> None:
        """Handle the control requests posted to the store, oldest first (after committing the
        bars stepped so far)."""
        requests = self.store.pending_requests()
        if requests:
            self.commit()
        for req in requests:
            on_request = getattr(self.order_gate, "on_request", None)
            gate_result = None if on_request is None else on_request(req)
            if gate_result is not None:  # approve_order / reject_order (--confirm-orders)
                self.store.mark_handled(req.id, gate_result)
                continue
            if req.kind == "emergency_stop":
                result = self.emergency_stop(req)
            elif req.kind == "reset":
                result = self.reset(req)
            elif req.kind == "confirm_balance" and self.broker_mode:
                result = self.confirm_balance(req)
            elif req.kind in ("pause", "resume"):
                result = self.pause(req.kind == "pause", req)
            else:  # e.g. an order approval without --confirm-orders
                result = {"ok": False, "error": f"{req.kind} is not handled by this runner"
                          + (" (it runs without --confirm-orders)" if req.kind.endswith("_order") else "")}
            self.store.mark_handled(req.id, result)

    def emergency_stop(self, req: ControlRequest | None = None) -> dict[str, Any]:
        """Raise the core's emergency stop now and commit it (flags ``halted``, ``halt_reason``)."""
        st = self.stepper
        assert st is not None and self.last_bar_ms is not None, "start() the runner first"
        self.commit()
        why = f"emergency stop (request {req.id})" if req is not None else "emergency stop"
        if st.g[enums.G_EMERGENCY] != 0.0:  # already raised (a request handled before a crash)
            if not self.store.get_flag("halted"):
                self.store.set_flag("halted", True)
            return {"ok": True, "halted": True, "note": "already halted"}
        events = st.emergency_stop()
        order_records, dicts = self._records(events, self.last_bar_ms)
        self._saved = self._commit_state(self.last_bar_ms, order_records, dicts,
                                         flags={"halted": True, "halt_reason": why})
        self._publish(dicts)
        if self.broker_mode:
            self._dispatch(order_records)
        log.warning("%s: open orders cancelled, positions exit at the next bar's open, no new orders", why)
        return {"ok": True, "halted": True, "exits": sum(isinstance(r, OrderRequest) for r in order_records)}

    def pause(self, paused: bool, req: ControlRequest | None = None) -> dict[str, Any]:
        """Pause (block new entries; exits and stops still managed) or resume, committed at once
        with the flag ``paused``; event ``paused`` / ``resumed``."""
        st = self.stepper
        assert st is not None and self.last_bar_ms is not None, "start() the runner first"
        if self._paused == paused:
            return {"ok": True, "paused": paused, "note": "already " + ("paused" if paused else "running")}
        self._paused = paused
        self._update_entry_block()
        event = {"kind": "paused" if paused else "resumed", "bar": iso(self.last_bar_ms),
                 "request": None if req is None else req.id}
        self._saved = self._commit_state(self.last_bar_ms, (), [event], flags={"paused": True if paused else None})
        self._publish([event])
        log.warning("%s: %s", event["kind"], "no new entries; exits and stops are still managed"
                    if paused else "entries allowed again from the next close")
        return {"ok": True, "paused": paused}

    def reset(self, req: ControlRequest | None = None) -> dict[str, Any]:
        """Lift an emergency stop once flat; refused (with the reason) otherwise."""
        st = self.stepper
        assert st is not None and self.last_bar_ms is not None, "start() the runner first"
        self.commit()
        if self._balance_hold and st.g[enums.G_EMERGENCY] == 0.0:  # a reset confirms the balance
            return self.confirm_balance(req)
        try:
            st.clear_emergency_stop()
        except ValueError as e:
            log.warning("reset refused: %s", e)
            return {"ok": False, "error": str(e)}
        event = {"kind": "reset", "bar": iso(self.last_bar_ms)}
        self._saved = self._commit_state(self.last_bar_ms, (), [event], flags={"halted": None, "halt_reason": None})
        self._publish([event])
        log.warning("emergency stop reset: trading resumes from the next close")
        return {"ok": True, "halted": False}


def _protective(order: OrderRequest) -> bool:
    """A position's stop or take-profit: the core's order, or a placement of it (broker mode)."""
    return order.reduce_only and order.type in ("stop", "take_profit")


def _is_placement(client_order_id: str) -> bool:
    """True for a protective order placed on the exchange: ``<the core order's id>.<revision>``."""
    return client_order_id.count(".") == 4


def restore_stepper(stepper: BarStepper, store: StateStore) -> int:
    """Load the store's latest snapshot into ``stepper``, with the fill and event records the
    store keeps beside it; returns the open time (ms) of the bar it follows."""
    snap = store.latest_snapshot()
    if snap is None:
        raise ValueError(f"no snapshot in the state store {store.path}")
    fills = np.frombuffer(store.records("fills"), dtype=enums.fill_dt)
    events = np.frombuffer(store.records("events"), dtype=enums.event_dt)
    stepper.restore(snap[0], fills, events)
    return snap[1]


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


__all__ = ["COMMIT_EVERY", "CRASH_POINTS", "EXTERNAL_POLICIES", "FILL_COLUMNS", "PROTECTIVE_POLICIES", "LiveRunner",
           "OrderGate", "PaperBroker", "RunInfo", "iso", "restore_stepper"]
