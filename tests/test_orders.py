"""The order model: orders as records with ids and a status, the one booking path, stops as
orders, exchange precision and partial fills, each against hand-computed values."""

import functools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework import enums, sim_nb, trades_nb
from framework.backtest import Backtest
from framework.orders import TRANSITIONS, check_transitions, client_order_id, final_orders
from framework.runner import BarStepper
from framework.settings import SimSettings
from strategies import STRATEGIES
from tests.records import assert_records_equal
from tests.scripted import Scripted
from tests.test_sim import FLAT, bars, run

LONG, EXIT, SHORT = 1, 2, 3


def two(rows_a, rows_b, **settings):
    settings.setdefault("init_cash", 1000.0)
    settings.setdefault("fees", 0.0)
    return Backtest(Scripted(), {"A": bars(rows_a), "B": bars(rows_b)}, **settings).run()


# --- the booking path ------------------------------------------------------------------------

def test_external_fills_book_cash_position_average_price_pnl_and_trades_by_hand():
    """Five broker fills: a buy, a partial add with the fee in the base currency, a partial
    exit, a sell that reverses to a short, the short's cover. Every number below is computed
    by hand from the fills."""
    p = SimSettings(init_cash=10_000.0).vector(365.0)
    s = BarStepper(Scripted(), p)
    flat_bar = (100.0, 100.0, 100.0, 100.0, 0.0)

    def fill(side, qty, price, fee, ccy="quote"):
        s.step(s.t, *flat_bar)  # a bar between fills: fills carry increasing bar numbers
        s.book_fill(0, s.t, side, qty, price, fee, ccy)

    fill(+1, 1.0, 100.0, 0.1)
    assert (s.cash, s.positions[0], s.entry_prices[0], s.realized_pnl[0]) == (9899.9, 1.0, 100.0, -0.1)

    fill(+1, 0.5, 110.0, 0.0005, "base")  # receives 0.4995; the fee is worth 0.055 at 110
    avg = (1.0 * 100.0 + 0.4995 * 110.0) / 1.4995
    assert s.cash == pytest.approx(9899.9 - 55.0, abs=1e-9)
    assert s.positions[0] == pytest.approx(1.4995, abs=1e-12)
    assert s.entry_prices[0] == pytest.approx(avg, rel=1e-12)
    assert s.realized_pnl[0] == pytest.approx(-0.1 - 0.055, abs=1e-12)

    fill(-1, 0.4995, 120.0, 0.05994)  # a partial exit: the average entry stays
    realized = -0.155 + (120.0 - avg) * 0.4995 - 0.05994
    assert s.positions[0] == pytest.approx(1.0, abs=1e-12)
    assert s.entry_prices[0] == pytest.approx(avg, rel=1e-12)
    assert s.realized_pnl[0] == pytest.approx(realized, abs=1e-9)

    fill(-1, 1.5, 90.0, 0.135)  # closes the 1.0 long and opens a 0.5 short at 90
    realized += (90.0 - avg) * 1.0 - 0.135
    assert s.positions[0] == pytest.approx(-0.5, abs=1e-12)
    assert s.entry_prices[0] == 90.0
    assert s.realized_pnl[0] == pytest.approx(realized, abs=1e-9)

    fill(+1, 0.5, 80.0, 0.04)  # covers the short: +5 on price
    realized += 5.0 - 0.04
    cash = 10_000.0 - 100.1 - 55.0 + (59.94 - 0.05994) + (135.0 - 0.135) - (40.0 + 0.04)
    assert s.positions[0] == 0.0
    assert s.cash == pytest.approx(cash, abs=1e-9)
    assert s.realized_pnl[0] == pytest.approx(realized, abs=1e-9)
    assert s.realized_pnl[0] == pytest.approx(s.cash - 10_000.0, abs=1e-9)  # flat: all of it realised

    trades = s.trades()
    assert len(trades) == 2
    long, short = trades
    exit_avg = (0.4995 * 120.0 + 1.0 * 90.0) / 1.4995
    entry_fees, exit_fees = 0.1 + 0.055, 0.05994 + 0.135 * (1.0 / 1.5)
    gross = (120.0 - avg) * 0.4995 + (90.0 - avg) * 1.0
    assert (long["direction"], long["entry_bar"], long["exit_bar"], long["n_fills"]) == (1, 0, 3, 4)
    assert long["qty"] == pytest.approx(1.4995, abs=1e-12)
    assert long["entry_price"] == pytest.approx(avg, rel=1e-12)
    assert long["exit_price"] == pytest.approx(exit_avg, rel=1e-12)
    assert long["entry_fees"] == pytest.approx(entry_fees, abs=1e-12)
    assert long["exit_fees"] == pytest.approx(exit_fees, abs=1e-12)
    assert long["pnl"] == pytest.approx(gross - entry_fees - exit_fees, abs=1e-9)
    assert (short["direction"], short["entry_bar"], short["exit_bar"], short["n_fills"]) == (-1, 3, 4, 2)
    assert (short["qty"], short["entry_price"], short["exit_price"]) == (0.5, 90.0, 80.0)
    assert short["entry_fees"] == pytest.approx(0.135 * 0.5 / 1.5, abs=1e-12)
    assert short["pnl"] == pytest.approx(5.0 - 0.045 - 0.04, abs=1e-12)
    assert long["pnl"] + short["pnl"] == pytest.approx(s.cash - 10_000.0, abs=1e-9)
    # the backtester's replay books the recorded fills with the same arithmetic
    cash_path, pos_path = sim_nb.replay_fills_nb(s.fills, s.t, np.zeros(1, dtype=np.int64), 1, 10_000.0)
    assert cash_path[-1, 0] == s.cash and pos_path[-1, 0] == 0.0


