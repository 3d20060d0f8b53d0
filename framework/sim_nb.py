"""The simulation step: the one function both drivers (backtester and live runner) call.

``fill_nb`` then ``order_nb`` advance one *cash group* (one or more columns sharing cash) by one
closed bar; the strategy decides between the two, so it can see its position:

1. at the bar's open, the paper matcher: the orders decided at the previous close (market at
   the open plus slippage; limit, stop and stop-limit orders against the bar's high/low, at the
   open when it gaps through); inside the bar, the stop and take-profit orders of open positions
   and the venue's liquidation (maintenance margin): the stops first when a stop and the target
   are touched, at the open when the bar gaps through;
2. every fill goes through ``book_fill_nb``, the one booking path (a live broker calls it with
   the exchange's price, quantity and fee);
3. at the bar's close: mark to market, update the simulator's ATR and realised volatility,
   enforce the risk limits (max-drawdown halt, daily loss limit);
4. turn the strategy's intents for this bar into orders for the next bar: sizing, max trades
   per day, cooldown after a stop-out, max positions, notional and exposure caps, the
   exchange's precision; none before the bar ``P_TRADE_FROM`` (warm-up).

Orders are records with an id (the group's sequence number) and a status that moves through
the state machine of ``framework.orders``; every change is reported as an ``event_dt`` record,
fills as ``fill_dt`` records, so nothing an order does is silent. Stop-loss, trailing stop and
take-profit are orders attached to the position (their triggers in the column state).
The emergency stop (``emergency_stop_nb``) acts on the state when it is raised, between bars.

Conventions: prices are (rows, columns) arrays read in place at one row; a group's k columns are
consecutive, from ``col0``; the column state is (k, N_COL_STATE); fills and events are appended
to ``fills`` (``fill_dt``, at least FILLS_PER_COLUMN_BAR * k rows) and ``ev`` (``event_dt``, at
least EVENTS_PER_COLUMN_BAR * k + EVENTS_PER_GROUP_BAR rows) from the counts in ``nrec``
(int64[2]: fills, events), which they advance. Every state number is float64 so the whole state
can be persisted as arrays.
"""

from __future__ import annotations

import numpy as np

from framework.enums import (
    ACTION_EXIT,
    ACTION_LONG,
    ACTION_NONE,
    ACTION_SHORT,
    C_ATR,
    C_BEST_PRICE,
    C_COOLDOWN_UNTIL,
    C_ENTRY_BAR,
    C_ENTRY_INSIDE,
    C_ENTRY_PRICE,
    C_LAST_CLOSE,
    C_PEND_ACTION,
    C_PEND_ATR,
    C_PEND_BAR,
    C_PEND_CLOSE_ID,
    C_PEND_FILLED,
    C_PEND_ID,
    C_PEND_LIMIT,
    C_PEND_NOTIONAL,
    C_PEND_PRICE,
    C_PEND_QTY,
    C_PEND_REASON,
    C_PEND_TYPE,
    C_POS,
    C_REALIZED,
    C_SL_ID,
    C_SL_PRICE,
    C_STOP_LEVEL,
    C_TP_ID,
    C_TP_PRICE,
    C_TRAIL_DIST,
    C_VOL,
    EVENT_AMENDED,
    EVENT_DAILY_BLOCK,
    EVENT_EMERGENCY,
    EVENT_HALT,
    EVENT_LIQUIDATION,
    EVENT_ORDER,
    FEE_BASE,
    FEE_QUOTE,
    G_BAR,
    G_CASH,
    G_DAY,
    G_DAY_BLOCKED,
    G_DAY_START_EQUITY,
    G_EMERGENCY,
    G_ENTRIES_BLOCKED,
    G_EQUITY,
    G_HALTED,
    G_NEXT_ORDER_ID,
    G_PEAK_EQUITY,
    G_TRADES_TODAY,
    INTENT_ACTION,
    INTENT_LIMIT,
    INTENT_ORDER_TYPE,
    INTENT_PRICE,
    N_COL_STATE,
    N_GROUP_STATE,
    ORDER_LIMIT,
    ORDER_MARKET,
    ORDER_STOP,
    ORDER_STOP_LIMIT,
    ORDER_TAKE_PROFIT,
    P_ALLOW_SHORT,
    P_ANN_FACTOR,
    P_ATR_STOP_MULT,
    P_ATR_WINDOW,
    P_BROKER_FILLS,
    P_COOLDOWN_BARS,
    P_DAILY_LOSS,
    P_EMERGENCY_AT,
    P_FEES,
    P_INIT_CASH,
    P_MAINT_MARGIN,
    P_MAX_DRAWDOWN,
    P_MAX_EXPOSURE,
    P_MAX_POS_NOTIONAL,
    P_MAX_POSITIONS,
    P_MAX_TRADES_DAY,
    P_MIN_NOTIONAL,
    P_MIN_QTY,
    P_PRICE_TICK,
    P_QTY_STEP,
    P_SIZE,
    P_SIZE_KIND,
    P_SL_ATR,
    P_SL_PCT,
    P_SLIPPAGE,
    P_TP_ATR,
    P_TP_PCT,
    P_TRADE_FROM,
    P_TRAIL_ATR,
    P_TRAIL_PCT,
    P_VOL_WINDOW,
    REASON_DAILY_LOSS,
    REASON_EMERGENCY,
    REASON_LIQUIDATION,
    REASON_MAX_DRAWDOWN,
    REASON_SIGNAL,
    REASON_STOP_LOSS,
    REASON_TAKE_PROFIT,
    REASON_TRAILING_STOP,
    REJECT_COOLDOWN,
    REJECT_DAILY_LOSS,
    REJECT_ENTRIES_BLOCKED,
    REJECT_HALTED,
    REJECT_MAX_POSITIONS,
    REJECT_MAX_TRADES_DAY,
    REJECT_MIN_NOTIONAL,
    REJECT_MIN_QTY,
    REJECT_NO_CASH,
    REJECT_NONE,
    REJECT_NOT_SIZEABLE,
    REJECT_POSITION_CLOSED,
    REJECT_REPLACED,
    REJECT_RISK_LIMIT,
    SIZE_CASH,
    SIZE_FRACTION,
    SIZE_RISK,
    SIZE_VOL_TARGET,
    STATUS_CANCELLED,
    STATUS_CREATED,
    STATUS_EXPIRED,
    STATUS_FILLED,
    STATUS_PARTIALLY_FILLED,
    STATUS_REJECTED,
)
from framework.indicators_nb import (
    atr_init_nb,
    atr_update_nb,
    realized_vol_init_nb,
    realized_vol_update_nb,
)
from framework.jit import bar_njit, bar_njit_inline, bar_njit_internal, njit

DUST_FRACTION = 1e-9  # an entry worth less than this fraction of equity is rounding residue
FILLS_PER_COLUMN_BAR = 3  # close + open of a reversal, then a stop on the new position
EVENTS_PER_COLUMN_BAR = 24  # most order events one column can make in one bar (a generous bound)
EVENTS_PER_GROUP_BAR = 8  # risk events of the whole group in one bar
NS_PER_DAY = 86_400_000_000_000  # a bar's UTC day number is its time in ns // NS_PER_DAY


