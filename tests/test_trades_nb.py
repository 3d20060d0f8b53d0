"""The streaming trade fold (framework.trades_nb) against the Backtest's trade records
(framework.trades_nb.trades_from_fills_nb) on random fill streams: partial entries and exits,
reversals, fees in the quote or the base currency, a position open at the end."""

import math

import numpy as np
import pytest

from framework import trades_nb as tn
from framework.enums import FEE_BASE, FEE_QUOTE, fill_dt
from framework.trades_nb import trades_from_fills_nb


def random_fills(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` fills of one column: a quarter close the position exactly, a quarter reverse it,
    the rest add to it or take part of it off; some pay their fee in the base currency."""
    fills = np.zeros(n, dtype=fill_dt)
    pos = 0.0
    for i in range(n):
        kind = rng.integers(4)
        price = float(rng.uniform(50.0, 150.0))
        if pos != 0.0 and kind == 0:  # close exactly (quote fee: the position returns to 0)
            side, qty, ccy = (-1 if pos > 0 else 1), abs(pos), FEE_QUOTE
        elif pos != 0.0 and kind == 1:  # reverse
            side, qty, ccy = (-1 if pos > 0 else 1), abs(pos) + float(rng.uniform(0.1, 2.0)), FEE_QUOTE
        else:
            side, qty = int(rng.choice([-1, 1])), float(rng.uniform(0.05, 1.5))
            ccy = FEE_BASE if rng.random() < 0.3 else FEE_QUOTE
        fee = qty * 0.001 if ccy == FEE_BASE else qty * price * 0.001
        fills[i] = (i, 0, i, side, qty, price, fee, ccy, 0, 0)
        moved = qty - fee if (ccy == FEE_BASE and side > 0) else (qty + fee if ccy == FEE_BASE else qty)
        pos = pos + moved if side > 0 else pos - moved
        if abs(pos) <= 1e-9 * qty:
            pos = 0.0
    return fills


@pytest.mark.parametrize("seed", range(40))
def test_fold_equals_the_trade_records(seed):
    rng = np.random.default_rng(seed)
    fills = random_fills(rng, int(rng.integers(1, 60)))
    last_close = float(rng.uniform(50.0, 150.0))
    records = trades_from_fills_nb(fills, 1, len(fills), np.array([last_close]))
    ts = np.zeros(tn.N_TRADE_STATE)
    for f in fills:
        tn.trade_fill_nb(ts, f)
    tn.trade_end_nb(ts, last_close)

    pnl, ret = records["pnl"], records["ret"]
    assert ts[tn.T_TRADES] == len(records)
    assert ts[tn.T_WINS] == (pnl > 0).sum()
    # sums in trade order, by plain loops here: equal only if every trade's pnl and ret are
    gross_profit = gross_loss = sum_pnl = sum_ret = 0.0
    for p, r in zip(pnl, ret):
        gross_profit += p if p > 0 else 0.0
        gross_loss += p if p < 0 else 0.0
        sum_pnl += p
        sum_ret += r
    assert (ts[tn.T_GROSS_PROFIT], ts[tn.T_GROSS_LOSS], ts[tn.T_SUM_PNL], ts[tn.T_SUM_RET]) == (
        gross_profit, gross_loss, sum_pnl, sum_ret)
    res = tn.trade_finalize_nb(ts)
    if len(records):
        assert res[tn.TR_WIN_RATE] == (pnl > 0).sum() / len(pnl)
        pf = res[tn.TR_PROFIT_FACTOR]
        if gross_loss < 0:
            assert pf == gross_profit / -gross_loss
        else:
            assert pf == math.inf if gross_profit > 0 else math.isnan(pf)


def test_the_streams_reach_every_case():
    """The random streams above hold partial exits, reversals, base fees and open ends."""
    n_fills, reversals, base, open_end = [], 0, 0, 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        fills = random_fills(rng, int(rng.integers(1, 60)))
        records = trades_from_fills_nb(fills, 1, len(fills), np.array([100.0]))
        n_fills.extend(records["n_fills"])
        reversals += int(((records["exit_bar"][:-1] == records["entry_bar"][1:])).sum())
        base += int((fills["fee_ccy"] == FEE_BASE).sum())
        open_end += int(len(records) and records["exit_bar"][-1] == len(fills))
    assert max(n_fills) > 2 and reversals > 10 and base > 50 and open_end > 5


def test_trade_stats_by_hand():
    """Win rate 2/4, profit factor (3 + 5) / 4, expectancy 4 / 4, as metrics.trade_stats gives."""
    ts = tn.trade_totals_1d_nb(np.array([3.0, -1.0, 5.0, -3.0]), np.array([0.03, -0.01, 0.05, -0.03]))
    res = tn.trade_finalize_nb(ts)
    assert (res[tn.TR_TRADES], res[tn.TR_WIN_RATE], res[tn.TR_PROFIT_FACTOR], res[tn.TR_EXPECTANCY]) == (4, 0.5, 2.0, 1.0)
    assert res[tn.TR_AVG_RETURN] == pytest.approx(0.01, abs=1e-15)
    assert np.isnan(tn.trade_finalize_nb(np.zeros(tn.N_TRADE_STATE))[tn.TR_WIN_RATE])
