"""Constants and structured record dtypes shared by the numba kernels and the pandas API.

Everything a kernel reads or writes is a plain float64/int64 array or one of the record dtypes
below, so the same arrays can be persisted by the live runner and reloaded on restart.

State and parameter vectors are float64 arrays indexed by the integer constants here.  NaN in a
parameter slot means "disabled".
"""

from __future__ import annotations

import numpy as np

# --- strategy intents ------------------------------------------------------------------------
# A strategy's decide kernel writes one intent per bar into a float64 vector of INTENT_SIZE.
INTENT_ACTION = 0  # one of ACTION_*
INTENT_ORDER_TYPE = 1  # one of ORDER_*
INTENT_PRICE = 2  # limit / stop trigger price; NaN for market orders
INTENT_LIMIT = 3  # a stop-limit order's limit price (NaN otherwise)
INTENT_SIZE = 4

ACTION_NONE = 0
ACTION_LONG = 1  # open a long (reverses a short)
ACTION_SHORT = -1  # open a short (reverses a long)
ACTION_EXIT = 2  # flatten the position

ORDER_MARKET = 0
ORDER_LIMIT = 1
ORDER_STOP = 2
ORDER_STOP_LIMIT = 3  # a limit order at INTENT_LIMIT placed once the stop INTENT_PRICE trades
ORDER_TAKE_PROFIT = 4  # a position's target: triggers at its price, fills there (or better)
ORDER_TYPE_NAMES = ("market", "limit", "stop", "stop_limit", "take_profit")

# --- sizing ---------------------------------------------------------------------------------
SIZE_FRACTION = 0  # notional = size * equity                    (size: fraction, 1.0 = all in)
SIZE_CASH = 1  # notional = size                                   (size: cash units)
SIZE_RISK = 2  # qty = equity * size / (atr * atr_stop_mult)       (size: fraction risked)
SIZE_VOL_TARGET = 3  # notional = equity * size / realised vol     (size: annualised vol target)
SIZE_KIND_NAMES = ("fraction", "cash", "risk", "vol_target")

# --- reasons a fill happened -----------------------------------------------------------------
REASON_SIGNAL = 0
REASON_STOP_LOSS = 1
REASON_TAKE_PROFIT = 2
REASON_TRAILING_STOP = 3
REASON_MAX_DRAWDOWN = 4
REASON_DAILY_LOSS = 5
REASON_EMERGENCY = 6
REASON_END = 7  # position still open at the last bar (trades only; no fill)
REASON_LIQUIDATION = 8  # the group's equity fell below the maintenance margin
REASON_NAMES = (
    "signal",
    "stop_loss",
    "take_profit",
    "trailing_stop",
    "max_drawdown",
    "daily_loss",
    "emergency_stop",
    "open_at_end",
    "liquidation",
)

# --- order status: the state machine of an order (framework/orders.py draws it) --------------
STATUS_CREATED = 0  # decided at a close, not yet accepted by a broker
STATUS_SUBMITTED = 1  # working at the broker (the paper matcher accepts at once)
STATUS_PARTIALLY_FILLED = 2
STATUS_FILLED = 3
STATUS_CANCELLED = 4  # withdrawn: by a risk limit, the emergency stop, or its position closing
STATUS_EXPIRED = 5  # good for one bar: a limit or stop entry that did not trigger
STATUS_REJECTED = 6  # refused, with a REJECT_* reason
STATUS_NAMES = ("created", "submitted", "partially_filled", "filled", "cancelled", "expired", "rejected")

# --- why an order was rejected or cancelled (REJECT_NONE: it was not) --------------------------
REJECT_NONE = 0
REJECT_NO_CASH = 1  # the cash (after the other positions' margin) buys nothing
REJECT_MIN_QTY = 2  # below the market's minimum quantity after rounding to its step
REJECT_MIN_NOTIONAL = 3  # below the market's minimum notional
REJECT_RISK_LIMIT = 4  # a position or exposure cap leaves no room
REJECT_COOLDOWN = 5  # within the cooldown after a stop-out
REJECT_HALTED = 6  # the run is halted (max drawdown or emergency stop)
REJECT_MAX_POSITIONS = 7
REJECT_MAX_TRADES_DAY = 8
REJECT_DAILY_LOSS = 9  # the daily loss limit blocks entries until the next UTC day
REJECT_NOT_SIZEABLE = 10  # ATR or volatility not warmed up yet, or zero
REJECT_REPLACED = 11  # cancelled: a risk limit replaced it by an exit
REJECT_POSITION_CLOSED = 12  # cancelled: its position closed (the other side of a stop/target)
REJECT_ENTRIES_BLOCKED = 13  # a live runner blocks entries (paused, or its feed is stale)
REJECT_NAMES = (
    "",
    "no_cash",
    "below_min_qty",
    "below_min_notional",
    "risk_limit",
    "cooldown",
    "halted",
    "max_positions",
    "max_trades_day",
    "daily_loss",
    "not_sizeable",
    "replaced_by_exit",
    "position_closed",
    "entries_blocked",
)