@njit(cache=True)
def init_state_nb(k, p):
    """Fresh state of a cash group of ``k`` columns: (group, columns, atr states, vol states)."""
    g = np.zeros(N_GROUP_STATE)
    g[G_CASH] = p[P_INIT_CASH]
    g[G_EQUITY] = p[P_INIT_CASH]
    g[G_PEAK_EQUITY] = p[P_INIT_CASH]
    g[G_DAY] = -1.0
    g[G_DAY_START_EQUITY] = p[P_INIT_CASH]
    g[G_BAR] = -1.0
    cs = np.full((k, N_COL_STATE), np.nan)
    for j in range(k):
        cs[j, C_POS] = 0.0
        cs[j, C_PEND_ACTION] = ACTION_NONE
        cs[j, C_COOLDOWN_UNTIL] = -1.0
        cs[j, C_REALIZED] = 0.0
    atr_s = _rows_of(atr_init_nb(int(p[P_ATR_WINDOW])), k)
    vol_s = _rows_of(realized_vol_init_nb(int(p[P_VOL_WINDOW]), p[P_ANN_FACTOR]), k)
    return g, cs, atr_s, vol_s


@njit(cache=True, internal=True)
def copy_nb(src, dst):
    """``dst[:] = src`` for 1-D arrays of one length, element by element: a slice or row
    assignment would compile numba's broadcasting and its error message, seconds of a first
    compile."""
    for i in range(src.shape[0]):
        dst[i] = src[i]


@njit(cache=True, internal=True)
def _rows_of(row, k):
    """A (k, len(row)) array whose rows are copies of ``row`` (``copy_nb``)."""
    out = np.empty((k, row.shape[0]))
    for j in range(k):
        copy_nb(row, out[j])
    return out


# --- events -----------------------------------------------------------------------------------

@bar_njit_internal
def _event(ev, nrec, kind, t, col, oid, side, order_type, qty, notional, price, trigger, status,
           reason, reject, filled, avg, created):
    """Append one ``event_dt`` record to ``ev`` (count in ``nrec[1]``)."""
    e = ev[nrec[1]]
    e["kind"] = kind
    e["bar"] = t
    e["col"] = col
    e["order_id"] = oid
    e["side"] = side
    e["order_type"] = order_type
    e["qty"] = qty
    e["notional"] = notional
    e["price"] = price
    e["trigger"] = trigger
    e["status"] = status
    e["reason"] = reason
    e["reject"] = reject
    e["filled_qty"] = filled
    e["avg_price"] = avg
    e["created_bar"] = created
    nrec[1] += 1


@bar_njit_internal
def _risk_event(ev, nrec, kind, t, col, reason):
    _event(ev, nrec, kind, t, col, -1, 0, ORDER_MARKET, np.nan, np.nan, np.nan, np.nan,
           STATUS_FILLED, reason, REJECT_NONE, 0.0, np.nan, t)


@bar_njit_internal
def _new_order_id(g):
    oid = g[G_NEXT_ORDER_ID]
    g[G_NEXT_ORDER_ID] += 1.0
    return oid


@bar_njit_internal
def _pending_event(ev, nrec, t, cs, j, col0, close_part, status, reject, filled, avg):
    """The pending order of column j (or, with ``close_part``, the closing half of a reversal)
    after a change of status."""
    action = int(cs[j, C_PEND_ACTION])
    pos = cs[j, C_POS]
    order_type = int(cs[j, C_PEND_TYPE])
    level = cs[j, C_PEND_PRICE]
    price = np.nan
    trigger = np.nan
    if order_type == ORDER_LIMIT:
        price = level
    elif order_type == ORDER_STOP:
        trigger = level
    elif order_type == ORDER_STOP_LIMIT:
        trigger = level
        price = cs[j, C_PEND_LIMIT]
    if action == ACTION_EXIT or close_part:
        side = -1 if pos > 0.0 else 1
        qty = abs(pos) if status != STATUS_FILLED else filled
        notional = np.nan
        oid = cs[j, C_PEND_CLOSE_ID] if close_part else cs[j, C_PEND_ID]
    else:
        side = 1 if action == ACTION_LONG else -1
        qty = cs[j, C_PEND_QTY] if status != STATUS_FILLED else filled
        notional = cs[j, C_PEND_NOTIONAL]
        oid = cs[j, C_PEND_ID]
    _event(ev, nrec, EVENT_ORDER, t, col0 + j, int(oid), side, order_type, qty, notional, price,
           trigger, status, int(cs[j, C_PEND_REASON]), reject, filled, avg, int(cs[j, C_PEND_BAR]))


@bar_njit_internal
def _stop_event(ev, nrec, t, cs, j, col0, take_profit, status, reject, filled, avg, reason):
    """Column j's stop order (or take-profit order) after a change."""
    pos = cs[j, C_POS]
    side = -1 if pos > 0.0 else 1
    oid = cs[j, C_TP_ID] if take_profit else cs[j, C_SL_ID]
    trigger = cs[j, C_TP_PRICE] if take_profit else cs[j, C_STOP_LEVEL]
    order_type = ORDER_TAKE_PROFIT if take_profit else ORDER_STOP
    qty = abs(pos) if filled == 0.0 else filled
    _event(ev, nrec, EVENT_ORDER if status >= 0 else EVENT_AMENDED, t, col0 + j, int(oid), side,
           order_type, qty, np.nan, np.nan, trigger, status if status >= 0 else STATUS_CREATED,
           reason, reject, filled, avg, int(cs[j, C_ENTRY_BAR]))


# --- the booking path -------------------------------------------------------------------------

@bar_njit
def book_fill_nb(g, cs, j, side, qty, price, fee, fee_ccy):
    """Book one fill of column ``j``: the only way cash, position, average entry price and
    realised pnl change. Used alike by the paper matcher (with the simulator's fee) and by a
    live broker (with the exchange's price, quantity and fee).

    ``side`` +1 buys, -1 sells ``qty`` (> 0) at ``price``; ``fee`` is in the quote currency
    (``FEE_QUOTE``: paid from cash) or in the base currency (``FEE_BASE``: taken from the
    quantity bought or sold). A fill may open, increase, reduce, close or reverse the position.
    """
    notional = qty * price
    pos = cs[j, C_POS]
    quote = fee_ccy == FEE_QUOTE
    # a fee in the base currency comes out of the quantity: a buy receives qty - fee, a sell
    # gives up qty + fee; it is valued at the fill price as an expense
    if side > 0:
        if quote:
            g[G_CASH] -= notional + fee
            new = pos + qty
        else:
            g[G_CASH] -= notional
            new = pos + (qty - fee)
    else:
        if quote:
            g[G_CASH] += notional - fee
            new = pos - qty
        else:
            g[G_CASH] += notional
            new = pos - (qty + fee)
    # an exchange's rounding can leave a few units of the last digit of a closed position
    if new != 0.0 and abs(new) <= 1e-9 * max(abs(pos), qty):
        new = 0.0
    flips = pos != 0.0 and new != 0.0 and (new > 0.0) != (pos > 0.0)
    if pos != 0.0 and (new == 0.0 or flips):  # closes (and maybe reverses)
        cs[j, C_REALIZED] += (price - cs[j, C_ENTRY_PRICE]) * pos
    elif abs(new) < abs(pos):  # reduces
        cs[j, C_REALIZED] += (price - cs[j, C_ENTRY_PRICE]) * (pos - new)
    cs[j, C_REALIZED] -= fee if quote else fee * price
    if pos == 0.0 or flips:
        cs[j, C_ENTRY_PRICE] = price  # opened or reversed: the new side's entry is this fill
    elif abs(new) > abs(pos):  # increased: the average of the old and the added quantity
        cs[j, C_ENTRY_PRICE] = (abs(pos) * cs[j, C_ENTRY_PRICE] + (abs(new) - abs(pos)) * price) / abs(new)
    cs[j, C_POS] = new


