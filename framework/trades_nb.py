"""Trade statistics in streaming form: round trips built fill by fill, folded into totals.

A sweep keeps no fills per combination: each bar's fills go through ``trade_fill_nb`` into a
small *trade state* (a float64 vector of ``N_TRADE_STATE`` slots indexed by the ``T_*``
constants) that builds the open round trip and, when the position returns to zero (or
reverses), folds the closed trade's pnl and return into running totals. After the last bar
``trade_end_nb`` values a position still open at the last close, without exit fees.

``trades_from_fills_nb`` (the ``Backtest`` trades) is built on the same step, so every trade's
``pnl`` and ``ret`` are equal to the last bit, and the totals
(``trade_total_nb``, summed in trade order) are what ``framework.metrics.trade_stats``
computes from the same trades: counts, win rate and profit factor are equal, not close
(tested against ``Backtest(...).run().trades``). One column per state: the fills fed in are
one column's, in booking order.
"""

from __future__ import annotations

import numpy as np

from framework.enums import FEE_BASE, REASON_END, trade_dt
from framework.jit import bar_njit, njit
from framework.metrics_nb import safe_ratio_nb
from framework.sim_nb import _replay_book

# --- the open round trip ----------------------------------------------------------------------
T_CASH = 0  # cash as replayed from the fills (only so that the position replay can run)
T_POS = 1  # position as replayed from the fills, as ``book_fill_nb`` books it
T_OPENED = 2  # quantity opened in the current trade
T_ENTRY = 3  # its average entry price
T_ENTRY_FEES = 4
T_CLOSED = 5  # quantity closed so far
T_EXIT_AVG = 6  # average exit price so far
T_EXIT_FEES = 7
T_GROSS = 8  # price pnl of the closed quantity
# --- totals over closed trades ----------------------------------------------------------------
T_TRADES = 9
T_WINS = 10  # trades with pnl > 0
T_GROSS_PROFIT = 11  # sum of pnl > 0, in trade order
T_GROSS_LOSS = 12  # sum of pnl < 0 (<= 0), in trade order
T_SUM_PNL = 13
T_SUM_RET = 14
# --- the open round trip's bookkeeping for trade records (``trades_from_fills_nb``) ---------------
T_FIRST_BAR = 15  # bar of its first entry fill
T_N_FILLS = 16  # fills in it so far (a reversing fill counts in both trades)
# --- the trade the last fill closed, until the next one closes --------------------------------
T_LAST_DIRECTION = 17
T_LAST_QTY = 18
T_LAST_ENTRY = 19
T_LAST_ENTRY_FEES = 20
T_LAST_EXIT = 21
T_LAST_EXIT_FEES = 22
T_LAST_PNL = 23
T_LAST_RET = 24
T_LAST_FIRST_BAR = 25
T_LAST_N_FILLS = 26
N_TRADE_STATE = 27

# --- finalised results ------------------------------------------------------------------------
TR_TRADES = 0
TR_WIN_RATE = 1  # fraction; NaN without trades
TR_PROFIT_FACTOR = 2  # gross profit / |gross loss|; +inf without a loss, NaN without trades
TR_EXPECTANCY = 3  # mean pnl per trade (cash)
TR_AVG_RETURN = 4  # mean trade return (pnl / (qty * entry price))
N_TRADE_RESULTS = 5


@bar_njit
def trade_add_nb(ts: np.ndarray, pnl: float, ret: float) -> None:
    """Fold one trade's ``pnl`` (cash, after fees) and ``ret`` into the totals of ``ts``."""
    ts[T_TRADES] += 1.0
    if pnl > 0.0:
        ts[T_WINS] += 1.0
        ts[T_GROSS_PROFIT] += pnl
    elif pnl < 0.0:
        ts[T_GROSS_LOSS] += pnl
    ts[T_SUM_PNL] += pnl
    ts[T_SUM_RET] += ret


