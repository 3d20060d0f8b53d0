"""The simulation step: the one function both drivers (backtester and live runner) call.

``fill_nb`` then ``order_nb`` advance one *cash group* (one or more columns sharing cash) by one
closed bar; the strategy decides between the two, so it can see its position:

1. at the bar's open: fill the orders decided at the previous close (market at the open plus
   slippage; limit and stop orders against the bar's high/low, at the open when it gaps through);
2. inside the bar: stop-loss, trailing stop, liquidation (maintenance margin) and take-profit of
   open positions (the stops first when a stop and the target are touched, at the open when the
   bar gaps through);
3. at the bar's close: mark to market, update the simulator's ATR and realised volatility,
   enforce the risk limits (max-drawdown halt, daily loss limit);
4. turn the strategy's intents for this bar into orders for the next bar's open: sizing,
   max trades per day, cooldown after a stop-out, max positions, notional and exposure caps;
   none before the bar ``P_TRADE_FROM`` (warm-up: indicators and strategy state only).

The emergency stop (``emergency_stop_nb``) acts on the state when it is raised, between bars.

Conventions: prices are (rows, columns) arrays read in place at one row; a group's k columns are
consecutive, from ``col0``; the column state is (k, N_COL_STATE); fills are written to ``fills`` (an ``order_dt`` buffer of at least 3*k rows) and
their count returned. Every number is float64 so the whole state can be persisted as arrays.
"""

from __future__ import annotations

import numpy as np
from numba import njit

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
    C_PEND_NOTIONAL,
    C_PEND_PRICE,
    C_PEND_QTY,
    C_PEND_REASON,
    C_PEND_TYPE,
    C_POS,
    C_SL_PRICE,
    C_TP_PRICE,
    C_TRAIL_DIST,
    C_VOL,
    G_BAR,
    G_CASH,
    G_DAY,
    G_DAY_BLOCKED,
    G_DAY_START_EQUITY,
    G_EMERGENCY,
    G_EQUITY,
    G_HALTED,
    G_NEXT_ORDER_ID,
    G_PEAK_EQUITY,
    G_TRADES_TODAY,
    INTENT_ACTION,
    INTENT_ORDER_TYPE,
    INTENT_PRICE,
    N_COL_STATE,
    N_GROUP_STATE,
    ORDER_LIMIT,
    ORDER_MARKET,
    ORDER_STOP,
    P_ALLOW_SHORT,
    P_ANN_FACTOR,
    P_ATR_STOP_MULT,
    P_ATR_WINDOW,
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
    REASON_END,
    REASON_LIQUIDATION,
    REASON_MAX_DRAWDOWN,
    REASON_SIGNAL,
    REASON_STOP_LOSS,
    REASON_TAKE_PROFIT,
    REASON_TRAILING_STOP,
    SIZE_CASH,
    SIZE_FRACTION,
    SIZE_RISK,
    SIZE_VOL_TARGET,
    trade_dt,
)
from framework.indicators_nb import (
    atr_init_nb,
    atr_update_nb,
    realized_vol_init_nb,
    realized_vol_update_nb,
)
from framework.jit import bar_njit, bar_njit_inline

DUST_FRACTION = 1e-9  # an entry worth less than this fraction of equity is rounding residue
FILLS_PER_COLUMN_BAR = 3  # close + open of a reversal, then a stop on the new position
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
    atr0 = atr_init_nb(int(p[P_ATR_WINDOW]))
    vol0 = realized_vol_init_nb(int(p[P_VOL_WINDOW]), p[P_ANN_FACTOR])
    atr_s = np.empty((k, atr0.shape[0]))
    vol_s = np.empty((k, vol0.shape[0]))
    for j in range(k):
        atr_s[j] = atr0
        vol_s[j] = vol0
    return g, cs, atr_s, vol_s


