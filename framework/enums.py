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
INTENT_SIZE = 3

ACTION_NONE = 0
ACTION_LONG = 1  # open a long (reverses a short)
ACTION_SHORT = -1  # open a short (reverses a long)
ACTION_EXIT = 2  # flatten the position

ORDER_MARKET = 0
ORDER_LIMIT = 1
ORDER_STOP = 2
ORDER_TYPE_NAMES = ("market", "limit", "stop")

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
N_SIM_PARAMS = 26

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
G_NEXT_ORDER_ID = 10
N_GROUP_STATE = 11

# --- column state (one float64 row per column) -------------------------------------------------
C_POS = 0  # signed quantity
C_ENTRY_PRICE = 1
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
N_COL_STATE = 19

# --- records ----------------------------------------------------------------------------------
order_dt = np.dtype(
    [
        ("id", np.int64),
        ("col", np.int64),
        ("bar", np.int64),  # bar index of the fill
        ("side", np.int64),  # +1 buy, -1 sell
        ("qty", np.float64),  # always positive
        ("price", np.float64),  # fill price after slippage
        ("fees", np.float64),
        ("order_type", np.int64),  # ORDER_*
        ("reason", np.int64),  # REASON_*
    ],
    align=True,
)

trade_dt = np.dtype(
    [
        ("col", np.int64),
        ("direction", np.int64),  # +1 long, -1 short
        ("qty", np.float64),
        ("entry_bar", np.int64),
        ("entry_price", np.float64),
        ("entry_fees", np.float64),
        ("exit_bar", np.int64),
        ("exit_price", np.float64),  # last close for a trade still open at the end
        ("exit_fees", np.float64),
        ("pnl", np.float64),  # after fees
        ("ret", np.float64),  # pnl / (qty * entry_price)
        ("exit_reason", np.int64),  # REASON_*
    ],
    align=True,
)