@bar_njit
def trade_fill_nb(ts: np.ndarray, f) -> bool:
    """Book one ``fill_dt`` record ``f`` into the round trip of ``ts``: a fill that returns
    the position to zero or reverses it closes the trade (its fee split by quantity on a
    reversal), adds it to the totals and leaves it in the ``T_LAST_*`` slots (returns True);
    entries in parts average into the entry price, partial exits into the exit price."""
    before = ts[T_POS]
    _replay_book(ts, ts, T_CASH, T_POS, f)
    after = ts[T_POS]
    base = f["fee_ccy"] == FEE_BASE
    fee = f["fees"] * f["price"] if base else f["fees"]
    # the quantity the position moved by (a fee in the base currency comes out of it)
    qty = f["qty"] if not base else (f["qty"] - f["fees"] if f["side"] > 0 else f["qty"] + f["fees"])
    signed = qty if f["side"] > 0 else -qty
    reducing = 0.0 if before == 0.0 or before * signed > 0.0 else min(qty, abs(before))
    opening = qty - reducing
    closed = False
    if reducing > 0.0:
        share = reducing / qty
        d = 1.0 if before > 0.0 else -1.0
        ts[T_GROSS] += d * (f["price"] - ts[T_ENTRY]) * reducing
        ts[T_EXIT_AVG] = f["price"] if ts[T_CLOSED] == 0.0 else (
            (ts[T_CLOSED] * ts[T_EXIT_AVG] + reducing * f["price"]) / (ts[T_CLOSED] + reducing))
        ts[T_CLOSED] += reducing
        ts[T_EXIT_FEES] += fee if opening == 0.0 else fee * share
        ts[T_N_FILLS] += 1.0
        if after == 0.0 or (after > 0.0) != (before > 0.0):
            pnl = ts[T_GROSS] - ts[T_ENTRY_FEES] - ts[T_EXIT_FEES]
            ret = pnl / (ts[T_OPENED] * ts[T_ENTRY])
            trade_add_nb(ts, pnl, ret)
            ts[T_LAST_DIRECTION] = d
            ts[T_LAST_QTY] = ts[T_OPENED]
            ts[T_LAST_ENTRY] = ts[T_ENTRY]
            ts[T_LAST_ENTRY_FEES] = ts[T_ENTRY_FEES]
            ts[T_LAST_EXIT] = ts[T_EXIT_AVG]
            ts[T_LAST_EXIT_FEES] = ts[T_EXIT_FEES]
            ts[T_LAST_PNL] = pnl
            ts[T_LAST_RET] = ret
            ts[T_LAST_FIRST_BAR] = ts[T_FIRST_BAR]
            ts[T_LAST_N_FILLS] = ts[T_N_FILLS]
            ts[T_OPENED] = 0.0
            ts[T_CLOSED] = 0.0
            ts[T_GROSS] = 0.0
            ts[T_ENTRY_FEES] = 0.0
            ts[T_EXIT_FEES] = 0.0
            ts[T_N_FILLS] = 0.0
            closed = True
    if opening > 0.0 and after != 0.0:
        if ts[T_OPENED] == 0.0:
            ts[T_ENTRY] = f["price"]
            ts[T_FIRST_BAR] = f["bar"]
        else:
            ts[T_ENTRY] = (ts[T_OPENED] * ts[T_ENTRY] + opening * f["price"]) / (ts[T_OPENED] + opening)
        ts[T_OPENED] += opening
        ts[T_ENTRY_FEES] += fee if reducing == 0.0 else fee * (opening / qty)
        ts[T_N_FILLS] += 1.0
    return closed


@bar_njit
def open_trade_pnl_nb(ts: np.ndarray, last_close: float) -> float:
    """The pnl of the position still open in ``ts`` valued at ``last_close``, without exit
    fees (its partial exits' fees counted)."""
    q = ts[T_POS]
    d = 1.0 if q > 0.0 else -1.0
    return ts[T_GROSS] + d * (last_close - ts[T_ENTRY]) * abs(q) - ts[T_ENTRY_FEES] - ts[T_EXIT_FEES]


