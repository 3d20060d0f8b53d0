"""vectorbt's ``Portfolio.from_signals`` set up to follow TradPal's fill rules (README "Fill
semantics"), as an independent model for long runs.

vectorbt and TradPal differ in four conventions; each is emulated here, not ignored:

* **Stops checked in the entry bar.** vectorbt checks stops only from the bar after an order,
  TradPal from the entry bar on (the entry happened at its open). Each bar *t* therefore becomes
  two vectorbt rows: a *fill row* ``2t`` where the orders decided at the close of *t-1* execute
  at ``open[t]`` (its open/high/low/close are NaN, so no stop can trigger there and the trailing
  stop's best price does not move), then a *bar row* ``2t+1`` with the real OHLC where stops,
  targets and trailing stops are checked -- including the entry bar's -- and the close is marked.
  Orders decided at a close fill before that bar's stops are checked, as in TradPal.
* **Trailing from the entry bar.** With that layout vectorbt's trailing stop starts at the fill
  price, is checked against the entry bar, and only then takes the entry bar's high/low as its
  best price: the previous bars', never the current bar's (TradPal's rule).
* **Take-profit without slippage.** vectorbt applies one slippage to every stop exit
  (``stop_exit_price="stopmarket"``: at the level, or the open when gapped through, less
  slippage). Stop-losses take slippage in TradPal, targets do not, so the model runs again with
  slippage 0 on the bar rows where vectorbt's first run took a take-profit, until those rows
  stop changing (an exit price changes cash, never the timing of later stops).
* **Sizing at the decision.** TradPal sizes an entry at the decision close (``notional = size x
  equity``), takes ``qty = notional / fill price`` and caps it by the cash; vectorbt's
  ``size=inf`` takes all the cash at the fill. Where the decision quantity is smaller (a
  reversal after a favourable gap, a fraction below 1, a second instrument of a cash group),
  the model passes that quantity as the order's amount and runs again, until no entry's amount
  changes (each run fixes at least the earliest entry whose decision equity was still wrong).

Not emulated, so not used with this model: limit and stop entries, risk and volatility sizing,
the risk limits, ATR stops, both ``sl_pct`` and ``trail_pct`` at once (vectorbt has one stop
that is fixed or trailing), and shorts inside a cash-sharing group (TradPal reserves twice the
other columns' short notional at their last close; vectorbt reserves it at their entry price).
Those are checked against ``tests/reference_sim.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import vectorbt as vbt

from framework.enums import REASON_STOP_LOSS, REASON_TAKE_PROFIT, REASON_TRAILING_STOP

MAX_RUNS = 400  # bound on the fixed-point iterations (each fixes at least one entry)


@dataclass
class ModelTrades:
    """Trades of the model, in TradPal's bar numbering (``col, direction, entry_bar, ...``)."""

    records: pd.DataFrame
    equity: np.ndarray  # (bars, groups) equity at each bar's close
    runs: int


def _interleave(fill_rows: np.ndarray, bar_rows: np.ndarray) -> np.ndarray:
    out = np.empty((2 * fill_rows.shape[0],) + fill_rows.shape[1:], dtype=fill_rows.dtype)
    out[0::2] = fill_rows
    out[1::2] = bar_rows
    return out