@bar_njit
def _book_fill(g, cs, j, t, side, qty, price, order_type, reason, p, fills, n, col0):
    """Apply one fill to cash and position, append it to ``fills``; returns the new count."""
    notional = qty * price
    fees = notional * p[P_FEES]
    if side > 0:
        g[G_CASH] -= notional + fees
        cs[j, C_POS] += qty
    else:
        g[G_CASH] += notional - fees
        cs[j, C_POS] -= qty
    f = fills[n]
    f["id"] = int(g[G_NEXT_ORDER_ID])
    f["col"] = col0 + j
    f["bar"] = t
    f["side"] = side
    f["qty"] = qty
    f["price"] = price
    f["fees"] = fees
    f["order_type"] = order_type
    f["reason"] = reason
    g[G_NEXT_ORDER_ID] += 1.0
    return n + 1


@bar_njit
def _close_position(g, cs, j, t, price, order_type, reason, p, fills, n, col0):
    pos = cs[j, C_POS]
    if pos == 0.0:
        return n
    side = -1 if pos > 0.0 else 1
    n = _book_fill(g, cs, j, t, side, abs(pos), price, order_type, reason, p, fills, n, col0)
    cs[j, C_POS] = 0.0  # exact zero, whatever the float history of the position
    return n


@bar_njit
def _entry_fill_price(direction, order_type, level, o, h, l, slip):
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
    # stop entry: buy stop above, sell stop below the market
    if direction > 0:
        if o >= level:
            return o * (1.0 + slip), False
        return (level * (1.0 + slip) if h >= level else np.nan), True
    if o <= level:
        return o * (1.0 - slip), False
    return (level * (1.0 - slip) if l <= level else np.nan), True


@bar_njit
def _others_notional(cs, k, skip, shorts_only):
    """Sum of |position| x last close over the group's columns other than ``skip`` (only the
    short ones if ``shorts_only``)."""
    total = 0.0
    for j in range(k):
        q = cs[j, C_POS]
        if j != skip and (q < 0.0 if shorts_only else q != 0.0):
            total += abs(q) * cs[j, C_LAST_CLOSE]
    return total


@bar_njit
def _entry_qty(g, cs, j, k, price, p):
    """Quantity of a pending entry at its fill price, after every cap; 0 means no fill."""
    qty = cs[j, C_PEND_QTY]
    if np.isnan(qty):
        qty = cs[j, C_PEND_NOTIONAL] / price
    if not np.isnan(p[P_MAX_POS_NOTIONAL]):
        qty = min(qty, p[P_MAX_POS_NOTIONAL] / price)
    if not np.isnan(p[P_MAX_EXPOSURE]):
        room = p[P_MAX_EXPOSURE] * g[G_EQUITY] - _others_notional(cs, k, j, False)
        qty = min(qty, room / price)
    # no leverage: the position plus its fee must be paid (long) or margined (short) from cash;
    # a short elsewhere in the group put its sale proceeds into cash and margins as much again,
    # so neither half of that is free (gross exposure stays within equity)
    free_cash = g[G_CASH]
    if k > 1:
        free_cash -= 2.0 * _others_notional(cs, k, j, True)
    cash_cap = free_cash / (price * (1.0 + p[P_FEES]))
    qty = min(qty, cash_cap)
    # an all-in entry leaves a rounding residue of cash (~1e-13) behind; an "entry" paid from it
    # would open a dust position that blocks the column's real entries
    if not (qty * price > DUST_FRACTION * g[G_EQUITY]):
        return 0.0
    return qty