# --- step events: what a step reports besides fills ---------------------------------------------
EVENT_ORDER = 0  # an order changed status (the record carries the order after the change)
EVENT_AMENDED = 1  # a working stop moved its trigger (a trailing stop following the price)
EVENT_HALT = 2  # max drawdown breached: flat and halted for good
EVENT_DAILY_BLOCK = 3  # daily loss limit breached: flat, no entries until the next UTC day
EVENT_EMERGENCY = 4  # the emergency stop was raised
EVENT_LIQUIDATION = 5  # the maintenance margin was breached in a column
EVENT_NAMES = ("order", "amended", "halt", "daily_block", "emergency_stop", "liquidation")

# --- fee currency of a fill ---------------------------------------------------------------------
FEE_QUOTE = 0  # the fee is paid in the quote currency (cash)
FEE_BASE = 1  # the fee is taken from the traded quantity (base currency)

# --- simulation parameters (one float64 vector per cash group) -------------------------------
P_INIT_CASH = 0
P_FEES = 1  # fraction of notional, per fill
P_SLIPPAGE = 2  # fraction of price, against the trader, on market and stop fills
P_SIZE_KIND = 3  # one of SIZE_*
P_SIZE = 4
P_ATR_WINDOW = 5  # bars; the simulator's own ATR for ATR stops and risk sizing
P_ATR_STOP_MULT = 6  # stop distance = atr * mult, for SIZE_RISK
P_VOL_WINDOW = 7  # bars; realised volatility for SIZE_VOL_TARGET
P_ANN_FACTOR = 8  # bars per year, derived from the bar frequency
P_SL_PCT = 9  # stop-loss distance as a fraction of the entry price
P_TP_PCT = 10
P_SL_ATR = 11  # stop-loss distance in ATR multiples (ATR at the decision bar)
P_TP_ATR = 12
P_TRAIL_PCT = 13  # trailing stop distance as a fraction of the best price since entry
P_TRAIL_ATR = 14  # trailing stop distance in ATR multiples
P_ALLOW_SHORT = 15  # 0 or 1
P_MAX_DRAWDOWN = 16  # fraction; breach at a close flattens everything and halts the group
P_DAILY_LOSS = 17  # fraction of the day's opening equity; breach flattens, no entries that day
P_MAX_TRADES_DAY = 18  # entries per UTC day, across the group
P_MAX_POS_NOTIONAL = 19  # cash units per position
P_MAX_EXPOSURE = 20  # sum of |position notional| / equity across the group
P_COOLDOWN_BARS = 21  # bars without entries after a stop-out in that column
P_MAX_POSITIONS = 22  # open positions at once across the group
P_MAINT_MARGIN = 23  # fraction of gross notional the group's equity must keep; below it: liquidation
# run settings rather than trading rules (set by the drivers, not by SimSettings; NaN = none)
P_TRADE_FROM = 24  # first bar index whose close may place orders: earlier bars only warm up
P_EMERGENCY_AT = 25  # bar index before whose open the emergency stop is raised (a backtest's)
# exchange precision (NaN = off): entries are rounded and refused as the exchange would
P_MIN_QTY = 26
P_QTY_STEP = 27  # quantities are rounded down to a multiple of it
P_PRICE_TICK = 28  # limit/stop/target prices are rounded to a multiple of it
P_MIN_NOTIONAL = 29
# 1: a broker fills the orders (``BarStepper.apply_fill``); the paper matcher is off, an order
# not filled by the next bar's close expires there, and stops and targets rest at the broker
P_BROKER_FILLS = 30
N_SIM_PARAMS = 31

# --- group state (one float64 vector per cash group) -----------------------------------------
G_CASH = 0
G_EQUITY = 1  # marked to the last close
G_PEAK_EQUITY = 2
G_DAY = 3  # current UTC day number (days since epoch)
G_DAY_START_EQUITY = 4
G_TRADES_TODAY = 5
G_HALTED = 6  # 1 after a max-drawdown breach or the emergency stop: flat for good
G_DAY_BLOCKED = 7  # 1 after a daily-loss breach: no entries until the next day
G_EMERGENCY = 8  # 1 once the emergency stop was raised (sim_nb.emergency_stop_nb; halted too)
G_BAR = 9  # index of the last processed bar
G_NEXT_ORDER_ID = 10  # sequence number of the group's next order
G_ENTRIES_BLOCKED = 11  # 1 while a live runner blocks entries (exits are still managed)
N_GROUP_STATE = 12

