"""TradPal fills replayed by vectorbt (``BacktestResult.to_vectorbt``). Imports vectorbt, which
is in the ``research`` extra, so it is imported only when asked for."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import vectorbt as vbt
from numba import njit
from vectorbt.portfolio import nb as vbt_nb
from vectorbt.portfolio.enums import NoOrder


@njit(cache=True)
def _fill_order_nb(c: Any, starts: np.ndarray, n_groups: int, col: np.ndarray, size: np.ndarray,
                   price: np.ndarray, fees: np.ndarray) -> Any:
    """The ``call_idx``-th fill of the bar ``c.i`` in the cash group ``c.group`` as an order of
    its signed quantity at its price and fee; ``-1`` when the bar's fills are done."""
    seg = c.i * n_groups + c.group
    k = starts[seg] + c.call_idx
    if k >= starts[seg + 1]:
        return -1, NoOrder
    # allow_partial=False and raise_reject: vectorbt refusing a fill TradPal made is an error
    return col[k], vbt_nb.order_nb(size=size[k], price=price[k], fixed_fees=fees[k],
                                   allow_partial=False, raise_reject=True)


def portfolio(result: Any) -> Any:
    """``vbt.Portfolio.from_order_func`` (flexible: several orders per bar) with one order per
    TradPal fill, in the order they happened: size = quantity signed by side, price = fill
    price, fixed fee = the fill's fee; the same initial cash per cash group."""
    n_bars, n_cols = len(result.index), len(result.columns)
    group_lens = np.diff(result.group_start)
    n_groups = len(group_lens)
    col_group = np.repeat(np.arange(n_groups), group_lens)
    f = result.fill_records
    seg = f["bar"] * n_groups + col_group[f["col"]]
    order = np.argsort(seg, kind="stable")  # the fills' own order inside a bar and group
    f = f[order]
    starts = np.searchsorted(seg[order], np.arange(n_bars * n_groups + 1)).astype(np.int64)
    close = pd.DataFrame(result.close, index=result.index, columns=result.columns)
    cash_sharing = bool(result.settings.cash_sharing) and n_cols > 1
    freq = pd.infer_freq(result.index) if n_bars > 2 else None
    return vbt.Portfolio.from_order_func(
        close, _fill_order_nb, starts, n_groups, f["col"].astype(np.int64),
        (f["side"] * f["qty"]).astype(np.float64), f["price"].astype(np.float64),
        f["fees"].astype(np.float64),
        flexible=True, max_orders=max(len(f), 1), init_cash=result.settings.init_cash,
        cash_sharing=cash_sharing, group_by=np.asarray(col_group) if cash_sharing else None,
        freq=freq or (result.index[1] - result.index[0]),
    )