@bar_njit
def trade_end_nb(ts: np.ndarray, last_close: float) -> None:
    """After the last bar: a position still open is a trade valued at ``last_close``."""
    if ts[T_POS] != 0.0:
        pnl = open_trade_pnl_nb(ts, last_close)
        trade_add_nb(ts, pnl, pnl / (ts[T_OPENED] * ts[T_ENTRY]))


@njit(cache=True)
def trades_from_fills_nb(fills, n_cols, last_bar, last_close):
    """Round trips per column from the fills (``trade_dt``), with ``trade_fill_nb``: a trade
    opens when the position leaves zero and closes when it returns to zero; entries in parts
    average into its entry price, partial exits into its exit price. A fill that reverses the
    position closes one trade and opens the next (its fee split by quantity). A position still
    open after the last bar becomes a trade marked ``REASON_END``, valued at
    ``last_close[col]`` without exit fees."""
    out = np.empty(fills.shape[0] + n_cols, dtype=trade_dt)
    ts = np.zeros((n_cols, N_TRADE_STATE))
    m = 0
    for i in range(fills.shape[0]):
        f = fills[i]
        col = f["col"]
        s = ts[col]
        if trade_fill_nb(s, f):
            r = out[m]
            r["col"] = col
            r["direction"] = int(s[T_LAST_DIRECTION])
            r["qty"] = s[T_LAST_QTY]
            r["entry_bar"] = int(s[T_LAST_FIRST_BAR])
            r["entry_price"] = s[T_LAST_ENTRY]
            r["entry_fees"] = s[T_LAST_ENTRY_FEES]
            r["exit_bar"] = f["bar"]
            r["exit_price"] = s[T_LAST_EXIT]
            r["exit_fees"] = s[T_LAST_EXIT_FEES]
            r["pnl"] = s[T_LAST_PNL]
            r["ret"] = s[T_LAST_RET]
            r["exit_reason"] = f["reason"]
            r["n_fills"] = int(s[T_LAST_N_FILLS])
            m += 1
    for col in range(n_cols):
        s = ts[col]
        if s[T_POS] != 0.0:
            r = out[m]
            r["col"] = col
            r["direction"] = 1 if s[T_POS] > 0.0 else -1
            r["qty"] = s[T_OPENED]
            r["entry_bar"] = int(s[T_FIRST_BAR])
            r["entry_price"] = s[T_ENTRY]
            r["entry_fees"] = s[T_ENTRY_FEES]
            r["exit_bar"] = last_bar
            r["exit_price"] = last_close[col]
            r["exit_fees"] = s[T_EXIT_FEES]
            r["pnl"] = open_trade_pnl_nb(s, last_close[col])
            r["ret"] = r["pnl"] / (s[T_OPENED] * s[T_ENTRY])
            r["exit_reason"] = REASON_END
            r["n_fills"] = int(s[T_N_FILLS])
            m += 1
    return out[:m]


@njit(cache=True)
def trade_totals_1d_nb(pnl: np.ndarray, ret: np.ndarray) -> np.ndarray:
    """A trade state whose totals are ``trade_add_nb`` over finished trades, in order."""
    ts = np.zeros(N_TRADE_STATE)
    for i in range(pnl.shape[0]):
        trade_add_nb(ts, pnl[i], ret[i])
    return ts


@njit(cache=True)
def trade_finalize_nb(ts: np.ndarray) -> np.ndarray:
    """The ``TR_*`` results of a trade state's totals."""
    out = np.full(N_TRADE_RESULTS, np.nan)
    n = ts[T_TRADES]
    out[TR_TRADES] = n
    if n > 0.0:
        out[TR_WIN_RATE] = ts[T_WINS] / n
        out[TR_PROFIT_FACTOR] = safe_ratio_nb(ts[T_GROSS_PROFIT], -ts[T_GROSS_LOSS])
        out[TR_EXPECTANCY] = ts[T_SUM_PNL] / n
        out[TR_AVG_RETURN] = ts[T_SUM_RET] / n
    return out