@bar_njit_internal
def _record_fill(g, cs, j, t, oid, side, qty, price, fee, fee_ccy, order_type, reason, fills, nrec, col0):
    """Book one fill (``book_fill_nb``) and append its ``fill_dt`` record to ``fills``."""
    book_fill_nb(g, cs, j, side, qty, price, fee, fee_ccy)
    f = fills[nrec[0]]
    f["order_id"] = int(oid)
    f["col"] = col0 + j
    f["bar"] = t
    f["side"] = side
    f["qty"] = qty
    f["price"] = price
    f["fees"] = fee
    f["fee_ccy"] = fee_ccy
    f["order_type"] = order_type
    f["reason"] = reason
    nrec[0] += 1


@bar_njit_internal
def _book_fill(g, cs, j, t, oid, side, qty, price, order_type, reason, p, fills, nrec, col0):
    """A paper fill: booked with the simulator's fee."""
    _record_fill(g, cs, j, t, oid, side, qty, price, qty * price * p[P_FEES], FEE_QUOTE, order_type,
                 reason, fills, nrec, col0)


@bar_njit_internal
def _cancel_protective(cs, j, t, col0, ev, nrec, reject):
    """Cancel the position's stop and take-profit orders (its position closed, or a risk limit
    or the emergency stop took over)."""
    if not np.isnan(cs[j, C_SL_ID]):
        _stop_event(ev, nrec, t, cs, j, col0, False, STATUS_CANCELLED, reject, 0.0, np.nan,
                    REASON_STOP_LOSS)
        cs[j, C_SL_ID] = np.nan
    if not np.isnan(cs[j, C_TP_ID]):
        _stop_event(ev, nrec, t, cs, j, col0, True, STATUS_CANCELLED, reject, 0.0, np.nan,
                    REASON_TAKE_PROFIT)
        cs[j, C_TP_ID] = np.nan
    # without their orders the position has no stop and no target (the matcher reads these)
    cs[j, C_STOP_LEVEL] = np.nan
    cs[j, C_SL_PRICE] = np.nan
    cs[j, C_TP_PRICE] = np.nan
    cs[j, C_TRAIL_DIST] = np.nan


@bar_njit_internal
def _close_position(g, cs, j, t, oid, price, order_type, reason, p, fills, nrec, col0):
    """Fill order ``oid`` for the whole position at ``price``; returns the quantity."""
    pos = cs[j, C_POS]
    side = -1 if pos > 0.0 else 1
    _book_fill(g, cs, j, t, oid, side, abs(pos), price, order_type, reason, p, fills, nrec, col0)
    cs[j, C_POS] = 0.0  # exact zero, whatever the float history of the position
    return abs(pos)


@bar_njit_internal
def _round_price(price, tick, direction):
    """``price`` on the exchange's tick: down (direction < 0), up (> 0) or nearest (0)."""
    if np.isnan(tick) or np.isnan(price):
        return price
    x = price / tick
    if direction < 0:
        return np.floor(x + 1e-9) * tick
    if direction > 0:
        return np.ceil(x - 1e-9) * tick
    return np.round(x) * tick


@bar_njit_internal
def _entry_fill_price(direction, order_type, level, limit, o, h, l, slip):
    """(fill price, filled inside the bar) of an entry order at this bar; NaN if it does not
    trigger. Inside means at its level after the open, rather than at the open itself."""
    if order_type == ORDER_MARKET:
        return o * (1.0 + slip * direction), False
    if order_type == ORDER_LIMIT:
        if direction > 0:
            if o <= level:
                return o, False  # gapped through: the open is the better price
            return (level if l <= level else np.nan), True
        if o >= level:
            return o, False
        return (level if h >= level else np.nan), True
    if order_type == ORDER_STOP_LIMIT:
        # the stop triggers a limit order: at the open when gapped through (filled there if the
        # open is within the limit, else at the limit if the bar comes back to it), inside the
        # bar at the trigger, no worse than the limit
        if direction > 0:
            if o >= level:
                if o <= limit:
                    return o, False
                return (limit if l <= limit else np.nan), True
            return (min(level, limit) if h >= level and level <= limit else np.nan), True
        if o <= level:
            if o >= limit:
                return o, False
            return (limit if h >= limit else np.nan), True
        return (max(level, limit) if l <= level and level >= limit else np.nan), True
    # stop entry: buy stop above, sell stop below the market
    if direction > 0:
        if o >= level:
            return o * (1.0 + slip), False
        return (level * (1.0 + slip) if h >= level else np.nan), True
    if o <= level:
        return o * (1.0 - slip), False
    return (level * (1.0 - slip) if l <= level else np.nan), True


@bar_njit_internal
def _entry_qty(g, cs, j, k, price, p):
    """(quantity, REJECT_*) of a pending entry at its fill price, after every cap and the
    exchange's rounding; the quantity is 0 when the order is rejected."""
    qty = cs[j, C_PEND_QTY]
    if np.isnan(qty):
        qty = cs[j, C_PEND_NOTIONAL] / price
    reject = REJECT_MIN_QTY  # unless a cap below takes the size away
    if not np.isnan(p[P_MAX_POS_NOTIONAL]) and p[P_MAX_POS_NOTIONAL] / price < qty:
        qty = p[P_MAX_POS_NOTIONAL] / price
        reject = REJECT_RISK_LIMIT
    if not np.isnan(p[P_MAX_EXPOSURE]):
        room = p[P_MAX_EXPOSURE] * g[G_EQUITY] - _others_notional(cs, k, j, False)
        if room / price < qty:
            qty = room / price
            reject = REJECT_RISK_LIMIT
    # no leverage: the position plus its fee must be paid (long) or margined (short) from cash;
    # a short elsewhere in the group put its sale proceeds into cash and margins as much again,
    # so neither half of that is free (gross exposure stays within equity)
    free_cash = g[G_CASH]
    if k > 1:
        free_cash -= 2.0 * _others_notional(cs, k, j, True)
    cash_cap = free_cash / (price * (1.0 + p[P_FEES]))
    if cash_cap < qty:
        qty = cash_cap
        reject = REJECT_NO_CASH
    # an all-in entry leaves a rounding residue of cash (~1e-13) behind; an "entry" paid from it
    # would open a dust position that blocks the column's real entries
    if not (qty * price > DUST_FRACTION * g[G_EQUITY]):
        return 0.0, reject
    step = p[P_QTY_STEP]
    if not np.isnan(step):
        qty = np.floor(qty / step + 1e-9) * step
    if not np.isnan(p[P_MIN_QTY]) and qty < p[P_MIN_QTY] or qty <= 0.0:
        return 0.0, REJECT_MIN_QTY
    if not np.isnan(p[P_MIN_NOTIONAL]) and qty * price < p[P_MIN_NOTIONAL]:
        return 0.0, REJECT_MIN_NOTIONAL
    return qty, REJECT_NONE


