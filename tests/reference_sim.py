"""A plain-Python reference of the documented fill rules (README "Settings", docs/simulator.md).

Written from the documentation, not from ``framework/sim_nb.py``: slow, one bar and one column at a
time, every rule where it reads in the README, so that a long random run of the real simulator
can be compared with it fill by fill. Where the README leaves a choice open the choice made is
marked ``README:`` below (and listed in the report that added this file).

Input: (bars, columns) prices, the UTC day number of every bar, and the strategy's decisions at
every close as ``Decision`` objects (or None). Output: every fill in booking order and the
equity of every cash group at every close.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

LONG, SHORT, EXIT = "long", "short", "exit"
DUST = 1e-9  # an entry worth less than this fraction of the equity is rounding residue, no order
MARKET, LIMIT, STOP = "market", "limit", "stop"


@dataclass(frozen=True)
class Decision:
    """What a strategy said at a close: an action, and for entries an order type and price."""

    action: str  # LONG, SHORT or EXIT
    order_type: str = MARKET
    price: float = math.nan


@dataclass
class Fill:
    col: int
    bar: int
    side: int  # +1 buy, -1 sell
    qty: float
    price: float
    fees: float
    order_type: str
    reason: str


@dataclass
class Column:
    pos: float = 0.0
    entry_price: float = math.nan
    entry_bar: int = -1
    entered_inside: bool = False
    stop: float = math.nan  # stop-loss level
    target: float = math.nan
    trail_pct: float = math.nan
    trail_dist: float = math.nan  # trailing distance in price (ATR multiples at the decision)
    best: float = math.nan  # best high (long) / low (short) of the bars before the current one
    pending: dict | None = None  # the order decided at the last close
    cooldown_until: int = -1
    last_close: float = math.nan
    closes: list = field(default_factory=list)
    trs: list = field(default_factory=list)
    atr: float = math.nan


class Group:
    """One cash group: its columns, cash and the group-wide risk state."""

    def __init__(self, cols: list[int], s) -> None:
        self.cols = cols
        self.cash = s.init_cash
        self.equity = s.init_cash
        self.peak = s.init_cash
        self.day = None
        self.day_start_equity = s.init_cash
        self.trades_today = 0
        self.day_blocked = False
        self.halted = False  # max drawdown or the emergency stop: no orders for good


class ReferenceSim:
    """The README's rules for ``SimSettings`` ``s`` (any object with its field names)."""

    def __init__(self, s, ann_factor: float, n_cols: int, trade_from: int = 0) -> None:
        self.s = s
        self.trade_from = trade_from  # README: bars before it warm up only, they place no orders
        self.ann = ann_factor
        self.cols = [Column() for _ in range(n_cols)]
        groups = [list(range(n_cols))] if s.cash_sharing else [[j] for j in range(n_cols)]
        self.groups = [Group(g, s) for g in groups]
        self.fills: list[Fill] = []

    # --- bookkeeping -----------------------------------------------------------------------

    def _book(self, g: Group, j: int, t: int, side: int, qty: float, price: float, order_type: str, reason: str):
        notional = qty * price
        fees = notional * self.s.fees  # "Fees are fees x qty x price on every fill"
        g.cash += -(notional + fees) if side > 0 else notional - fees
        self.fills.append(Fill(j, t, side, qty, price, fees, order_type, reason))

    def _close(self, g, j, t, price, order_type, reason):
        c = self.cols[j]
        self._book(g, j, t, -1 if c.pos > 0 else 1, abs(c.pos), price, order_type, reason)
        c.pos = 0.0

    # --- the simulator's own indicators (README "Settings": Wilder ATR, realised vol) --------

    def _atr(self, c: Column, h: float, l: float, close: float) -> float:
        n = self.s.atr_window
        if c.closes:
            prev = c.closes[-1]
            c.trs.append(max(h - l, abs(h - prev), abs(l - prev)))
        if len(c.trs) == n:
            c.atr = sum(c.trs) / n  # seeded with the mean true range of bars 1..n
        elif len(c.trs) > n:
            c.atr = c.atr + (c.trs[-1] - c.atr) / n
        return c.atr

    def _vol(self, c: Column) -> float:
        n = self.s.vol_window
        if len(c.closes) < n + 1:
            return math.nan
        r = np.diff(np.log(np.array(c.closes[-(n + 1):])))
        return float(np.std(r, ddof=1) * math.sqrt(self.ann))

    # --- one bar -----------------------------------------------------------------------------

    def step(self, t: int, day: int, o, h, l, c, decisions) -> None:
        """Bar ``t`` of every group; ``decisions[j]`` is column j's Decision at this close."""
        for g in self.groups:
            if day != g.day:  # a new UTC day: the daily limits start again
                # README: "the UTC day's opening equity" is the equity marked at the last close
                # before the day's first bar (its fills at the open count towards the day)
                g.day = day
                g.day_start_equity = g.equity
                g.trades_today = 0
                g.day_blocked = False
            # README: every order fills at the open, then the stops and targets inside the bar
            for j in g.cols:
                self._fill_pending(g, j, t, o[j], h[j], l[j])
            for j in g.cols:
                self._exits(g, j, t, o[j], h[j], l[j])
            self._close_bar(g, t, h, l, c)
            self._decide(g, t, decisions)

    def _fill_price(self, direction: int, order_type: str, level: float, o: float, h: float, l: float):
        """(price, inside) of an entry order on this bar, or (None, False)."""
        slip = self.s.slippage
        if order_type == MARKET:  # next open, slippage against the trader
            return o * (1 + slip * direction), False
        if order_type == LIMIT:  # at the level when reached, at the open if it opens better; no slippage
            if direction > 0:
                return (o, False) if o <= level else ((level, True) if l <= level else (None, False))
            return (o, False) if o >= level else ((level, True) if h >= level else (None, False))
        # stop entry: at the level plus slippage when reached, at the open plus slippage on a gap
        if direction > 0:
            if o >= level:
                return o * (1 + slip), False
            return (level * (1 + slip), True) if h >= level else (None, False)
        if o <= level:
            return o * (1 - slip), False
        return (level * (1 - slip), True) if l <= level else (None, False)

    def _others(self, g: Group, j: int, shorts_only: bool) -> float:
        total = 0.0
        for i in g.cols:
            q = self.cols[i].pos
            if i != j and (q < 0 if shorts_only else q != 0):
                total += abs(q) * self.cols[i].last_close
        return total

    def _fill_pending(self, g: Group, j: int, t: int, o: float, h: float, l: float) -> None:
        col = self.cols[j]
        order, col.pending = col.pending, None  # every order is good for one bar
        if order is None:
            return
        s = self.s
        if order["action"] == EXIT:  # always a market order at the open
            if col.pos != 0:
                d = 1 if col.pos > 0 else -1
                self._close(g, j, t, o * (1 - s.slippage * d), MARKET, order["reason"])
            return
        direction = 1 if order["action"] == LONG else -1
        price, inside = self._fill_price(direction, order["type"], order["price"], o, h, l)
        if price is None:
            return  # not reached: expires
        if col.pos * direction < 0:  # the opposite signal closes and reverses at the same price
            self._close(g, j, t, price, order["type"], "signal")
        if col.pos != 0:
            return
        # README: max trades per day counts entries at their fill (a reversal whose new side
        # is refused here has already closed the old one)
        if s.max_trades_per_day is not None and g.trades_today >= s.max_trades_per_day:
            return
        qty = order["qty"] if order["qty"] is not None else order["notional"] / price
        if s.max_position_notional is not None:
            qty = min(qty, s.max_position_notional / price)
        if s.max_exposure is not None:
            # README: sum of |notional| / equity, the others marked at their last close and the
            # equity of the last close (the decision's)
            qty = min(qty, (s.max_exposure * g.equity - self._others(g, j, False)) / price)
        free = g.cash
        if len(g.cols) > 1:  # another column's short: its proceeds and as much again are not free
            free -= 2 * self._others(g, j, True)
        qty = min(qty, free / (price * (1 + s.fees)))  # no leverage: position plus fee from cash
        # README: "a position plus its fee must be paid from cash". An all-in entry leaves a
        # rounding residue of cash (around 1e-13) that pays for no position
        if not qty * price > DUST * g.equity:
            return
        self._book(g, j, t, direction, qty, price, order["type"], "signal")
        col.pos = direction * qty
        col.entry_price, col.entry_bar, col.entered_inside = price, t, inside
        col.best = price
        atr = order["atr"]
        col.stop = (price * (1 - direction * s.sl_pct) if s.sl_pct is not None
                    else price - direction * s.sl_atr * atr if s.sl_atr is not None else math.nan)
        col.target = (price * (1 + direction * s.tp_pct) if s.tp_pct is not None
                      else price + direction * s.tp_atr * atr if s.tp_atr is not None else math.nan)
        col.trail_pct = s.trail_pct if s.trail_pct is not None else math.nan
        col.trail_dist = s.trail_atr * atr if s.trail_atr is not None else math.nan
        g.trades_today += 1

    def _exits(self, g: Group, j: int, t: int, o: float, h: float, l: float) -> None:
        col = self.cols[j]
        if col.pos == 0:
            return
        d = 1 if col.pos > 0 else -1
        inside = col.entry_bar == t and col.entered_inside
        first = col.entry_price if inside else o  # the first price this position saw in the bar
        adverse = l if d > 0 else h
        favourable = h if d > 0 else l
        level, reason = col.stop, "stop_loss"
        trail = (col.best * (1 - d * col.trail_pct) if not math.isnan(col.trail_pct)
                 else col.best - d * col.trail_dist if not math.isnan(col.trail_dist) else math.nan)
        # README: both a stop-loss and a trailing stop: the tighter one is the stop
        # (a tie counts as the stop-loss)
        if not math.isnan(trail) and (math.isnan(level) or (trail - level) * d > 0):
            level, reason = trail, "trailing_stop"
        if not math.isnan(level):
            hit = first if (first - level) * d <= 0 else level if (adverse - level) * d <= 0 else None
            if hit is not None:  # the stop first; stops fill with slippage
                self._close(g, j, t, hit * (1 - self.s.slippage * d), STOP, reason)
                if self.s.cooldown_bars is not None:
                    # README: "cooldown after a stop-out" (stop-loss or trailing stop, not a
                    # target): no entry decided at bars t .. t + cooldown_bars - 1
                    col.cooldown_until = t + self.s.cooldown_bars
                return
        if inside:
            return  # entered inside the bar: the target and the best price count from the next bar
        if not math.isnan(col.target):
            hit = o if (o - col.target) * d >= 0 else col.target if (favourable - col.target) * d >= 0 else None
            if hit is not None:  # targets fill without slippage
                self._close(g, j, t, hit, "take_profit", "take_profit")
                return
        if (favourable - col.best) * d > 0:  # after this bar's checks: trails the previous bars
            col.best = favourable

    def _close_bar(self, g: Group, t: int, h, l, c) -> None:
        equity = g.cash
        for j in g.cols:
            col = self.cols[j]
            col.last_close = c[j]
            equity += col.pos * c[j]
            self._atr(col, h[j], l[j], c[j])
            col.closes.append(c[j])
        g.equity = equity
        g.peak = max(g.peak, equity)
        s = self.s
        # risk limits at the close, on the marked equity; they act at the next open
        if g.halted:  # README: a position left after a halt (none in practice) closes as well
            self._flatten(g, "max_drawdown")
        elif s.max_drawdown is not None and equity < g.peak * (1 - s.max_drawdown):
            g.halted = True
            self._flatten(g, "max_drawdown")
        elif not g.day_blocked and s.daily_loss is not None and equity < g.day_start_equity * (1 - s.daily_loss):
            g.day_blocked = True
            self._flatten(g, "daily_loss")

    def emergency_stop(self) -> None:
        """README: raised between bars, it cancels every pending order, queues a market exit of
        every open position for the next open and halts every group for good."""
        for g in self.groups:
            g.halted = True
            self._flatten(g, "emergency_stop")

    def _flatten(self, g: Group, reason: str) -> None:
        for j in g.cols:
            self._queue_exit(j, reason)

    def _queue_exit(self, j: int, reason: str) -> None:
        col = self.cols[j]
        col.pending = {"action": EXIT, "reason": reason} if col.pos != 0 else None

    def _size(self, g: Group, col: Column):
        """(notional, qty) of a new entry at this close, or None while it cannot be sized."""
        s = self.s
        notional = qty = None
        if s.sizing == "fraction":
            notional = s.size * g.equity
        elif s.sizing == "cash":
            notional = s.size
        elif s.sizing == "risk":  # qty = equity x risk / (ATR x atr_stop_mult)
            qty = g.equity * s.size / (col.atr * s.atr_stop_mult) if col.atr > 0 else math.nan
        else:  # vol_target
            vol = self._vol(col)
            notional = g.equity * s.size / vol if vol > 0 else math.nan
        value = notional if notional is not None else qty
        if not (value > 0) or math.isinf(value):
            return None
        # README: an ATR stop, target or trail is not sent before the ATR has warmed up
        if (s.sl_atr is not None or s.tp_atr is not None or s.trail_atr is not None) and math.isnan(col.atr):
            return None
        return notional, qty

    def _decide(self, g: Group, t: int, decisions) -> None:
        if g.halted or t < self.trade_from:
            return  # halted for good, or still warming up
        s = self.s
        for j in g.cols:
            col = self.cols[j]
            if col.pending is not None:
                continue  # a risk limit already closes this column
            dec = decisions[j]
            if dec is None:
                continue
            action = dec.action
            if action == SHORT and not s.allow_short:
                action = EXIT  # long only: a short signal closes the long
            if action == EXIT:
                self._queue_exit(j, "signal")
                continue
            direction = 1 if action == LONG else -1
            if col.pos * direction > 0:
                continue  # no pyramiding
            # README: max positions counts open positions and entries already sent this close,
            # and does not refuse a reversal (it keeps the count)
            open_or_pending = sum(
                1 for i in g.cols
                if self.cols[i].pos != 0 or (self.cols[i].pending or {}).get("action") in (LONG, SHORT)
            )
            blocked = (
                g.day_blocked
                or t < col.cooldown_until
                or (s.max_positions is not None and col.pos == 0 and open_or_pending >= s.max_positions)
            )
            sized = None if blocked else self._size(g, col)
            if sized is None:
                # README: the opposite signal closes and reverses; when the new side cannot be
                # entered (a limit refuses it, or it cannot be sized yet) the old side still closes
                self._queue_exit(j, "signal")
                continue
            col.pending = {"action": action, "type": dec.order_type, "price": dec.price,
                           "notional": sized[0], "qty": sized[1], "atr": col.atr, "reason": "signal"}


def simulate(
    s, ann_factor: float, o, h, l, c, days, decisions, *, emergency_at: int | None = None, **options
) -> tuple[list[Fill], np.ndarray]:
    """Run the reference over every bar: (fills, (bars, groups) equity at each close).

    ``o, h, l, c`` are (bars, columns) arrays, ``days`` the UTC day number of each bar,
    ``decisions[t][j]`` column j's Decision (or None) at the close of bar t. A driver raises the
    emergency stop right before bar ``emergency_at`` (None: never); ``options`` go to
    ``ReferenceSim`` (``trade_from``).
    """
    sim = ReferenceSim(s, ann_factor, o.shape[1], **options)
    equity = np.empty((o.shape[0], len(sim.groups)))
    for t in range(o.shape[0]):
        if t == emergency_at:
            sim.emergency_stop()
        sim.step(t, int(days[t]), o[t], h[t], l[t], c[t], decisions[t])
        equity[t] = [g.equity for g in sim.groups]
    return sim.fills, equity