def test_book_fill_refuses_bad_numbers_in_the_words_of_its_keywords():
    s = BarStepper(Scripted(), SimSettings().vector(365.0))
    with pytest.raises(ValueError, match="fee_currency must be 'quote' or 'base'"):
        s.book_fill(0, 0, 1, 1.0, 100.0, 0.1, "BNB")
    with pytest.raises(ValueError, match="qty > 0"):
        s.book_fill(0, 0, 1, 0.0, 100.0, 0.1)
    with pytest.raises(ValueError, match="side must be"):
        s.book_fill(0, 0, 2, 1.0, 100.0, 0.1)
    with pytest.raises(ValueError, match="col must be a column index in 0..0"):
        s.book_fill(1, 0, 1, 1.0, 100.0, 0.1)
    assert len(s.fills) == 0 and s.cash == 10_000.0


@functools.cache
def _stops_run(name):
    return Backtest(STRATEGIES[name](), "BTC_USDT-1d", allow_short=True, sl_pct=0.05, fees=0.001).run()


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_partial_fills_book_like_the_whole_fill(data):
    """Split every fill of a backtest into random parts (fee pro rata): cash, positions and
    the trades (entry, exit, pnl) equal the whole fills' to rounding; each trade has as many
    fills as its parts."""
    result = _stops_run(data.draw(st.sampled_from(sorted(STRATEGIES))))
    whole = result.fill_records
    parts = data.draw(st.lists(st.integers(1, 4), min_size=len(whole), max_size=len(whole)))
    split = []
    for f, k in zip(whole, parts, strict=True):
        w = np.array(data.draw(st.lists(st.floats(0.1, 1.0), min_size=k, max_size=k)))
        w /= w.sum()
        for share in w:
            part = f.copy()
            part["qty"] = f["qty"] * share
            part["fees"] = f["fees"] * share
            split.append(part)
    split = np.array(split, dtype=enums.fill_dt)
    n = len(result.index)
    groups = np.zeros(1, dtype=np.int64)
    cash_a, pos_a = sim_nb.replay_fills_nb(whole, n, groups, 1, 10_000.0)
    cash_b, pos_b = sim_nb.replay_fills_nb(split, n, groups, 1, 10_000.0)
    np.testing.assert_allclose(cash_b, cash_a, rtol=1e-9, atol=1e-9)  # all in: cash near 0
    np.testing.assert_allclose(pos_b, pos_a, atol=1e-9 * np.abs(pos_a).max())
    close = np.ascontiguousarray(result.close[-1])
    ta = trades_nb.trades_from_fills_nb(whole, 1, n - 1, close)
    tb = trades_nb.trades_from_fills_nb(split, 1, n - 1, close)
    assert len(ta) == len(tb) > 3
    for field in ("entry_price", "exit_price", "qty", "pnl", "entry_fees", "exit_fees"):
        np.testing.assert_allclose(tb[field], ta[field], rtol=1e-9, atol=1e-9, err_msg=field)
    for field in ("entry_bar", "exit_bar", "direction", "exit_reason"):
        np.testing.assert_array_equal(tb[field], ta[field], err_msg=field)
    assert tb["n_fills"].sum() == len(split)


# --- orders as records ------------------------------------------------------------------------