@bar_njit
def _stop_level(cs, j, d):
    """(trigger, REASON_*) of the position's stop order: the tighter of its stop-loss and its
    trailing stop (from the best price so far); NaN when it has neither."""
    stop = cs[j, C_SL_PRICE]
    reason = REASON_STOP_LOSS
    trail = cs[j, C_TRAIL_DIST]
    if not np.isnan(trail):
        best = cs[j, C_BEST_PRICE]
        level = best * (1.0 + d * trail) if trail < 0.0 else best - d * trail
        # the tighter of the two stops binds; a tie counts as the stop-loss
        if np.isnan(stop) or (level - stop) * d > 0.0:
            stop = level
            reason = REASON_TRAILING_STOP
    return stop, reason


@bar_njit_internal
def _open_position(g, cs, j, t, oid, direction, price, inside, qty, p, fills, ev, nrec, col0):
    """Fill the entry order ``oid`` and place the position's stop and take-profit orders."""
    side = 1 if direction > 0 else -1
    _book_fill(g, cs, j, t, oid, side, qty, price, int(cs[j, C_PEND_TYPE]), REASON_SIGNAL, p, fills, nrec, col0)
    _attach_protective(g, cs, j, t, direction, price, inside, p, ev, nrec, col0)


@bar_njit_internal
def _attach_protective(g, cs, j, t, direction, price, inside, p, ev, nrec, col0):
    """A position opened at ``price`` in bar ``t``: its stop and take-profit orders (from the
    settings, and the ATR at the entry's decision) and the day's trade count."""
    cs[j, C_ENTRY_BAR] = t
    cs[j, C_ENTRY_INSIDE] = 1.0 if inside else 0.0
    cs[j, C_BEST_PRICE] = price
    atr = cs[j, C_PEND_ATR]
    d = float(direction)
    tick = p[P_PRICE_TICK]
    sl = np.nan
    if not np.isnan(p[P_SL_PCT]):
        sl = _round_price(price * (1.0 - d * p[P_SL_PCT]), tick, 0)
    elif not np.isnan(p[P_SL_ATR]):
        sl = _round_price(price - d * p[P_SL_ATR] * atr, tick, 0)
    tp = np.nan
    if not np.isnan(p[P_TP_PCT]):
        tp = _round_price(price * (1.0 + d * p[P_TP_PCT]), tick, 0)
    elif not np.isnan(p[P_TP_ATR]):
        tp = _round_price(price + d * p[P_TP_ATR] * atr, tick, 0)
    trail = np.nan
    if not np.isnan(p[P_TRAIL_PCT]):
        trail = -p[P_TRAIL_PCT]  # negative marks "fraction of the best price"
    elif not np.isnan(p[P_TRAIL_ATR]):
        trail = p[P_TRAIL_ATR] * atr
    cs[j, C_SL_PRICE] = sl
    cs[j, C_TP_PRICE] = tp
    cs[j, C_TRAIL_DIST] = trail
    level, reason = _stop_level(cs, j, d)
    cs[j, C_STOP_LEVEL] = _round_price(level, tick, 0)
    if not np.isnan(level):
        cs[j, C_SL_ID] = _new_order_id(g)
        _stop_event(ev, nrec, t, cs, j, col0, False, STATUS_CREATED, REJECT_NONE, 0.0, np.nan, reason)
    if not np.isnan(tp):
        cs[j, C_TP_ID] = _new_order_id(g)
        _stop_event(ev, nrec, t, cs, j, col0, True, STATUS_CREATED, REJECT_NONE, 0.0, np.nan,
                    REASON_TAKE_PROFIT)
    g[G_TRADES_TODAY] += 1.0


@bar_njit_internal
def _fill_pending(g, cs, j, k, t, o, h, l, p, fills, ev, nrec, col0):
    """The paper matcher: the order(s) column j decided at the last close, against this bar."""
    action = int(cs[j, C_PEND_ACTION])
    reason = int(cs[j, C_PEND_REASON])
    slip = p[P_SLIPPAGE]
    pos = cs[j, C_POS]
    if action == ACTION_EXIT:
        d = 1.0 if pos > 0.0 else -1.0
        price = o * (1.0 - slip * d)
        _pending_event(ev, nrec, t, cs, j, col0, False, STATUS_FILLED, REJECT_NONE, abs(pos), price)
        _cancel_protective(cs, j, t, col0, ev, nrec, REJECT_POSITION_CLOSED)
        _close_position(g, cs, j, t, cs[j, C_PEND_ID], price, ORDER_MARKET, reason, p, fills, nrec, col0)
    else:
        direction = 1 if action == ACTION_LONG else -1
        order_type = int(cs[j, C_PEND_TYPE])
        price, inside = _entry_fill_price(direction, order_type, cs[j, C_PEND_PRICE], cs[j, C_PEND_LIMIT],
                                          o, h, l, slip)
        if np.isnan(price):  # good for one bar: it did not trigger
            if not np.isnan(cs[j, C_PEND_CLOSE_ID]):
                _pending_event(ev, nrec, t, cs, j, col0, True, STATUS_EXPIRED, REJECT_NONE, 0.0, np.nan)
            _pending_event(ev, nrec, t, cs, j, col0, False, STATUS_EXPIRED, REJECT_NONE, 0.0, np.nan)
        else:
            if not np.isnan(cs[j, C_PEND_CLOSE_ID]):  # reversal: close the old side at the same price
                _pending_event(ev, nrec, t, cs, j, col0, True, STATUS_FILLED, REJECT_NONE, abs(pos), price)
                _cancel_protective(cs, j, t, col0, ev, nrec, REJECT_POSITION_CLOSED)
                _close_position(g, cs, j, t, cs[j, C_PEND_CLOSE_ID], price, order_type, reason, p, fills, nrec, col0)
            qty = 0.0
            reject = REJECT_MAX_TRADES_DAY
            if np.isnan(p[P_MAX_TRADES_DAY]) or g[G_TRADES_TODAY] < p[P_MAX_TRADES_DAY]:
                qty, reject = _entry_qty(g, cs, j, k, price, p)
            if qty > 0.0:
                _pending_event(ev, nrec, t, cs, j, col0, False, STATUS_FILLED, REJECT_NONE, qty, price)
                _open_position(g, cs, j, t, cs[j, C_PEND_ID], direction, price, inside, qty, p, fills, ev, nrec, col0)
            else:
                _pending_event(ev, nrec, t, cs, j, col0, False, STATUS_REJECTED, reject, 0.0, np.nan)
    cs[j, C_PEND_ACTION] = ACTION_NONE  # every order is good for one bar
    cs[j, C_PEND_CLOSE_ID] = np.nan


