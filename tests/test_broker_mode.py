"""Broker-fill mode: a broker fills the step's orders and the runner books its fills with
``BarStepper.apply_fill``. Fed exactly the fills the paper matcher made, a broker-mode stepper
must end in the backtest's state to the last bit: one booking path, whoever fills."""

import zlib

import numpy as np
import pytest

from framework import enums
from framework.backtest import Backtest
from framework.runner import BarStepper, utc_day_numbers
from framework.synthetic import generate_ohlcv
from strategies import STRATEGIES
from tests.records import assert_records_equal
from tests.scripted import Scripted
from tests.test_sim import bars

FIELDS = ("open", "high", "low", "close", "volume")
SETTINGS = dict(allow_short=True, sl_pct=0.03, tp_pct=0.06, trail_atr=3.0, slippage=0.0005,
                cooldown_bars=3, max_trades_per_day=5, daily_loss=0.05, max_drawdown=0.5)


def broker_replay(bt: Backtest, fills: np.ndarray) -> tuple[BarStepper, np.ndarray]:
    """Step ``bt``'s bars in broker mode, booking each of ``fills`` (one column) during its bar,
    in order, before that bar's close is stepped; returns the stepper and its equity path."""
    day = utc_day_numbers(bt.index)
    frame = next(iter(bt.frames.values()))
    arrays = {f: frame[f].to_numpy() for f in FIELDS}
    s = BarStepper(bt.strategy, bt.sim_vector(), broker_fills=True)
    equity = np.empty(len(day))
    for t in range(len(day)):
        for f in fills[fills["bar"] == t]:
            s.apply_fill(0, int(f["order_id"]), f["qty"], f["price"], f["fees"], day=int(day[t]))
        s.step(day[t], *(arrays[x][t] for x in FIELDS))
        equity[t] = s.equity
    return s, equity


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_broker_fills_equal_to_the_paper_fills_give_the_backtest_exactly(name):
    data = generate_ohlcv(2000, freq="1h", seed=zlib.crc32(name.encode()) % 1000)
    bt = Backtest(STRATEGIES[name](), data, **SETTINGS)
    result = bt.run()
    paper = result.fill_records
    assert len(paper) > 10 and (paper["reason"] != enums.REASON_SIGNAL).any()  # stops fire too
    s, equity = broker_replay(bt, paper)
    np.testing.assert_array_equal(s.fills, paper)
    np.testing.assert_array_equal(equity, result.group_equity[:, 0])
    assert s.cash == result._cash_and_positions[0][-1, 0]
    # every order the broker filled ends filled, with the broker's quantity
    orders = s.orders
    filled = orders[orders["status"] == enums.STATUS_FILLED]
    assert len(filled) == len(np.unique(paper["order_id"]))


def test_partial_broker_fills_move_an_order_through_partially_filled_and_expire_the_rest():
    rows = [(100, 101, 99, 100, 1), (100, 101, 99, 100, 0), (100, 101, 99, 100, 2), (100, 101, 99, 100, 0),
            (100, 101, 99, 100, 0)]
    bt = Backtest(Scripted(), bars(rows), init_cash=1000.0, fees=0.0, sl_pct=0.05)
    day = utc_day_numbers(bt.index)
    s = BarStepper(Scripted(), bt.sim_vector(), broker_fills=True)
    frame = bt.frames["asset"]
    step = lambda t: s.step(day[t], *frame[list(FIELDS)].to_numpy()[t])  # noqa: E731
    step(0)  # decides a long: order 0, created
    assert [e["status"] for e in s.events] == [enums.STATUS_CREATED]
    out = s.apply_fill(0, 0, 4.0, 100.0, 0.4, day=int(day[1]), done=False)
    assert s.positions[0] == 4.0 and s.cash == 1000.0 - 400.0 - 0.4
    # the first fill opened the position: its stop order went out at 95
    assert [(e["order_id"], e["order_type"], e["status"]) for e in out.events] == [
        (1, enums.ORDER_STOP, enums.STATUS_CREATED), (0, enums.ORDER_MARKET, enums.STATUS_PARTIALLY_FILLED)]
    assert out.events[0]["trigger"] == 95.0
    s.apply_fill(0, 0, 1.0, 101.0, 0.1, day=int(day[1]), done=False)
    assert s.positions[0] == 5.0 and s.entry_prices[0] == pytest.approx((400.0 + 101.0) / 5.0)
    out = step(1)  # the rest of order 0 expires at the close
    assert [(e["order_id"], e["status"], e["filled_qty"]) for e in out.events] == [(0, enums.STATUS_EXPIRED, 5.0)]
    step(2)  # decides the exit: order 2 for the 5.0 held
    exit_order = s.events[-1]
    assert (exit_order["order_id"], exit_order["side"], exit_order["qty"]) == (2, -1, 5.0)
    s.apply_fill(0, 2, 2.0, 102.0, 0.0, day=int(day[3]), done=False)
    out = s.apply_fill(0, 2, 3.0, 103.0, 0.0, day=int(day[3]), done=False)
    # flat: the exit is filled and the stop order cancelled with it
    assert [(e["order_id"], e["status"], e["reject"]) for e in out.events] == [
        (2, enums.STATUS_FILLED, enums.REJECT_NONE), (1, enums.STATUS_CANCELLED, enums.REJECT_POSITION_CLOSED)]
    assert s.positions[0] == 0.0
    (trade,) = s.trades()
    assert trade["qty"] == 5.0 and trade["exit_price"] == pytest.approx((2 * 102.0 + 3 * 103.0) / 5.0)
    assert trade["n_fills"] == 4
    with pytest.raises(ValueError, match="order 7 is not a working order of column 0"):
        s.apply_fill(0, 7, 1.0, 100.0, 0.0, day=int(day[3]))
    paper = BarStepper(Scripted(), bt.sim_vector())
    with pytest.raises(ValueError, match="broker_fills=True"):
        paper.apply_fill(0, 0, 1.0, 100.0, 0.0, day=int(day[0]))


def test_a_broker_mode_snapshot_restores_its_working_orders():
    data = generate_ohlcv(600, freq="1h", seed=5)
    bt = Backtest(STRATEGIES["sma_cross"](), data, **SETTINGS)
    paper = bt.run().fill_records
    whole, _ = broker_replay(bt, paper)
    day = utc_day_numbers(bt.index)
    frame = next(iter(bt.frames.values()))
    t0 = int(paper["bar"][len(paper) // 2])  # a fill's bar: orders are working there
    first = BarStepper(bt.strategy, bt.sim_vector(), broker_fills=True)
    second = BarStepper(bt.strategy, bt.sim_vector(), broker_fills=True)
    for s, (a, b) in ((first, (0, t0)), (second, (t0, len(day)))):
        if s is second:
            s.restore(first.snapshot())
        for t in range(a, b):
            for f in paper[paper["bar"] == t]:
                s.apply_fill(0, int(f["order_id"]), f["qty"], f["price"], f["fees"], day=int(day[t]))
            s.step(day[t], *frame[list(FIELDS)].to_numpy()[t])
    assert_records_equal(second.events, whole.events)
    np.testing.assert_array_equal(second.fills, whole.fills)