def test_every_order_has_an_id_a_type_and_a_final_status():
    res = run([(100, 101, 99, 100, LONG), (102, 103, 101, 102, 0), (104, 106, 103, 105, EXIT), FLAT],
              fees=0.0)
    o = res.orders
    assert list(o["client_order_id"]) == ["scripted.backtest.0.0", "scripted.backtest.0.1"]
    assert list(o["side"]) == ["buy", "sell"] and list(o["status"]) == ["filled", "filled"]
    assert list(o["order_type"]) == ["market", "market"]
    assert list(o["created"]) == [res.index[0], res.index[2]]
    assert list(o["updated"]) == [res.index[1], res.index[3]]
    # the entry asked for a notional, sized into a quantity at its fill
    assert o["notional"].iloc[0] == 1000.0 and np.isnan(o["notional"].iloc[1])
    assert o["qty"].iloc[0] == o["filled_qty"].iloc[0] == pytest.approx(1000.0 / 102.0)
    assert np.isnan(res.events["qty"].iloc[0])  # at its creation the quantity was not known yet
    assert list(o["avg_price"]) == [102.0, 100.0]
    # each fill names its order
    assert list(res.fills["client_order_id"]) == list(o["client_order_id"])


def test_rejected_orders_say_why_no_cash_cooldown_and_halt():
    # no cash: A goes all in; B's entry finds no cash at its fill
    res = two([(100, 101, 99, 100, LONG), FLAT, FLAT, FLAT], [FLAT, (100, 101, 99, 100, LONG), FLAT, FLAT],
              cash_sharing=True)
    o = res.orders.set_index("instrument")
    assert o.loc["A", "status"] == "filled"
    assert (o.loc["B", "status"], o.loc["B", "reject_reason"], o.loc["B", "updated"]) == (
        "rejected", "no_cash", res.index[2])

    # cooldown: stopped out at bar 1, entries at the closes of bars 1 and 2 are refused, bar 4's is not
    rows = [(100, 101, 99, 100, LONG), (100, 101, 94, 96, LONG), (96, 97, 95, 96, LONG), FLAT,
            (96, 97, 95, 96, LONG), FLAT]
    o = run(rows, fees=0.0, sl_pct=0.05, cooldown_bars=3).orders
    assert list(zip(o["order_type"], o["status"], o["reject_reason"], o["reason"], strict=True)) == [
        ("market", "filled", "", "signal"),
        ("stop", "filled", "", "stop_loss"),
        ("market", "rejected", "cooldown", "signal"),
        ("market", "rejected", "cooldown", "signal"),
        ("market", "filled", "", "signal"),
        ("stop", "created", "", "stop_loss"),  # still working at the end
    ]

    # halt: a 15 % drop breaches max_drawdown=0.1 at bar 1's close; later entries are refused
    rows = [(100, 101, 99, 100, LONG), (100, 101, 84, 85, 0), (85, 86, 84, 85, LONG), FLAT]
    res = run(rows, fees=0.0, max_drawdown=0.1)
    o = res.orders
    assert list(zip(o["side"], o["status"], o["reject_reason"], o["reason"], strict=True)) == [
        ("buy", "filled", "", "signal"),
        ("sell", "filled", "", "max_drawdown"),
        ("buy", "rejected", "halted", "signal"),
    ]
    halts = res.events[res.events["event"] == "halt"]
    assert list(halts["time"]) == [res.index[1]]


def test_max_positions_and_daily_loss_rejections_and_an_expired_limit():
    res = two([(100, 101, 99, 100, LONG), FLAT, FLAT], [(100, 101, 99, 100, LONG), FLAT, FLAT],
              cash_sharing=True, max_positions=1, size=0.5)
    assert list(res.orders["reject_reason"]) == ["", "max_positions"]
    # a buy limit 5 % under the close that the next bar does not reach expires after one bar
    o = run([(100, 101, 99, 100, 11), (100, 101, 99, 100, 0), FLAT],
            Scripted(offset=-0.05), fees=0.0).orders
    assert list(zip(o["order_type"], o["status"], o["price"], strict=True)) == [("limit", "expired", 95.0)]


def test_stops_and_targets_are_orders_attached_to_the_position():
    rows = [(100, 101, 99, 100, LONG), (100, 104, 99, 103, 0), (103, 111, 102, 110, 0), FLAT]
    res = run(rows, fees=0.0, sl_pct=0.05, tp_pct=0.1)
    o = res.orders
    assert list(zip(o["order_type"], o["reason"], o["status"], o["reject_reason"], strict=True)) == [
        ("market", "signal", "filled", ""),
        ("stop", "stop_loss", "cancelled", "position_closed"),  # one cancels the other
        ("take_profit", "take_profit", "filled", ""),
    ]
    assert o["trigger"].iloc[1] == pytest.approx(95.0) and o["trigger"].iloc[2] == pytest.approx(110.0)
    assert o["side"].iloc[1] == o["side"].iloc[2] == "sell"
    assert res.fills["client_order_id"].iloc[1] == o["client_order_id"].iloc[2]