def run_model(
    o: np.ndarray,
    h: np.ndarray,
    l: np.ndarray,
    c: np.ndarray,
    long_entry: np.ndarray,
    short_entry: np.ndarray,
    long_exit: np.ndarray,
    short_exit: np.ndarray,
    *,
    init_cash: float = 10_000.0,
    fees: float = 0.0,
    slippage: float = 0.0,
    size: float = 1.0,
    sl_pct: float | None = None,
    tp_pct: float | None = None,
    trail_pct: float | None = None,
    allow_short: bool = False,
    cash_sharing: bool = False,
) -> ModelTrades:
    """Trades of TradPal's fill rules on (bars, columns) prices and decisions, through vectorbt.

    The decision arrays are at the close of each bar (``long_entry[t]``: the strategy said
    ``ACTION_LONG`` at bar *t*'s close); they execute at ``open[t+1]``. ``long_exit`` /
    ``short_exit`` close the position of that side only. With ``allow_short=False`` pass the
    short signals as ``long_exit`` (TradPal: a short signal closes the long).
    """
    if sl_pct is not None and trail_pct is not None:
        raise ValueError("the model has one stop: give sl_pct or trail_pct, not both")
    n, k = c.shape
    nan = np.full_like(c, np.nan)

    def shifted(decided: np.ndarray) -> np.ndarray:
        """Decision at the close of t -> fill row of bar t+1; bar rows carry no signal."""
        fill = np.zeros_like(decided, dtype=bool)
        fill[1:] = decided[:-1]
        return _interleave(fill, np.zeros_like(fill))

    # the same four signal arrays in every call (all-False shorts when long only): vectorbt
    # then compiles its simulation once per process
    no_short = np.zeros_like(short_entry, dtype=bool)
    signals = {
        "entries": shifted(long_entry),
        "exits": shifted(long_exit),
        "short_entries": shifted(short_entry if allow_short else no_short),
        "short_exits": shifted(short_exit if allow_short else no_short),
    }
    price = _interleave(o, c)  # fill rows execute at the open; bar rows only mark to the close
    stop = sl_pct if sl_pct is not None else trail_pct
    common = dict(
        close=_interleave(nan, c),
        open=_interleave(nan, o),
        high=_interleave(nan, h),
        low=_interleave(nan, l),
        price=price,
        fees=fees,
        init_cash=init_cash,
        cash_sharing=cash_sharing,
        group_by=True if cash_sharing else None,
        upon_opposite_entry="reverse",
        sl_stop=np.nan if stop is None else stop,
        sl_trail=trail_pct is not None,
        tp_stop=np.nan if tp_pct is None else tp_pct,
        stop_entry_price="fillprice",
        stop_exit_price="stopmarket",
        size_type="amount",
        min_size=0.0,
        call_seq="default",
        **signals,
    )
    amounts = np.full((2 * n, k), np.inf)
    slip = np.full((2 * n, k), float(slippage))
    group_of = np.zeros(k, dtype=np.int64) if cash_sharing else np.arange(k)
    for runs in range(1, MAX_RUNS + 1):  # noqa: B007 (reported in the result)
        pf = vbt.Portfolio.from_signals(size=amounts.copy(), slippage=slip.copy(), **common)
        value = np.asarray(pf.value()).reshape(2 * n, -1)  # per group (or column)
        orders = pf.orders.values
        new_amounts = np.full_like(amounts, np.inf)
        new_slip = np.full_like(slip, float(slippage))
        pos = np.zeros(k)
        entry_price = np.full(k, np.nan)
        for rec in orders:  # records are in time order; rows within a column in call order
            row, col, qty, px, side = int(rec["idx"]), int(rec["col"]), rec["size"], rec["price"], rec["side"]
            signed = qty if side == 0 else -qty
            before = pos[col]
            pos[col] = before + signed
            if abs(pos[col]) <= 1e-12 * max(abs(before), 1e-300):
                pos[col] = 0.0
            if row % 2 == 1:  # a stop or target on a bar row: was it the take-profit?
                d = 1.0 if before > 0 else -1.0
                raw = px / (1.0 - slip[row, col] * d)  # the level or open before slippage
                if tp_pct is not None and (raw - entry_price[col] * (1.0 + d * tp_pct)) * d >= -1e-9 * raw:
                    new_slip[row, col] = 0.0
                continue
            opened = pos[col] != 0.0 and (before == 0.0 or np.sign(pos[col]) != np.sign(before))
            if not opened:
                continue
            entry_price[col] = px
            decision_equity = value[row - 1, group_of[col]]
            wanted = size * decision_equity / px  # TradPal: notional at the close / fill price
            if wanted < abs(pos[col]) * (1.0 - 1e-13) or np.isfinite(amounts[row, col]):
                new_amounts[row, col] = wanted
        if np.array_equal(new_amounts, amounts) and np.array_equal(new_slip, slip):
            break
        amounts, slip = new_amounts, new_slip
    else:
        raise AssertionError(f"vectorbt model did not settle in {MAX_RUNS} runs")
    trades = pf.trades.values
    rec = pd.DataFrame(
        {
            "col": trades["col"],
            "direction": np.where(trades["direction"] == 0, 1, -1),
            "qty": trades["size"],
            "entry_bar": trades["entry_idx"] // 2,
            "entry_price": trades["entry_price"],
            "exit_bar": trades["exit_idx"] // 2,
            "exit_price": trades["exit_price"],
            "pnl": trades["pnl"],
            # closed on a bar row: by a stop-loss, trailing stop or take-profit, not a signal
            "by_stop": (trades["exit_idx"] % 2 == 1) & (trades["status"] == 1),
        }
    ).sort_values(["col", "entry_bar"], kind="stable").reset_index(drop=True)
    return ModelTrades(rec, value[1::2], runs)


def assert_same_trades(ours: np.ndarray, theirs: pd.DataFrame, label: str) -> None:
    """TradPal's ``trade_dt`` records equal the model's trades one for one.

    Bars, side and whether a stop closed the trade exactly; entry and exit prices to rtol 1e-12
    (the same operations in the same order: open x (1 +- slippage), entry x (1 -+ stop), one
    rounding apart at most); quantities and pnl to rtol 1e-9 (cash booked in a different order
    of additions, compounded over hundreds of trades).
    """
    ours = pd.DataFrame(ours).sort_values(["col", "entry_bar"], kind="stable").reset_index(drop=True)
    ours["by_stop"] = np.isin(ours["exit_reason"], [REASON_STOP_LOSS, REASON_TRAILING_STOP, REASON_TAKE_PROFIT])
    keys = ["col", "entry_bar", "exit_bar", "direction", "by_stop"]
    n = min(len(ours), len(theirs))
    differs = (ours[keys].to_numpy()[:n] != theirs[keys].to_numpy()[:n]).any(axis=1)
    if differs.any() or len(ours) != len(theirs):
        i = int(np.argmax(differs)) if differs.any() else n
        show = [*keys, "entry_price", "exit_price"]
        raise AssertionError(
            f"{label}: {len(ours)} trades, oracle {len(theirs)}; first difference at trade {i}:\n"
            f"tradpal:\n{ours.iloc[max(i - 2, 0):i + 3][show]}\n"
            f"oracle:\n{theirs.iloc[max(i - 2, 0):i + 3][show]}"
        )
    for key, rtol, atol in (("entry_price", 1e-12, 0), ("exit_price", 1e-12, 0), ("qty", 1e-9, 0), ("pnl", 1e-9, 1e-9)):
        np.testing.assert_allclose(ours[key], theirs[key], rtol=rtol, atol=atol, err_msg=f"{label}: {key}")