@bar_njit_internal
def _check_exits(g, cs, j, t, o, h, l, p, cooldown, fills, ev, nrec, col0):
    """The paper matcher for the position's stop and take-profit orders (and the venue's
    liquidation) inside the bar; the stops first when a stop and the target both touch."""
    pos = cs[j, C_POS]
    d = 1.0 if pos > 0.0 else -1.0
    slip = p[P_SLIPPAGE]
    # A position opened at a limit/stop level inside this bar saw only the part of the bar after
    # its entry, and that path is unknown: its stop is checked from the entry price against the
    # bar's adverse extreme (the worst case), its target and best price only from the next bar.
    inside = cs[j, C_ENTRY_BAR] == t and cs[j, C_ENTRY_INSIDE] != 0.0
    first = cs[j, C_ENTRY_PRICE] if inside else o  # the first price the position saw this bar
    stop = cs[j, C_STOP_LEVEL]
    stop_reason = REASON_TRAILING_STOP if stop != cs[j, C_SL_PRICE] else REASON_STOP_LOSS
    liquidation = False
    if not np.isnan(p[P_MAINT_MARGIN]):
        # the maintenance margin acts as one more stop, at the liquidation price; the position's
        # own stops bind when they are at least as tight
        level = _liquidation_level(g, cs, j, p[P_MAINT_MARGIN])
        if not np.isnan(level) and (np.isnan(stop) or (level - stop) * d > 0.0):
            stop = level
            liquidation = True
    if not np.isnan(stop):
        hit = np.nan
        if (first - stop) * d <= 0.0:
            hit = first
        elif ((l if d > 0.0 else h) - stop) * d <= 0.0:
            hit = stop
        if not np.isnan(hit):
            price = hit * (1.0 - slip * d)
            if liquidation:  # the venue closes the position: an order of its own
                oid = _new_order_id(g)
                _risk_event(ev, nrec, EVENT_LIQUIDATION, t, col0 + j, REASON_LIQUIDATION)
                for status in (STATUS_CREATED, STATUS_FILLED):
                    filled = abs(pos) if status == STATUS_FILLED else 0.0
                    _event(ev, nrec, EVENT_ORDER, t, col0 + j, int(oid), -int(d), ORDER_STOP, abs(pos), np.nan,
                           np.nan, stop, status, REASON_LIQUIDATION, REJECT_NONE, filled,
                           price if status == STATUS_FILLED else np.nan, t)
            else:
                oid = cs[j, C_SL_ID]
                _stop_event(ev, nrec, t, cs, j, col0, False, STATUS_FILLED, REJECT_NONE, abs(pos), price, stop_reason)
                cs[j, C_SL_ID] = np.nan
            _cancel_protective(cs, j, t, col0, ev, nrec, REJECT_POSITION_CLOSED)
            _close_position(g, cs, j, t, oid, price, ORDER_STOP, REASON_LIQUIDATION if liquidation else stop_reason,
                            p, fills, nrec, col0)
            if not np.isnan(cooldown):
                cs[j, C_COOLDOWN_UNTIL] = t + cooldown
            return
    if inside:
        return
    tp = cs[j, C_TP_PRICE]
    if not np.isnan(tp):
        hit = np.nan
        if (o - tp) * d >= 0.0:
            hit = o
        elif ((h if d > 0.0 else l) - tp) * d >= 0.0:
            hit = tp
        if not np.isnan(hit):
            oid = cs[j, C_TP_ID]
            _stop_event(ev, nrec, t, cs, j, col0, True, STATUS_FILLED, REJECT_NONE, abs(pos), hit, REASON_TAKE_PROFIT)
            cs[j, C_TP_ID] = np.nan
            _cancel_protective(cs, j, t, col0, ev, nrec, REJECT_POSITION_CLOSED)
            _close_position(g, cs, j, t, oid, hit, ORDER_TAKE_PROFIT, REASON_TAKE_PROFIT, p, fills, nrec, col0)
            return
    _follow_best_price(cs, j, t, d, h, l, p, ev, nrec, col0)


@bar_njit_internal
def _follow_best_price(cs, j, t, d, h, l, p, ev, nrec, col0):
    """The position is still open after this bar: the best price moves only now, after the
    bar's stops were checked (no intrabar look-ahead), and a trailing stop order follows it."""
    best = h if d > 0.0 else l
    if (best - cs[j, C_BEST_PRICE]) * d > 0.0:
        cs[j, C_BEST_PRICE] = best
        if not np.isnan(cs[j, C_TRAIL_DIST]):
            level, reason = _stop_level(cs, j, d)
            level = _round_price(level, p[P_PRICE_TICK], 0)
            if level != cs[j, C_STOP_LEVEL]:
                cs[j, C_STOP_LEVEL] = level
                _stop_event(ev, nrec, t, cs, j, col0, False, -1, REJECT_NONE, 0.0, np.nan, reason)


@bar_njit_internal
def _liquidation_level(g, cs, j, m):
    """Price of column j's instrument at which the group's equity would fall below ``m`` times
    the gross notional of its positions, the others marked at their last close: above the price
    for a short, below it for a long; NaN when no positive price gets there (a long paid from
    cash, with no losing short beside it)."""
    a = g[G_CASH]  # equity without column j's position ...
    b = 0.0  # ... and the gross notional of the others
    for i in range(cs.shape[0]):
        q = cs[i, C_POS]
        if i != j and q != 0.0:
            a += q * cs[i, C_LAST_CLOSE]
            b += abs(q) * cs[i, C_LAST_CLOSE]
    q = cs[j, C_POS]
    # solve a + q * P = m * (b + |q| * P) for P
    if q < 0.0:
        return (a - m * b) / (-q * (1.0 + m))  # <= 0: breached at any price, i.e. at the open
    level = (m * b - a) / (q * (1.0 - m))
    return level if level > 0.0 else np.nan


@bar_njit_internal
def _others_notional(cs, k, skip, shorts_only):
    """Sum of |position| x last close over the group's columns other than ``skip`` (only the
    short ones if ``shorts_only``)."""
    total = 0.0
    for j in range(k):
        q = cs[j, C_POS]
        if j != skip and (q < 0.0 if shorts_only else q != 0.0):
            total += abs(q) * cs[j, C_LAST_CLOSE]
    return total


@bar_njit_inline
def _roll_day(g, day):
    """A bar of a new UTC day: the daily limits start over from the equity at the last close."""
    if day != g[G_DAY]:
        g[G_DAY] = day
        g[G_DAY_START_EQUITY] = g[G_EQUITY]
        g[G_TRADES_TODAY] = 0.0
        g[G_DAY_BLOCKED] = 0.0