@bar_njit
def _open_position(g, cs, j, t, direction, price, inside, qty, p, fills, n, col0):
    side = 1 if direction > 0 else -1
    n = _book_fill(g, cs, j, t, side, qty, price, int(cs[j, C_PEND_TYPE]), REASON_SIGNAL, p, fills, n, col0)
    cs[j, C_ENTRY_PRICE] = price
    cs[j, C_ENTRY_BAR] = t
    cs[j, C_ENTRY_INSIDE] = 1.0 if inside else 0.0
    cs[j, C_BEST_PRICE] = price
    atr = cs[j, C_PEND_ATR]
    d = float(direction)
    sl = np.nan
    if not np.isnan(p[P_SL_PCT]):
        sl = price * (1.0 - d * p[P_SL_PCT])
    elif not np.isnan(p[P_SL_ATR]):
        sl = price - d * p[P_SL_ATR] * atr
    tp = np.nan
    if not np.isnan(p[P_TP_PCT]):
        tp = price * (1.0 + d * p[P_TP_PCT])
    elif not np.isnan(p[P_TP_ATR]):
        tp = price + d * p[P_TP_ATR] * atr
    trail = np.nan
    if not np.isnan(p[P_TRAIL_PCT]):
        trail = -p[P_TRAIL_PCT]  # negative marks "fraction of the best price"
    elif not np.isnan(p[P_TRAIL_ATR]):
        trail = p[P_TRAIL_ATR] * atr
    cs[j, C_SL_PRICE] = sl
    cs[j, C_TP_PRICE] = tp
    cs[j, C_TRAIL_DIST] = trail
    g[G_TRADES_TODAY] += 1.0
    return n


@bar_njit
def _fill_pending(g, cs, j, k, t, o, h, l, p, fills, n, col0):
    action = int(cs[j, C_PEND_ACTION])
    if action == ACTION_NONE:
        return n
    reason = int(cs[j, C_PEND_REASON])
    slip = p[P_SLIPPAGE]
    pos = cs[j, C_POS]
    if action == ACTION_EXIT:
        if pos != 0.0:
            d = 1.0 if pos > 0.0 else -1.0
            n = _close_position(g, cs, j, t, o * (1.0 - slip * d), ORDER_MARKET, reason, p, fills, n, col0)
    else:
        direction = 1 if action == ACTION_LONG else -1
        order_type = int(cs[j, C_PEND_TYPE])
        price, inside = _entry_fill_price(direction, order_type, cs[j, C_PEND_PRICE], o, h, l, slip)
        if not np.isnan(price):
            if pos * direction < 0.0:  # reversal: close the opposite position at the same price
                n = _close_position(g, cs, j, t, price, order_type, reason, p, fills, n, col0)
            trades_left = np.isnan(p[P_MAX_TRADES_DAY]) or g[G_TRADES_TODAY] < p[P_MAX_TRADES_DAY]
            if cs[j, C_POS] == 0.0 and trades_left:
                qty = _entry_qty(g, cs, j, k, price, p)
                if qty > 0.0:
                    n = _open_position(g, cs, j, t, direction, price, inside, qty, p, fills, n, col0)
    cs[j, C_PEND_ACTION] = ACTION_NONE  # every order is good for one bar
    return n


@bar_njit
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