def test_a_trailing_stop_order_follows_the_best_price_bar_by_bar():
    rows = [(100, 101, 99, 100, LONG), (100, 104, 99, 103, 0), (103, 108, 102, 107, 0),
            (107, 107.5, 104, 105, 0), (105, 106, 100, 101, 0), FLAT]
    res = run(rows, fees=0.0, trail_pct=0.05)
    ev = res.events
    stop_events = ev[ev["order_type"] == "stop"]
    # placed at 100 * 0.95 after the entry, moved with the highs 104 and 108 (not 107.5 < 108)
    assert list(stop_events["event"]) == ["order", "amended", "amended", "order"]
    np.testing.assert_allclose(stop_events["trigger"], [95.0, 104 * 0.95, 108 * 0.95, 108 * 0.95])
    assert stop_events["status"].iloc[-1] == "filled"
    assert res.fills["price"].iloc[-1] == pytest.approx(108 * 0.95)  # bar 4's low 100 reaches 102.6


def test_exchange_precision_rounds_and_rejects_like_an_exchange():
    rows = [(100, 101, 99, 100, LONG), (103, 104, 102, 103, 0), FLAT]
    res = run(rows, fees=0.0, qty_step=0.01, sl_pct=0.0333, price_tick=0.5)
    f = res.fills
    assert f["qty"].iloc[0] == pytest.approx(9.70, rel=1e-12)  # 1000 / 103 = 9.7087 rounded down
    assert res.orders["trigger"].iloc[1] == 99.5  # 103 * (1 - 0.0333) = 99.57, to the nearest 0.5
    # a 3-unit order under a minimum quantity of 0.05 at 100: 0.03 of it, rejected
    o = run(rows, fees=0.0, sizing="cash", size=3.0, min_qty=0.05).orders
    assert (o["status"].iloc[0], o["reject_reason"].iloc[0]) == ("rejected", "below_min_qty")
    o = run(rows, fees=0.0, sizing="cash", size=5.0, min_notional=10.0).orders
    assert (o["status"].iloc[0], o["reject_reason"].iloc[0]) == ("rejected", "below_min_notional")
    # a buy limit at 100 * (1 - 0.0123) = 98.77 is placed on the tick below: 98.5
    o = run([(100, 101, 99, 100, 11), (99, 100, 98, 99, 0), FLAT], Scripted(offset=-0.0123),
            fees=0.0, price_tick=0.5).orders
    assert o["price"].iloc[0] == 98.5 and o["status"].iloc[0] == "filled"


def test_precision_settings_are_checked_by_keyword():
    for name in ("min_qty", "qty_step", "price_tick", "min_notional"):
        with pytest.raises(ValueError, match=name):
            SimSettings(**{name: -1.0})


def test_an_emergency_stop_cancels_stop_orders_at_once():
    script = [(100, 101, 99, 100, LONG), (100, 102, 99, 101, 0), (101, 102, 100, 101, 0), FLAT]
    data = bars(script)
    res = Backtest(Scripted(), data, init_cash=1000.0, fees=0.0, sl_pct=0.05, tp_pct=0.2,
                   emergency_at=data.index[2]).run()
    o = res.orders
    assert list(zip(o["order_type"], o["reason"], o["status"], o["reject_reason"], strict=True)) == [
        ("market", "signal", "filled", ""),
        ("stop", "stop_loss", "cancelled", "halted"),
        ("take_profit", "take_profit", "cancelled", "halted"),
        ("market", "emergency_stop", "filled", ""),
    ]
    assert list(o["updated"])[1:3] == [res.index[1]] * 2  # cancelled when raised, before bar 2
    assert list(res.events["event"]).count("emergency_stop") == 1


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_order_of_a_bundled_strategy_follows_the_state_machine(name):
    res = Backtest(STRATEGIES[name](), "ETH_USDT-1h", allow_short=True, sl_pct=0.02, tp_pct=0.05,
                   trail_pct=0.03, cooldown_bars=5, daily_loss=0.03, max_drawdown=0.6).run()
    ev = res.event_records
    assert check_transitions(ev) == []
    orders = final_orders(ev)
    statuses = set(enums.STATUS_NAMES[s] for s in orders["status"])
    assert {"filled", "cancelled", "rejected"} <= statuses
    # every fill names a filled order of its column, and the filled quantity adds up
    filled = {(int(o["col"]), int(o["order_id"])): o for o in orders if o["status"] == enums.STATUS_FILLED}
    f = res.fill_records
    assert {(int(c), int(i)) for c, i in zip(f["col"], f["order_id"], strict=True)} == set(filled)
    for (col, oid), o in filled.items():
        mine = f[(f["col"] == col) & (f["order_id"] == oid)]
        assert mine["qty"].sum() == pytest.approx(o["filled_qty"], rel=1e-12)
    # a rejected or cancelled order always says why; no other does
    says_why = orders["reject"] != enums.REJECT_NONE
    assert np.array_equal(says_why, np.isin(orders["status"], [enums.STATUS_REJECTED, enums.STATUS_CANCELLED]))