@bar_njit
def broker_fill_nb(g, cs, j, t, day, oid, qty, price, fee, fee_ccy, done, p, fills, ev, nrec, col0):
    """Book a broker's fill of order ``oid`` of column ``j`` (with the exchange's price,
    quantity and fee) through the one booking path, and move the order on: its events, the
    stop and take-profit orders of a position it opened, the cancellation of those of a
    position it closed. ``done`` says the broker reports the order complete (an entry sized by
    notional knows its quantity only then). Returns 0, or -1 (nothing booked) when ``oid`` is
    not a working order of the column."""
    pos = cs[j, C_POS]
    pending = oid == cs[j, C_PEND_ID] and int(cs[j, C_PEND_ACTION]) != ACTION_NONE
    closing_half = oid == cs[j, C_PEND_CLOSE_ID]
    stop = oid == cs[j, C_SL_ID]
    target = oid == cs[j, C_TP_ID]
    if not (pending or closing_half or stop or target):
        return -1
    _roll_day(g, day)  # the fill belongs to the bar forming now, ``t`` of UTC day ``day``
    action = int(cs[j, C_PEND_ACTION])
    entry = pending and action != ACTION_EXIT
    if entry:
        side = 1 if action == ACTION_LONG else -1
    else:
        if pos == 0.0:
            return -1  # an exit with nothing to close
        side = -1 if pos > 0.0 else 1
    if stop or target:
        order_type = ORDER_TAKE_PROFIT if target else ORDER_STOP
        level, stop_reason = _stop_level(cs, j, 1.0 if pos > 0.0 else -1.0)
        reason = REASON_TAKE_PROFIT if target else stop_reason
    else:
        order_type = int(cs[j, C_PEND_TYPE])
        reason = int(cs[j, C_PEND_REASON])
    _record_fill(g, cs, j, t, oid, side, qty, price, fee, fee_ccy, order_type, reason, fills, nrec, col0)
    after = cs[j, C_POS]
    cs[j, C_POS] = pos  # the events report the position the order acted on
    if stop or target:
        if after == 0.0:
            _stop_event(ev, nrec, t, cs, j, col0, target, STATUS_FILLED, REJECT_NONE, abs(pos), price, reason)
            if stop:
                cs[j, C_SL_ID] = np.nan
                if not np.isnan(p[P_COOLDOWN_BARS]):
                    cs[j, C_COOLDOWN_UNTIL] = t + p[P_COOLDOWN_BARS]
            else:
                cs[j, C_TP_ID] = np.nan
            _cancel_protective(cs, j, t, col0, ev, nrec, REJECT_POSITION_CLOSED)
        else:
            _stop_event(ev, nrec, t, cs, j, col0, target, STATUS_PARTIALLY_FILLED, REJECT_NONE, qty, price, reason)
        cs[j, C_POS] = after
        return 0
    if not closing_half:
        cs[j, C_PEND_FILLED] = qty if np.isnan(cs[j, C_PEND_FILLED]) else cs[j, C_PEND_FILLED] + qty
    filled = cs[j, C_PEND_FILLED]
    if entry:
        cs[j, C_POS] = after
        if pos == 0.0:  # the first fill opens the position: its stop and target go out now
            # a limit or stop entry may have filled after the bar's open: as the paper matcher
            # does for such a fill, the bar's own best price is not the position's
            inside = int(cs[j, C_PEND_TYPE]) != ORDER_MARKET
            _attach_protective(g, cs, j, t, side, price, inside, p, ev, nrec, col0)
        _pending_event(ev, nrec, t, cs, j, col0, False, STATUS_FILLED if done else STATUS_PARTIALLY_FILLED,
                       REJECT_NONE, filled, price)
        if done:
            cs[j, C_PEND_ACTION] = ACTION_NONE
            cs[j, C_PEND_FILLED] = np.nan
        return 0
    # an exit, or the closing half of a reversal: complete when the position is flat
    complete = after == 0.0 or (after > 0.0) != (pos > 0.0)
    status = STATUS_FILLED if complete else STATUS_PARTIALLY_FILLED
    _pending_event(ev, nrec, t, cs, j, col0, closing_half, status, REJECT_NONE,
                   qty if closing_half else filled, price)
    if complete:
        _cancel_protective(cs, j, t, col0, ev, nrec, REJECT_POSITION_CLOSED)
        if closing_half:
            cs[j, C_PEND_CLOSE_ID] = np.nan
        else:
            cs[j, C_PEND_ACTION] = ACTION_NONE
            cs[j, C_PEND_FILLED] = np.nan
    cs[j, C_POS] = after
    return 0


@bar_njit_internal
def _expire_at_broker(cs, j, t, col0, ev, nrec):
    """Broker mode, at the next close: what is left of column j's pending order(s) expires
    (good for one bar; the runner has cancelled it at the broker)."""
    if not np.isnan(cs[j, C_PEND_CLOSE_ID]):
        _pending_event(ev, nrec, t, cs, j, col0, True, STATUS_EXPIRED, REJECT_NONE, 0.0, np.nan)
        cs[j, C_PEND_CLOSE_ID] = np.nan
    filled = 0.0 if np.isnan(cs[j, C_PEND_FILLED]) else cs[j, C_PEND_FILLED]
    _pending_event(ev, nrec, t, cs, j, col0, False, STATUS_EXPIRED, REJECT_NONE, filled, np.nan)
    cs[j, C_PEND_ACTION] = ACTION_NONE
    cs[j, C_PEND_FILLED] = np.nan


@bar_njit_inline
def _may_exit(cs, j, t, h, l, p):
    """False when this bar certainly fills neither the position's stop nor its target and there
    is no trailing stop to move nor margin to watch: most bars, which then skip the call of
    ``_check_exits`` (NaN levels compare False)."""
    if cs[j, C_ENTRY_BAR] == t or not np.isnan(cs[j, C_TRAIL_DIST]) or not np.isnan(p[P_MAINT_MARGIN]):
        return True
    if cs[j, C_POS] > 0.0:
        return l <= cs[j, C_STOP_LEVEL] or h >= cs[j, C_TP_PRICE]
    return h >= cs[j, C_STOP_LEVEL] or l <= cs[j, C_TP_PRICE]


@bar_njit_internal
def _cancel_pending(cs, j, t, col0, ev, nrec, reject):
    """Cancel column j's pending order(s), if any."""
    if int(cs[j, C_PEND_ACTION]) == ACTION_NONE:
        return
    if not np.isnan(cs[j, C_PEND_CLOSE_ID]):
        _pending_event(ev, nrec, t, cs, j, col0, True, STATUS_CANCELLED, reject, 0.0, np.nan)
        cs[j, C_PEND_CLOSE_ID] = np.nan
    _pending_event(ev, nrec, t, cs, j, col0, False, STATUS_CANCELLED, reject, 0.0, np.nan)
    cs[j, C_PEND_ACTION] = ACTION_NONE


@bar_njit_internal
def _new_pending(g, cs, j, t, col0, ev, nrec, action, order_type, reason):
    """Make column j's pending order (the caller has set its price and size slots)."""
    cs[j, C_PEND_ACTION] = action
    cs[j, C_PEND_TYPE] = order_type
    cs[j, C_PEND_REASON] = reason
    cs[j, C_PEND_BAR] = t
    cs[j, C_PEND_FILLED] = np.nan
    pos = cs[j, C_POS]
    if action != ACTION_EXIT and pos != 0.0:  # a reversal: a second order closes the old side
        cs[j, C_PEND_CLOSE_ID] = _new_order_id(g)
        _pending_event(ev, nrec, t, cs, j, col0, True, STATUS_CREATED, REJECT_NONE, 0.0, np.nan)
    cs[j, C_PEND_ID] = _new_order_id(g)
    _pending_event(ev, nrec, t, cs, j, col0, False, STATUS_CREATED, REJECT_NONE, 0.0, np.nan)


@bar_njit_internal
def _queue_exit(g, cs, j, t, col0, ev, nrec, reason, reject):
    """A market order for the next open that closes column j's position (none if flat); an
    order already pending is cancelled with ``reject`` as the reason."""
    _cancel_pending(cs, j, t, col0, ev, nrec, reject)
    if cs[j, C_POS] != 0.0:
        cs[j, C_PEND_PRICE] = np.nan
        _new_pending(g, cs, j, t, col0, ev, nrec, ACTION_EXIT, ORDER_MARKET, reason)


@bar_njit_internal
def _flatten_all(g, cs, k, t, col0, ev, nrec, reason, reject):
    for j in range(k):
        _queue_exit(g, cs, j, t, col0, ev, nrec, reason, reject)