@bar_njit
def _check_exits(g, cs, j, t, o, h, l, p, cooldown, fills, n, col0):
    """Stop-loss, trailing stop, liquidation and take-profit inside the bar; the stops first
    when a stop and the target both touch."""
    pos = cs[j, C_POS]
    if pos == 0.0:
        return n
    d = 1.0 if pos > 0.0 else -1.0
    slip = p[P_SLIPPAGE]
    # A position opened at a limit/stop level inside this bar saw only the part of the bar after
    # its entry, and that path is unknown: its stop is checked from the entry price against the
    # bar's adverse extreme (the worst case), its target and best price only from the next bar.
    inside = cs[j, C_ENTRY_BAR] == t and cs[j, C_ENTRY_INSIDE] != 0.0
    first = cs[j, C_ENTRY_PRICE] if inside else o  # the first price the position saw this bar
    stop = cs[j, C_SL_PRICE]
    stop_reason = REASON_STOP_LOSS
    trail = cs[j, C_TRAIL_DIST]
    if not np.isnan(trail):
        best = cs[j, C_BEST_PRICE]
        level = best * (1.0 + d * trail) if trail < 0.0 else best - d * trail
        # the tighter of the two stops binds; a tie counts as the stop-loss
        if np.isnan(stop) or (level - stop) * d > 0.0:
            stop = level
            stop_reason = REASON_TRAILING_STOP
    if not np.isnan(p[P_MAINT_MARGIN]):
        # the maintenance margin acts as one more stop, at the liquidation price; the position's
        # own stops bind when they are at least as tight
        level = _liquidation_level(g, cs, j, p[P_MAINT_MARGIN])
        if not np.isnan(level) and (np.isnan(stop) or (level - stop) * d > 0.0):
            stop = level
            stop_reason = REASON_LIQUIDATION
    if not np.isnan(stop):
        hit = np.nan
        if (first - stop) * d <= 0.0:
            hit = first
        elif ((l if d > 0.0 else h) - stop) * d <= 0.0:
            hit = stop
        if not np.isnan(hit):
            n = _close_position(g, cs, j, t, hit * (1.0 - slip * d), ORDER_STOP, stop_reason, p, fills, n, col0)
            if not np.isnan(cooldown):
                cs[j, C_COOLDOWN_UNTIL] = t + cooldown
            return n
    if inside:
        return n
    tp = cs[j, C_TP_PRICE]
    if not np.isnan(tp):
        hit = np.nan
        if (o - tp) * d >= 0.0:
            hit = o
        elif ((h if d > 0.0 else l) - tp) * d >= 0.0:
            hit = tp
        if not np.isnan(hit):
            return _close_position(g, cs, j, t, hit, ORDER_LIMIT, REASON_TAKE_PROFIT, p, fills, n, col0)
    # still open: the best price moves only after this bar's stops were checked (no intrabar look-ahead)
    best = h if d > 0.0 else l
    if (best - cs[j, C_BEST_PRICE]) * d > 0.0:
        cs[j, C_BEST_PRICE] = best
    return n


@bar_njit
def _queue_exit(cs, j, reason):
    """A market order for the next open that closes column j's position (none if flat)."""
    if cs[j, C_POS] != 0.0:
        cs[j, C_PEND_ACTION] = ACTION_EXIT
        cs[j, C_PEND_TYPE] = ORDER_MARKET
        cs[j, C_PEND_REASON] = reason
    else:
        cs[j, C_PEND_ACTION] = ACTION_NONE


@bar_njit
def _flatten_all(cs, k, reason):
    for j in range(k):
        _queue_exit(cs, j, reason)


@bar_njit
def emergency_stop_nb(g, cs):
    """Raise the emergency stop between two bars, acting on the state at once: every pending
    order (decided at the last close, not filled yet) is cancelled, a market exit of every open
    position is queued for the next bar's open, and the group is halted for good."""
    g[G_EMERGENCY] = 1.0
    g[G_HALTED] = 1.0
    _flatten_all(cs, cs.shape[0], REASON_EMERGENCY)


@bar_njit
def _queue_entry(cs, j, direction, order_type, price, equity, p):
    """Size an entry decided at this close; leaves no order when sizing is not possible yet."""
    kind = int(p[P_SIZE_KIND])
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
        return  # ATR or volatility still warming up (NaN) or zero
    atr_levels = not (np.isnan(p[P_SL_ATR]) and np.isnan(p[P_TP_ATR]) and np.isnan(p[P_TRAIL_ATR]))
    if atr_levels and np.isnan(cs[j, C_ATR]):
        return  # an ATR stop or target cannot be placed before the ATR has warmed up
    cs[j, C_PEND_ACTION] = ACTION_LONG if direction > 0 else ACTION_SHORT
    cs[j, C_PEND_TYPE] = order_type
    cs[j, C_PEND_PRICE] = price
    cs[j, C_PEND_NOTIONAL] = notional
    cs[j, C_PEND_QTY] = qty
    cs[j, C_PEND_ATR] = cs[j, C_ATR]
    cs[j, C_PEND_REASON] = REASON_SIGNAL


@bar_njit
def _open_or_pending(cs, k):
    count = 0
    for j in range(k):
        if cs[j, C_POS] != 0.0 or int(cs[j, C_PEND_ACTION]) in (ACTION_LONG, ACTION_SHORT):
            count += 1
    return count