# --- column state (one float64 row per column) -------------------------------------------------
C_POS = 0  # signed quantity
C_ENTRY_PRICE = 1  # average entry price of the open position
C_ENTRY_BAR = 2
C_SL_PRICE = 3
C_TP_PRICE = 4
C_TRAIL_DIST = 5  # absolute price distance; NaN when no trailing stop
C_BEST_PRICE = 6  # best high (long) / low (short) seen since entry, for the trailing stop
C_PEND_ACTION = 7  # pending order decided at the previous close: ACTION_*
C_PEND_TYPE = 8
C_PEND_PRICE = 9
C_PEND_ATR = 10  # ATR at the decision bar (stops and risk sizing)
C_PEND_NOTIONAL = 11  # target notional for the pending entry (cash units) or NaN
C_PEND_QTY = 12  # target quantity for the pending entry or NaN
C_PEND_REASON = 13
C_COOLDOWN_UNTIL = 14  # first bar index at which entries are allowed again
C_LAST_CLOSE = 15
C_ATR = 16  # latest value of the simulator's ATR
C_VOL = 17  # latest annualised realised volatility
C_ENTRY_INSIDE = 18  # 1 if the position was opened at a limit/stop level inside its entry bar
C_PEND_ID = 19  # order id of the pending order
C_PEND_BAR = 20  # bar at whose close it was decided
C_PEND_LIMIT = 21  # a stop-limit's limit price
C_PEND_CLOSE_ID = 22  # a reversal's second order, closing the old side at the same price; NaN if none
C_SL_ID = 23  # order id of the position's stop order (stop-loss or trailing stop); NaN if none
C_TP_ID = 24  # order id of the position's take-profit order; NaN if none
C_STOP_LEVEL = 25  # the stop order's trigger as last placed (moves with a trailing stop)
C_REALIZED = 26  # realised pnl of the column so far, after fees (quote)
C_PEND_FILLED = 27  # quantity a broker has filled of the pending order so far
N_COL_STATE = 28

# --- records ----------------------------------------------------------------------------------
fill_dt = np.dtype(
    [
        ("order_id", np.int64),  # the order it fills (sequence number within the cash group)
        ("col", np.int64),
        ("bar", np.int64),  # bar index of the fill
        ("side", np.int64),  # +1 buy, -1 sell
        ("qty", np.float64),  # always positive
        ("price", np.float64),  # fill price after slippage
        ("fees", np.float64),
        ("fee_ccy", np.int64),  # FEE_QUOTE or FEE_BASE
        ("order_type", np.int64),  # ORDER_*
        ("reason", np.int64),  # REASON_*
    ],
    align=True,
)

event_dt = np.dtype(
    [
        ("kind", np.int64),  # EVENT_*
        ("bar", np.int64),  # bar index at which it happened
        ("col", np.int64),  # -1 for an event of the whole group
        ("order_id", np.int64),  # -1 for a risk event
        ("side", np.int64),
        ("order_type", np.int64),
        ("qty", np.float64),  # quantity asked for; NaN while an entry is sized only at its fill
        ("notional", np.float64),  # target notional of an entry sized at its fill, else NaN
        ("price", np.float64),  # limit price (NaN: none)
        ("trigger", np.float64),  # stop / take-profit trigger (NaN: none)
        ("status", np.int64),  # STATUS_*
        ("reason", np.int64),  # REASON_*: why the order exists (signal, stop_loss, ...)
        ("reject", np.int64),  # REJECT_*: why rejected or cancelled
        ("filled_qty", np.float64),
        ("avg_price", np.float64),  # average fill price; NaN before the first fill
        ("created_bar", np.int64),
    ],
    align=True,
)

trade_dt = np.dtype(
    [
        ("col", np.int64),
        ("direction", np.int64),  # +1 long, -1 short
        ("qty", np.float64),  # total quantity opened (entries of a position built in parts add up)
        ("entry_bar", np.int64),  # first entry fill
        ("entry_price", np.float64),  # average entry price
        ("entry_fees", np.float64),
        ("exit_bar", np.int64),  # the fill that returned the position to zero
        ("exit_price", np.float64),  # average exit price; last close for a trade open at the end
        ("exit_fees", np.float64),
        ("pnl", np.float64),  # after fees
        ("ret", np.float64),  # pnl / (qty * entry_price)
        ("exit_reason", np.int64),  # REASON_* of the last exit fill
        ("n_fills", np.int64),  # fills in the trade: 2 for a whole entry and exit
    ],
    align=True,
)