@bar_njit
def emergency_stop_nb(g, cs, col0, ev, nrec):
    """Raise the emergency stop between two bars, acting on the state at once: every pending
    order (decided at the last close, not filled yet) is cancelled, a market exit of every open
    position is queued for the next bar's open, and the group is halted for good."""
    t = int(g[G_BAR])
    g[G_EMERGENCY] = 1.0
    g[G_HALTED] = 1.0
    _risk_event(ev, nrec, EVENT_EMERGENCY, t, -1, REASON_EMERGENCY)
    for j in range(cs.shape[0]):
        _cancel_protective(cs, j, t, col0, ev, nrec, REJECT_HALTED)
    _flatten_all(g, cs, cs.shape[0], t, col0, ev, nrec, REASON_EMERGENCY, REJECT_HALTED)


@bar_njit_internal
def _reject_intent(g, cs, j, t, col0, ev, nrec, direction, order_type, price, reject):
    """An entry the strategy asked for that cannot be placed: a rejected order, so nothing an
    order does is silent."""
    _event(ev, nrec, EVENT_ORDER, t, col0 + j, int(_new_order_id(g)), direction, order_type, np.nan,
           np.nan, price if order_type == ORDER_LIMIT else np.nan,
           price if order_type == ORDER_STOP or order_type == ORDER_STOP_LIMIT else np.nan,
           STATUS_REJECTED, REASON_SIGNAL, reject, 0.0, np.nan, t)


@bar_njit_internal
def _queue_entry(g, cs, j, t, col0, ev, nrec, direction, order_type, price, limit, p):
    """Size an entry decided at this close and place it; returns REJECT_NONE, or why it could
    not be placed (sizing not possible yet)."""
    kind = int(p[P_SIZE_KIND])
    equity = g[G_EQUITY]
    notional = np.nan
    qty = np.nan
    if kind == SIZE_FRACTION:
        notional = p[P_SIZE] * equity
    elif kind == SIZE_CASH:
        notional = p[P_SIZE]
    elif kind == SIZE_RISK:
        qty = equity * p[P_SIZE] / (cs[j, C_ATR] * p[P_ATR_STOP_MULT])
    elif kind == SIZE_VOL_TARGET:
        notional = equity * p[P_SIZE] / cs[j, C_VOL]
    if not (notional > 0.0 or qty > 0.0) or np.isinf(notional) or np.isinf(qty):
        return REJECT_NOT_SIZEABLE  # ATR or volatility still warming up (NaN) or zero
    atr_levels = not (np.isnan(p[P_SL_ATR]) and np.isnan(p[P_TP_ATR]) and np.isnan(p[P_TRAIL_ATR]))
    if atr_levels and np.isnan(cs[j, C_ATR]):
        return REJECT_NOT_SIZEABLE  # an ATR stop or target cannot be placed before the ATR has warmed up
    tick = p[P_PRICE_TICK]
    # on the exchange's tick, never at a worse price than asked: buy limits down, sell limits
    # up; a stop's trigger away from the market
    if order_type == ORDER_LIMIT:
        price = _round_price(price, tick, -direction)
    elif order_type == ORDER_STOP or order_type == ORDER_STOP_LIMIT:
        price = _round_price(price, tick, direction)
        limit = _round_price(limit, tick, -direction)
    cs[j, C_PEND_PRICE] = price
    cs[j, C_PEND_LIMIT] = limit
    cs[j, C_PEND_NOTIONAL] = notional
    cs[j, C_PEND_QTY] = qty
    cs[j, C_PEND_ATR] = cs[j, C_ATR]
    _new_pending(g, cs, j, t, col0, ev, nrec, ACTION_LONG if direction > 0 else ACTION_SHORT,
                 order_type, REASON_SIGNAL)
    return REJECT_NONE


@bar_njit_internal
def _open_or_pending(cs, k):
    count = 0
    for j in range(k):
        if cs[j, C_POS] != 0.0 or int(cs[j, C_PEND_ACTION]) in (ACTION_LONG, ACTION_SHORT):
            count += 1
    return count


@bar_njit_inline
def fill_nb(t, row, col0, day, o, h, l, c, g, cs, atr_s, vol_s, p, fills, ev, nrec):
    """First half of a bar for one cash group: fills, stops, mark to market, risk limits.

    ``o, h, l, c`` are (rows, columns) arrays: this bar is row ``row`` (``t`` in a backtest,
    0 for a live runner's one-bar arrays) and the group's columns start at ``col0`` (also the
    column written into the records); indexing in place rather than slicing a row view per
    bar keeps the step free of allocation. ``day`` is the bar's UTC day number (days since
    1970-01-01), for the daily limits. Fills are written to ``fills`` and events to ``ev``
    from the counts in ``nrec`` (fills, events), which they advance.
    """
    k = cs.shape[0]
    if t == p[P_EMERGENCY_AT]:  # a backtest's emergency stop, raised before this bar opens
        emergency_stop_nb(g, cs, col0, ev, nrec)
    _roll_day(g, day)
    cooldown = p[P_COOLDOWN_BARS]

    # open: every column's orders decided at the previous close; then inside the bar: stops and
    # targets (in that order across the group, so an entry at the open cannot spend cash that
    # another column's stop frees only later in the bar)
    if p[P_BROKER_FILLS] == 1.0:
        # a broker filled this bar's orders (booked with broker_fill_nb before this step): what
        # is left of them expires; a trailing stop follows the bar's best price
        for j in range(k):
            if cs[j, C_PEND_ACTION] != ACTION_NONE:
                _expire_at_broker(cs, j, t, col0, ev, nrec)
            inside = cs[j, C_ENTRY_BAR] == t and cs[j, C_ENTRY_INSIDE] != 0.0
            if cs[j, C_POS] != 0.0 and not np.isnan(cs[j, C_TRAIL_DIST]) and not inside:
                _follow_best_price(cs, j, t, 1.0 if cs[j, C_POS] > 0.0 else -1.0, h[row, col0 + j],
                                   l[row, col0 + j], p, ev, nrec, col0)
    else:
        for j in range(k):
            # most bars have nothing pending and many no position: skip the calls then
            if cs[j, C_PEND_ACTION] != ACTION_NONE:
                _fill_pending(g, cs, j, k, t, o[row, col0 + j], h[row, col0 + j], l[row, col0 + j],
                              p, fills, ev, nrec, col0)
        for j in range(k):
            if cs[j, C_POS] != 0.0 and _may_exit(cs, j, t, h[row, col0 + j], l[row, col0 + j], p):
                _check_exits(g, cs, j, t, o[row, col0 + j], h[row, col0 + j], l[row, col0 + j],
                             p, cooldown, fills, ev, nrec, col0)

    # close: mark to market, simulator indicators, risk limits
    # the simulator's ATR and volatility cost a log per bar: kept only where a setting reads them
    kind = int(p[P_SIZE_KIND])
    need_atr = kind == SIZE_RISK or not (np.isnan(p[P_SL_ATR]) and np.isnan(p[P_TP_ATR]) and np.isnan(p[P_TRAIL_ATR]))
    need_vol = kind == SIZE_VOL_TARGET
    equity = g[G_CASH]
    for j in range(k):
        cj = c[row, col0 + j]
        cs[j, C_LAST_CLOSE] = cj
        equity += cs[j, C_POS] * cj
        if need_atr:
            cs[j, C_ATR] = atr_update_nb(atr_s[j], h[row, col0 + j], l[row, col0 + j], cj)
        if need_vol:
            cs[j, C_VOL] = realized_vol_update_nb(vol_s[j], cj)
    g[G_EQUITY] = equity
    if equity > g[G_PEAK_EQUITY]:
        g[G_PEAK_EQUITY] = equity
    g[G_BAR] = t

    if g[G_HALTED] != 0.0:
        reason = REASON_EMERGENCY if g[G_EMERGENCY] != 0.0 else REASON_MAX_DRAWDOWN
        for j in range(k):
            if cs[j, C_POS] != 0.0:
                _queue_exit(g, cs, j, t, col0, ev, nrec, reason, REJECT_HALTED)
    elif not np.isnan(p[P_MAX_DRAWDOWN]) and equity < g[G_PEAK_EQUITY] * (1.0 - p[P_MAX_DRAWDOWN]):
        g[G_HALTED] = 1.0
        _risk_event(ev, nrec, EVENT_HALT, t, -1, REASON_MAX_DRAWDOWN)
        _flatten_all(g, cs, k, t, col0, ev, nrec, REASON_MAX_DRAWDOWN, REJECT_HALTED)
    elif (
        g[G_DAY_BLOCKED] == 0.0
        and not np.isnan(p[P_DAILY_LOSS])
        and equity < g[G_DAY_START_EQUITY] * (1.0 - p[P_DAILY_LOSS])
    ):
        g[G_DAY_BLOCKED] = 1.0
        _risk_event(ev, nrec, EVENT_DAILY_BLOCK, t, -1, REASON_DAILY_LOSS)
        _flatten_all(g, cs, k, t, col0, ev, nrec, REASON_DAILY_LOSS, REJECT_DAILY_LOSS)