@bar_njit_inline
def fill_nb(t, row, col0, day, o, h, l, c, g, cs, atr_s, vol_s, p, fills):
    """First half of a bar for one cash group: fills, stops, mark to market, risk limits.

    ``o, h, l, c`` are (rows, columns) arrays: this bar is row ``row`` (``t`` in a backtest,
    0 for a live runner's one-bar arrays) and the group's columns start at ``col0`` (also the
    column written into the fill records); indexing in place rather than slicing a row view per
    bar keeps the step free of allocation. ``day`` is the bar's UTC day number (days since
    1970-01-01), for the daily limits. Returns the number of fills written to ``fills``.
    """
    k = cs.shape[0]
    n = 0
    if t == p[P_EMERGENCY_AT]:  # a backtest's emergency stop, raised before this bar opens
        emergency_stop_nb(g, cs)
    if day != g[G_DAY]:
        g[G_DAY] = day
        g[G_DAY_START_EQUITY] = g[G_EQUITY]
        g[G_TRADES_TODAY] = 0.0
        g[G_DAY_BLOCKED] = 0.0
    cooldown = p[P_COOLDOWN_BARS]

    # open: every column's orders decided at the previous close; then inside the bar: stops and
    # targets (in that order across the group, so an entry at the open cannot spend cash that
    # another column's stop frees only later in the bar)
    for j in range(k):
        # most bars have nothing pending and many no position: skip the calls then
        if cs[j, C_PEND_ACTION] != ACTION_NONE:
            n = _fill_pending(g, cs, j, k, t, o[row, col0 + j], h[row, col0 + j], l[row, col0 + j],
                              p, fills, n, col0)
    for j in range(k):
        if cs[j, C_POS] != 0.0:
            n = _check_exits(g, cs, j, t, o[row, col0 + j], h[row, col0 + j], l[row, col0 + j],
                             p, cooldown, fills, n, col0)

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
        _flatten_all(cs, k, REASON_MAX_DRAWDOWN)
    elif not np.isnan(p[P_MAX_DRAWDOWN]) and equity < g[G_PEAK_EQUITY] * (1.0 - p[P_MAX_DRAWDOWN]):
        g[G_HALTED] = 1.0
        _flatten_all(cs, k, REASON_MAX_DRAWDOWN)
    elif (
        g[G_DAY_BLOCKED] == 0.0
        and not np.isnan(p[P_DAILY_LOSS])
        and equity < g[G_DAY_START_EQUITY] * (1.0 - p[P_DAILY_LOSS])
    ):
        g[G_DAY_BLOCKED] = 1.0
        _flatten_all(cs, k, REASON_DAILY_LOSS)
    return n


@bar_njit_inline
def order_nb(t, intents, g, cs, p):
    """Second half of a bar: the strategy's intents at this close become next-open orders.

    ``intents`` (k, INTENT_SIZE) are decided after ``fill_nb`` of the same bar, so a strategy
    may read its position. Entries are sized here at this close's equity and checked against
    max positions, the cooldown and a daily-loss block; the position and exposure caps and the
    max trades per day are applied at the fill. Bars before ``p[P_TRADE_FROM]`` place nothing
    (the strategy has decided, its state is warm; the order is dropped).
    """
    if g[G_HALTED] != 0.0 or t < p[P_TRADE_FROM]:  # NaN compares False: trading from the start
        return
    k = cs.shape[0]
    allow_short = p[P_ALLOW_SHORT] != 0.0
    for j in range(k):
        if int(cs[j, C_PEND_ACTION]) != ACTION_NONE:
            continue  # a risk limit already queued this column's exit
        action = int(intents[j, INTENT_ACTION])
        pos = cs[j, C_POS]
        if action == ACTION_SHORT and not allow_short:
            action = ACTION_EXIT  # long-only: a short signal closes the long
        if action == ACTION_EXIT:
            _queue_exit(cs, j, REASON_SIGNAL)
            continue
        if action != ACTION_LONG and action != ACTION_SHORT:
            continue
        direction = 1 if action == ACTION_LONG else -1
        if pos * direction > 0.0:
            continue  # already positioned that way: no pyramiding
        blocked = (
            g[G_DAY_BLOCKED] != 0.0
            or t < cs[j, C_COOLDOWN_UNTIL]
            or (not np.isnan(p[P_MAX_POSITIONS]) and pos == 0.0 and _open_or_pending(cs, k) >= p[P_MAX_POSITIONS])
        )
        if not blocked:
            order_type = int(intents[j, INTENT_ORDER_TYPE])
            _queue_entry(cs, j, direction, order_type, intents[j, INTENT_PRICE], g[G_EQUITY], p)
        if int(cs[j, C_PEND_ACTION]) == ACTION_NONE:
            _queue_exit(cs, j, REASON_SIGNAL)  # no new side (blocked, or not sizeable yet): the old one still goes


