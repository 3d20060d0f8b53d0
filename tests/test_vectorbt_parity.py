"""Cross-validation with vectorbt: SMA crossover, long only, all-in, fees, no stops.

vectorbt's ``Portfolio.from_signals`` is configured to the same semantics: the signal of bar t
executes at the open of bar t+1 (signals shifted by one bar, ``price=open``), all cash in
(``size=inf``), fees as a fraction of notional. The crossing rule is computed here with pandas
rolling means, independently of TradPal's kernels.
"""

import numpy as np
import pandas as pd
import pytest
import vectorbt as vbt

from framework.backtest import Backtest
from framework.synthetic import generate_ohlcv
from strategies.sma_cross import SmaCross
from tests.scripted import Scripted


def reference(data: pd.DataFrame, fast: int, slow: int, fees: float, init_cash: float):
    close = data["close"]
    diff = close.rolling(fast).mean() - close.rolling(slow).mean()
    prev = diff.shift(1)
    entries = (prev <= 0) & (diff > 0)
    exits = (prev >= 0) & (diff < 0)
    return vbt.Portfolio.from_signals(
        close,
        entries=entries.shift(1, fill_value=False),
        exits=exits.shift(1, fill_value=False),
        price=data["open"],
        size=np.inf,
        fees=fees,
        init_cash=init_cash,
        direction="longonly",
        freq="1h",
    )


@pytest.mark.parametrize(
    "seed, fast, slow, fees",
    [(1, 5, 20, 0.001), (2, 10, 50, 0.0), (3, 3, 8, 0.0025), (4, 20, 100, 0.001), (5, 7, 30, 0.0005)],
)
def test_sma_cross_matches_vectorbt(seed, fast, slow, fees):
    data = generate_ohlcv(4000, freq="1h", seed=seed)
    ours = Backtest(SmaCross(fast=fast, slow=slow), data, fees=fees, init_cash=10_000.0).run()
    pf = reference(data, fast, slow, fees, 10_000.0)
    theirs = pf.trades.records
    mine = ours.trade_records
    assert len(mine) == len(theirs) > 10
    np.testing.assert_array_equal(mine["entry_bar"], theirs["entry_idx"])
    np.testing.assert_array_equal(mine["exit_bar"], theirs["exit_idx"])
    np.testing.assert_allclose(mine["entry_price"], theirs["entry_price"], rtol=1e-9)
    np.testing.assert_allclose(mine["exit_price"], theirs["exit_price"], rtol=1e-9)
    np.testing.assert_allclose(mine["qty"], theirs["size"], rtol=1e-9)
    np.testing.assert_allclose(mine["pnl"], theirs["pnl"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours.equity.to_numpy(), pf.value().to_numpy(), rtol=1e-9)
    assert ours.equity.iloc[-1] == pytest.approx(pf.final_value(), rel=1e-9)


@pytest.mark.parametrize("gap_open", [110.0, 100.0, 95.0])
def test_all_in_reversal_is_sized_at_the_decision_unlike_vectorbt_after_a_favourable_gap(gap_open):
    """README "Fill semantics", sizing: a reversal's new position is the equity at the decision
    over the fill price, capped by the cash after the old position is closed; vectorbt's
    ``size=inf`` takes that whole cash. They agree unless the open gaps in the old position's
    favour beyond close * (1 + fees) / (1 - fees) (here 102.02)."""
    from tests.test_sim import LONG, SHORT, bars

    fees = 0.01
    rows = [(100, 101, 99, 100, LONG), (100, 101, 99, 100, SHORT), (gap_open, 111, 94, 105, 0), (105, 106, 104, 105, 0)]
    data = bars(rows)
    ours = Backtest(Scripted(), data, allow_short=True, fees=fees, init_cash=1000.0).run()
    code = data["volume"]
    pf = vbt.Portfolio.from_signals(
        data["close"], entries=(code == LONG).shift(1, fill_value=False),
        short_entries=(code == SHORT).shift(1, fill_value=False), price=data["open"], size=np.inf,
        fees=fees, init_cash=1000.0, freq="1D", upon_opposite_entry="reverse",
    )
    long_qty = 1000 / (100 * (1 + fees))
    equity = long_qty * 100  # at the decision close (bar 1)
    cash = long_qty * gap_open * (1 - fees)  # after selling the long at the gapped open
    ours_short = ours.fills["qty"].iloc[2]
    theirs_short = pf.orders.records["size"][1] - long_qty  # vectorbt books close + open as one order
    assert theirs_short == pytest.approx(cash / (gap_open * (1 + fees)), rel=1e-12)
    if gap_open > 100 * (1 + fees) / (1 - fees):
        assert ours_short == pytest.approx(equity / gap_open, rel=1e-12) and ours_short < 0.95 * theirs_short
        assert ours.cash.iloc[2] == pytest.approx(cash + ours_short * gap_open * (1 - fees), rel=1e-12)
    else:
        assert ours_short == pytest.approx(theirs_short, rel=1e-12)
        assert ours.equity.iloc[-1] == pytest.approx(pf.value().iloc[-1], rel=1e-12)