@bar_njit_inline
def order_nb(t, col0, intents, g, cs, p, ev, nrec):
    """Second half of a bar: the strategy's intents at this close become next-open orders.

    ``intents`` (k, INTENT_SIZE) are decided after ``fill_nb`` of the same bar, so a strategy
    may read its position. Entries are sized here at this close's equity and checked against
    max positions, the cooldown and a daily-loss block; the position and exposure caps and the
    max trades per day are applied at the fill. An entry that cannot be placed is recorded as a
    rejected order with its reason. Bars before ``p[P_TRADE_FROM]`` place nothing (the strategy
    has decided, its state is warm; no order exists).
    """
    if t < p[P_TRADE_FROM]:  # NaN compares False: trading from the start
        return
    k = cs.shape[0]
    allow_short = p[P_ALLOW_SHORT] != 0.0
    halted = g[G_HALTED] != 0.0
    for j in range(k):
        action = int(intents[j, INTENT_ACTION])
        if action == ACTION_NONE:
            continue
        pos = cs[j, C_POS]
        if action == ACTION_SHORT and not allow_short:
            action = ACTION_EXIT  # long-only: a short signal closes the long
        if action == ACTION_EXIT:
            if int(cs[j, C_PEND_ACTION]) == ACTION_NONE and not halted:
                _queue_exit(g, cs, j, t, col0, ev, nrec, REASON_SIGNAL, REJECT_NONE)
            continue  # else: a risk limit already queued this column's exit
        direction = 1 if action == ACTION_LONG else -1
        if pos * direction > 0.0:
            continue  # already positioned that way: no pyramiding
        order_type = int(intents[j, INTENT_ORDER_TYPE])
        price = intents[j, INTENT_PRICE]
        reject = REJECT_NONE
        if halted:
            reject = REJECT_HALTED
        elif g[G_DAY_BLOCKED] != 0.0:
            reject = REJECT_DAILY_LOSS
        elif g[G_ENTRIES_BLOCKED] != 0.0:
            reject = REJECT_ENTRIES_BLOCKED
        elif int(cs[j, C_PEND_ACTION]) != ACTION_NONE:
            reject = REJECT_REPLACED  # a risk limit queued this column's exit at this close
        elif t < cs[j, C_COOLDOWN_UNTIL]:
            reject = REJECT_COOLDOWN
        elif not np.isnan(p[P_MAX_POSITIONS]) and pos == 0.0 and _open_or_pending(cs, k) >= p[P_MAX_POSITIONS]:
            reject = REJECT_MAX_POSITIONS
        else:
            reject = _queue_entry(g, cs, j, t, col0, ev, nrec, direction, order_type, price,
                                  intents[j, INTENT_LIMIT], p)
        if reject != REJECT_NONE:
            _reject_intent(g, cs, j, t, col0, ev, nrec, direction, order_type, price, reject)
            if int(cs[j, C_PEND_ACTION]) == ACTION_NONE and not halted:
                _queue_exit(g, cs, j, t, col0, ev, nrec, REASON_SIGNAL, REJECT_NONE)  # no new side: the old one still goes


# --- records after the run ----------------------------------------------------------------------

@bar_njit_internal
def _replay_book(c, q, gi, col, f):
    """Book fill ``f`` on cash ``c[gi]`` and position ``q[col]`` with ``book_fill_nb``'s
    arithmetic (``c``, ``q`` are the (groups,) and (columns,) running values)."""
    notional = f["qty"] * f["price"]
    base = f["fee_ccy"] == FEE_BASE
    if f["side"] > 0:
        c[gi] -= notional if base else notional + f["fees"]
        new = q[col] + (f["qty"] - f["fees"]) if base else q[col] + f["qty"]
    else:
        c[gi] += notional if base else notional - f["fees"]
        new = q[col] - (f["qty"] + f["fees"]) if base else q[col] - f["qty"]
    if new != 0.0 and abs(new) <= 1e-9 * max(abs(q[col]), f["qty"]):
        new = 0.0
    q[col] = new


@njit(cache=True, internal=True)
def _by_bar(fills, n_bars):
    """Indices of the ``fills`` of bars ``0 .. n_bars - 1`` ordered by bar, each bar's in their
    booking order: a counting sort, as stable as ``np.argsort(kind="mergesort")`` and much
    cheaper to compile."""
    start = np.zeros(n_bars + 1, dtype=np.int64)
    for i in range(fills.shape[0]):
        b = fills[i]["bar"]
        if 0 <= b < n_bars:
            start[b + 1] += 1
    for t in range(n_bars):
        start[t + 1] += start[t]
    order = np.empty(start[n_bars], dtype=np.int64)
    for i in range(fills.shape[0]):
        b = fills[i]["bar"]
        if 0 <= b < n_bars:
            order[start[b]] = i
            start[b] += 1
    return order


@njit(cache=True)
def replay_fills_nb(fills, n_bars, col_group, n_groups, init_cash):
    """Cash of every group and position of every column at each close, replayed from the fills.

    Both change only at fills, so the backtester keeps the fill records rather than two
    (bars, columns) arrays. The replay books each fill in its order with the arithmetic of
    ``book_fill_nb`` (a whole exit leaves exactly 0), so the values are equal to the last bit.
    ``col_group[col]`` is the column's cash group.
    """
    order = _by_bar(fills, n_bars)
    cash = np.empty((n_bars, n_groups))
    pos = np.empty((n_bars, col_group.shape[0]))
    c = np.full(n_groups, init_cash)
    q = np.zeros(col_group.shape[0])
    i = 0
    for t in range(n_bars):
        while i < order.shape[0] and fills[order[i]]["bar"] == t:
            f = fills[order[i]]
            _replay_book(c, q, col_group[f["col"]], f["col"], f)
            i += 1
        copy_nb(c, cash[t])
        copy_nb(q, pos[t])
    return cash, pos