def test_the_state_machine_is_closed_and_client_order_ids_fit_an_exchange():
    statuses = set(enums.STATUS_NAMES)
    assert set(TRANSITIONS) | {s for t in TRANSITIONS.values() for s in t} == statuses
    cid = client_order_id("donchianbrea", "paper-2026", 999, 9_999_999)
    assert len(cid) <= 36  # Binance's limit for newClientOrderId
    with pytest.raises(ValueError, match="run_id must be 1 to 12"):
        Backtest("sma_cross", "BTC_USDT-1d", run_id="has space")
    events = np.zeros(2, dtype=enums.event_dt)
    events["status"] = [enums.STATUS_FILLED, enums.STATUS_CREATED]
    assert check_transitions(events) == ["order (0, 0) starts as filled", "order (0, 0): filled -> created"]


def test_step_returns_its_events_and_the_stepper_keeps_every_order():
    bt = Backtest(Scripted(), bars([(100, 101, 99, 100, LONG), (100, 101, 99, 100, EXIT), FLAT]),
                  init_cash=1000.0, fees=0.0)
    s = BarStepper(Scripted(), bt.sim_vector(), run_id="paper1")
    out = [s.step(int(t.value // 86_400_000_000_000), *row) for t, row in zip(
        bt.index, bt.frames["asset"][["open", "high", "low", "close", "volume"]].to_numpy(), strict=True)]
    assert [len(x.fills) for x in out] == [0, 1, 1]
    assert [list(x.events["status"]) for x in out] == [
        [enums.STATUS_CREATED], [enums.STATUS_FILLED, enums.STATUS_CREATED], [enums.STATUS_FILLED]]
    assert s.client_order_id(0, 1) == "scripted.paper1.0.1"
    assert list(s.orders["status"]) == [enums.STATUS_FILLED] * 2
    assert_records_equal(s.events, bt.run().event_records)
    assert isinstance(bt.run().orders, pd.DataFrame)


# --- entries blocked (a live runner's pause or stale feed) -------------------------------------

def test_blocked_entries_are_rejected_exits_still_fill_and_the_block_survives_a_snapshot():
    """Long at bar 0 fills at bar 1's open; entries are then blocked: the exit signal still
    fills, a new long is rejected with ``entries_blocked``; the block is in the snapshot; once
    lifted, the next long fills again."""
    p = SimSettings(init_cash=1000.0, fees=0.0).vector(365.0)
    s = BarStepper(Scripted(), p)
    s.step(0, 100, 101, 99, 100, LONG)
    s.step(1, 100, 101, 99, 100, 0)
    assert s.positions[0] > 0.0
    s.block_entries(True)
    assert s.entries_blocked
    s.step(2, 100, 101, 99, 100, EXIT)
    s.step(3, 100, 101, 99, 100, LONG)  # the exit fills at this open; the long is refused
    assert s.positions[0] == 0.0
    out = s.step(4, 100, 101, 99, 100, 0)
    assert s.positions[0] == 0.0 and len(out.fills) == 0
    rejected = [o for o in s.orders if o["status"] == enums.STATUS_REJECTED]
    assert [enums.REJECT_NAMES[o["reject"]] for o in rejected] == ["entries_blocked"]

    restored = BarStepper(Scripted(), p)
    restored.restore(s.snapshot())
    assert restored.entries_blocked
    restored.block_entries(False)
    restored.step(5, 100, 101, 99, 100, LONG)
    restored.step(6, 100, 101, 99, 100, 0)
    assert restored.positions[0] > 0.0