@bar_njit
def _write_trade(out, m, entry, exit_bar, exit_price, exit_fees, reason):
    direction = 1 if entry["side"] > 0 else -1
    qty = entry["qty"]
    pnl = direction * (exit_price - entry["price"]) * qty - entry["fees"] - exit_fees
    r = out[m]
    r["col"] = entry["col"]
    r["direction"] = direction
    r["qty"] = qty
    r["entry_bar"] = entry["bar"]
    r["entry_price"] = entry["price"]
    r["entry_fees"] = entry["fees"]
    r["exit_bar"] = exit_bar
    r["exit_price"] = exit_price
    r["exit_fees"] = exit_fees
    r["pnl"] = pnl
    r["ret"] = pnl / (qty * entry["price"])
    r["exit_reason"] = reason


@njit(cache=True)
def trades_from_fills_nb(fills, n_cols, last_bar, last_close):
    """Pair entry and exit fills per column into trade records (``trade_dt``).

    Positions are opened and closed whole, so in each column fills alternate entry, exit.
    A position still open after the last bar becomes a trade marked ``REASON_END`` valued at
    ``last_close[col]`` without exit fees.
    """
    out = np.empty(fills.shape[0] // 2 + n_cols, dtype=trade_dt)
    m = 0
    open_idx = np.full(n_cols, -1, dtype=np.int64)
    for i in range(fills.shape[0]):
        col = fills[i]["col"]
        if open_idx[col] < 0:
            open_idx[col] = i
            continue
        x = fills[i]
        _write_trade(out, m, fills[open_idx[col]], x["bar"], x["price"], x["fees"], x["reason"])
        m += 1
        open_idx[col] = -1
    for col in range(n_cols):
        if open_idx[col] >= 0:
            _write_trade(out, m, fills[open_idx[col]], last_bar, last_close[col], 0.0, REASON_END)
            m += 1
    return out[:m]


@njit(cache=True)
def replay_fills_nb(fills, n_bars, col_group, n_groups, init_cash):
    """Cash of every group and position of every column at each close, replayed from the fills.

    Both change only at fills, so the backtester keeps the fill records rather than two
    (bars, columns) arrays. The replay books each fill with the simulator's own arithmetic in its
    order (``_book_fill``; an exit leaves exactly 0), so the values are equal to the last bit.
    ``col_group[col]`` is the column's cash group.
    """
    order = np.argsort(fills["bar"], kind="mergesort")  # stable: keeps each bar's booking order
    cash = np.empty((n_bars, n_groups))
    pos = np.empty((n_bars, col_group.shape[0]))
    c = np.full(n_groups, init_cash)
    q = np.zeros(col_group.shape[0])
    i = 0
    for t in range(n_bars):
        while i < order.shape[0] and fills[order[i]]["bar"] == t:
            f = fills[order[i]]
            col = f["col"]
            notional = f["qty"] * f["price"]
            if f["side"] > 0:
                c[col_group[col]] -= notional + f["fees"]
            else:
                c[col_group[col]] += notional - f["fees"]
            # positions open from flat and close whole (fills alternate entry, exit per column)
            q[col] = (f["qty"] if f["side"] > 0 else -f["qty"]) if q[col] == 0.0 else 0.0
            i += 1
        cash[t] = c
        pos[t] = q
    return cash, pos

