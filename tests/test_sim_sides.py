"""Short-side exits, sell entries, ATR targets and trails, and the notional/exposure caps,
each against prices, quantities and cash computed by hand from the bars (README "Fill semantics").

Bars are (open, high, low, close, script code); the scripted strategy (tests/scripted.py) reads
its decision from the code: 1 long, 3 short, 2 exit, 0 nothing. A decision at bar t fills at t+1.
"""

import numpy as np
import pandas as pd
import pytest

from framework.backtest import Backtest
from framework.settings import SimSettings
from tests.scripted import Scripted
from tests.test_sim import bars, run

LONG, EXIT, SHORT = 1, 2, 3
FLAT = (100, 101, 99, 100, 0)
REL = 1e-12


def close_to(x):
    return pytest.approx(x, rel=REL)


def only_trade(res):
    assert len(res.trades) == 1
    return res.trades.iloc[0]


# ---------------------------------------------------------------------------------------------
# short side: stop-loss, take-profit, trailing stop
# ---------------------------------------------------------------------------------------------


def test_short_stop_loss_touched_inside_a_bar_fills_at_the_stop_plus_slippage():
    fees, slip = 0.01, 0.001
    rows = [(100, 101, 99, 100, SHORT), (100, 104, 99, 103, 0), (103, 111, 102, 108, 0), FLAT]
    res = run(rows, allow_short=True, fees=fees, slippage=slip, sl_pct=0.1)
    entry = 100 * (1 - slip)  # a sell at the open: slippage lowers the price
    qty = 1000 / (entry * (1 + fees))  # all in: the short plus its fee is margined from cash
    stop = entry * (1 + 0.1)  # 109.89: bar 1's high 104 stays below it, bar 2's high 111 reaches it
    exit_price = stop * (1 + slip)  # the buy-back pays slippage
    o = res.fills
    assert list(o["side"]) == ["sell", "buy"]
    assert list(o["reason"]) == ["signal", "stop_loss"]
    assert list(o["time"]) == [res.index[1], res.index[2]]
    assert o["price"].tolist() == [close_to(entry), close_to(exit_price)]
    assert o["qty"].tolist() == [close_to(qty), close_to(qty)]
    cash_short = 1000 + qty * entry * (1 - fees)
    assert res.cash.iloc[1] == close_to(cash_short)
    assert res.equity.iloc[1] == close_to(cash_short - qty * 103)  # marked at bar 1's close
    final = cash_short - qty * exit_price * (1 + fees)
    assert res.cash.iloc[-1] == close_to(final) and res.equity.iloc[-1] == close_to(final)
    t = only_trade(res)
    assert (t["side"], t["exit_reason"]) == ("short", "stop_loss")
    assert t["pnl"] == close_to(final - 1000)


def test_short_stop_loss_gapped_through_fills_at_the_open_plus_slippage():
    slip = 0.002
    rows = [(100, 101, 99, 100, SHORT), (100, 104, 99, 103, 0), (115, 118, 114, 116, 0), FLAT]
    t = only_trade(run(rows, allow_short=True, fees=0.0, slippage=slip, sl_pct=0.1))
    # stop at 100 * 0.998 * 1.1 = 109.78; bar 2 opens at 115, above it: filled at the open, not the stop
    assert (t["exit_reason"], t["exit_time"]) == ("stop_loss", pd.Timestamp("2024-01-03", tz="UTC"))
    assert t["exit_price"] == close_to(115 * (1 + slip))


def test_short_take_profit_fills_at_the_target_without_slippage():
    fees, slip = 0.01, 0.001
    rows = [(100, 101, 99, 100, SHORT), (100, 101, 95, 96, 0), (96, 97, 89, 92, 0), FLAT]
    res = run(rows, allow_short=True, fees=fees, slippage=slip, tp_pct=0.1)
    entry = 100 * (1 - slip)
    target = entry * (1 - 0.1)  # 89.91: bar 1's low 95 stays above it, bar 2's low 89 reaches it
    qty = 1000 / (entry * (1 + fees))
    t = only_trade(res)
    assert (t["side"], t["exit_reason"]) == ("short", "take_profit")
    assert t["exit_time"] == res.index[2]
    assert t["exit_price"] == close_to(target)
    assert res.fills["order_type"].tolist() == ["market", "take_profit"]
    final = 1000 + qty * entry * (1 - fees) - qty * target * (1 + fees)
    assert res.cash.iloc[-1] == close_to(final)
    assert t["pnl"] == close_to(final - 1000)


def test_short_take_profit_gapped_through_fills_at_the_better_open():
    rows = [(100, 101, 99, 100, SHORT), (100, 101, 95, 96, 0), (85, 88, 84, 86, 0), FLAT]
    t = only_trade(run(rows, allow_short=True, fees=0.0, slippage=0.001, tp_pct=0.1))
    assert (t["exit_reason"], t["exit_price"]) == ("take_profit", 85.0)  # the open, below the target


def test_short_stop_first_when_stop_and_target_touch_in_the_entry_bar():
    rows = [(100, 101, 99, 100, SHORT), (100, 111, 89, 100, 0), FLAT]
    t = only_trade(run(rows, allow_short=True, fees=0.0, sl_pct=0.1, tp_pct=0.1))
    assert (t["exit_reason"], t["exit_time"]) == ("stop_loss", pd.Timestamp("2024-01-02", tz="UTC"))
    assert t["exit_price"] == close_to(100 * 1.1)


def _short_trail_rows(last_bar):
    # entry at bar 1's open, 100
    return [
        (100, 101, 99, 100, SHORT),
        (100, 101, 90, 91, 0),  # stop 100 * 1.1 = 110, not reached; best low -> 90
        (91, 98, 80, 81, 0),  # stop 90 * 1.1 = 99 (not this bar's low 80: that would give 88 < 98)
        last_bar,  # best low 80 -> stop 88
        FLAT,
    ]


def test_short_trailing_stop_trails_the_previous_bars_best_low():
    slip = 0.001
    res = run(_short_trail_rows((81, 89, 80.5, 85, 0)), allow_short=True, fees=0.0, slippage=slip, trail_pct=0.1)
    entry = 100 * (1 - slip)
    t = only_trade(res)
    assert (t["side"], t["exit_reason"]) == ("short", "trailing_stop")
    assert t["exit_time"] == res.index[3]  # survived bar 2 (high 98 < 99)
    # the level trails the best low of bars 1-2 (80), and the best low starts at the entry price
    level = 80 * (1 + 0.1)
    assert t["exit_price"] == close_to(level * (1 + slip))
    qty = 1000 / entry
    assert res.cash.iloc[-1] == close_to(1000 + qty * entry - qty * level * (1 + slip))


def test_short_trailing_stop_gapped_through_fills_at_the_open():
    t = only_trade(run(_short_trail_rows((90, 92, 89, 91, 0)), allow_short=True, fees=0.0, trail_pct=0.1))
    assert (t["exit_reason"], t["exit_price"]) == ("trailing_stop", 90.0)  # opens above 88


def test_short_trailing_stop_starts_from_the_entry_price():
    # first bar: trail level is entry * 1.1 = 110 even though the entry bar's own low is 80
    rows = [(100, 101, 99, 100, SHORT), (100, 109, 80, 100, 0), (100, 112, 99, 100, 0), FLAT]
    t = only_trade(run(rows, allow_short=True, fees=0.0, trail_pct=0.1))
    # bar 2: the best low is now bar 1's 80 -> level 88, and bar 2 opens at 100, above it
    assert (t["exit_reason"], t["exit_time"], t["exit_price"]) == (
        "trailing_stop", pd.Timestamp("2024-01-03", tz="UTC"), 100.0)


def test_tighter_of_stop_loss_and_trailing_stop_binds_for_a_short():
    rows = _short_trail_rows((81, 89, 80.5, 85, 0))
    # sl 5 % above 100 = 105 binds at first; after bar 1 the trail (99, then 88) is tighter
    t = only_trade(run(rows, allow_short=True, fees=0.0, sl_pct=0.05, trail_pct=0.1))
    assert (t["exit_reason"], t["exit_price"]) == ("trailing_stop", close_to(88.0))
    # with a 1 % stop-loss (101) the stop-loss is tighter in bar 1 already; bar 1's high is 101
    t = only_trade(run(rows, allow_short=True, fees=0.0, sl_pct=0.01, trail_pct=0.1))
    assert (t["exit_reason"], t["exit_price"], t["exit_time"]) == (
        "stop_loss", close_to(101.0), pd.Timestamp("2024-01-02", tz="UTC"))


# ---------------------------------------------------------------------------------------------
# sell limit and sell stop entries
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bar1, expected_price",
    [
        ((100, 103, 99, 101, 0), 100 * (1 + 0.02)),  # high reaches the 102 limit: filled at the limit
        ((104, 105, 103, 104, 0), 104.0),  # opens above the limit: filled at the (better) open
        ((100, 101.5, 99, 100, 0), None),  # never reaches 102: the order expires
    ],
)
def test_sell_limit_entry(bar1, expected_price):
    fees = 0.01
    rows = [(100, 101, 99, 100, SHORT), bar1, FLAT, FLAT]
    res = run(rows, Scripted(order_type=1, offset=0.02), allow_short=True, fees=fees, slippage=0.005)
    if expected_price is None:
        assert len(res.fills) == 0
        assert (res.positions.iloc[:, 0] == 0).all() and res.cash.iloc[-1] == 1000
        return
    o = res.fills.iloc[0]
    qty = 1000 / (expected_price * (1 + fees))  # limits take no slippage
    assert (o["side"], o["order_type"], o["time"]) == ("sell", "limit", res.index[1])
    assert o["price"] == close_to(expected_price)
    assert o["qty"] == close_to(qty)
    assert res.positions.iloc[1, 0] == close_to(-qty)
    assert res.cash.iloc[1] == close_to(1000 + qty * expected_price * (1 - fees))


@pytest.mark.parametrize(
    "bar1, expected_price",
    [
        ((99, 100, 97, 98, 0), 100 * (1 - 0.02) * (1 - 0.01)),  # low reaches the 98 stop: stop less slippage
        ((96, 97, 95, 96, 0), 96 * (1 - 0.01)),  # gaps below the stop: the open less slippage
        ((99, 100, 98.5, 99, 0), None),  # never reaches 98
    ],
)
def test_sell_stop_entry(bar1, expected_price):
    rows = [(100, 101, 99, 100, SHORT), bar1, FLAT, FLAT]
    res = run(rows, Scripted(order_type=2, offset=-0.02), allow_short=True, fees=0.0, slippage=0.01)
    if expected_price is None:
        assert len(res.fills) == 0
        return
    o = res.fills.iloc[0]
    assert (o["side"], o["order_type"], o["time"]) == ("sell", "stop", res.index[1])
    assert o["price"] == close_to(expected_price)
    assert o["qty"] == close_to(1000 / expected_price)


def test_sell_limit_reverses_a_long_at_the_limit_price():
    rows = [(100, 101, 99, 100, LONG), (100, 101, 99, 100, SHORT), (101, 103, 100, 102, 0), FLAT]
    res = run(rows, Scripted(order_type=1, offset=0.01), allow_short=True, fees=0.0)
    # bar 0: buy limit at 101, bar 1 opens at 100 below it -> filled at 100; bar 1: sell limit at 101
    o = res.fills
    assert list(o["side"]) == ["buy", "sell", "sell"]
    assert list(o["time"]) == [res.index[1], res.index[2], res.index[2]]
    assert o["price"].tolist() == [100.0, close_to(101.0), close_to(101.0)]
    # the new short is sized at bar 1's close (equity 1000), not on the 1010 after the close-out
    assert o["qty"].tolist() == [close_to(10.0), close_to(10.0), close_to(1000 / 101)]


def test_sell_stop_when_shorts_are_disabled_closes_the_long_at_the_next_open():
    # long only: a short intent becomes a market exit, whatever order type it carried
    rows = [(100, 101, 99, 100, LONG), (100, 101, 99, 100, SHORT), (99, 100, 97, 98, 0), FLAT]
    res = run(rows, Scripted(order_type=2, offset=-0.02), fees=0.0)
    # buy stop at 98: bar 1 opens above it -> the open; the sell stop at 98 becomes a market exit
    # at bar 2's open 99 (as a stop it would have filled at 98, bar 2's low being 97)
    assert res.fills["price"].tolist() == [100.0, 99.0]
    assert res.fills["order_type"].tolist() == ["stop", "market"]
    assert res.fills["side"].tolist() == ["buy", "sell"]


# ---------------------------------------------------------------------------------------------
# ATR targets and trails (Wilder ATR, window 3: seed = mean true range of bars 1..3)
# ---------------------------------------------------------------------------------------------

ATR_ROWS = [
    (100, 102, 98, 100),  # bar 0: no previous close, no true range
    (100, 103, 99, 101),  # TR = max(4, |103 - 100|, |99 - 100|) = 4
    (101, 101, 95, 96),  # TR = max(6, |101 - 101|, |95 - 101|) = 6
    (99, 100, 99, 100),  # gap up: TR = max(1, |100 - 96|, |99 - 96|) = 4
    (100, 102, 100, 101),  # TR = max(2, |102 - 100|, |100 - 100|) = 2
]


def _atr_at_bar4():
    tr = [4.0, 6.0, 4.0, 2.0]
    atr = np.mean(tr[:3])  # seed at bar 3: 14 / 3
    atr += (tr[3] - atr) / 3  # Wilder: alpha = 1 / window
    assert atr == pytest.approx(34 / 9, rel=1e-14)
    return atr


def _check_wilder_atr_by_pandas():
    h = pd.Series([r[1] for r in ATR_ROWS], dtype=float)
    l_ = pd.Series([r[2] for r in ATR_ROWS], dtype=float)
    c = pd.Series([r[3] for r in ATR_ROWS], dtype=float)
    prev = c.shift()
    tr = pd.concat([h - l_, (h - prev).abs(), (l_ - prev).abs()], axis=1).max(axis=1, skipna=False)
    assert tr.tolist()[1:] == [4.0, 6.0, 4.0, 2.0]


def test_long_take_profit_at_atr_multiples_from_the_entry():
    _check_wilder_atr_by_pandas()
    atr = _atr_at_bar4()  # the ATR at the decision's close sets the target
    rows = [(*r, 0) for r in ATR_ROWS]
    rows[4] = (*ATR_ROWS[4], LONG)
    rows += [(101, 108.5, 100, 103, 0), (103, 110, 102, 109, 0), FLAT]
    res = run(rows, fees=0.0, atr_window=3, tp_atr=2.0)
    target = 101 + 2.0 * atr  # 108.555...: bar 5's high 108.5 falls short, bar 6's 110 reaches it
    t = only_trade(res)
    assert (t["entry_price"], t["exit_reason"], t["exit_time"]) == (101.0, "take_profit", res.index[6])
    assert t["exit_price"] == close_to(target)
    assert t["pnl"] == close_to(1000 / 101 * (target - 101))


def test_short_take_profit_at_atr_multiples_gapped_through():
    atr = _atr_at_bar4()
    rows = [(*r, 0) for r in ATR_ROWS]
    rows[4] = (*ATR_ROWS[4], SHORT)
    target = 101 - 2.0 * atr  # 93.444...
    rows += [(101, 102, 93.5, 95, 0), (92, 93, 91, 92, 0), FLAT]  # bar 5's low 93.5 misses it
    t = only_trade(run(rows, fees=0.0, atr_window=3, tp_atr=2.0, allow_short=True))
    assert target == pytest.approx(93.4444444444, rel=1e-10)
    assert (t["side"], t["exit_reason"], t["exit_price"]) == ("short", "take_profit", 92.0)  # the open


def test_short_trailing_stop_at_atr_multiples_fixed_at_the_entry():
    atr = _atr_at_bar4()
    dist = 1.5 * atr  # 5.667, fixed at the entry although the ATR keeps moving afterwards
    rows = [(*r, 0) for r in ATR_ROWS]
    rows[4] = (*ATR_ROWS[4], SHORT)
    rows += [
        (101, 102, 95, 96, 0),  # level 101 + dist = 106.67; best low -> 95
        (96, 100, 90, 91, 0),  # level 95 + dist = 100.67 > 100 (this bar's low 90 would give 95.67)
        (91, 96, 90.5, 95, 0),  # level 90 + dist = 95.67 <= 96: stopped
        FLAT,
    ]
    res = run(rows, fees=0.0, atr_window=3, trail_atr=1.5, allow_short=True)
    t = only_trade(res)
    assert (t["side"], t["exit_reason"], t["exit_time"]) == ("short", "trailing_stop", res.index[7])
    assert t["exit_price"] == close_to(90 + dist)
    assert res.cash.iloc[-1] == close_to(1000 + 1000 / 101 * (101 - (90 + dist)))


def test_long_trailing_stop_at_atr_multiples():
    atr = _atr_at_bar4()
    dist = 1.5 * atr
    rows = [(*r, 0) for r in ATR_ROWS]
    rows[4] = (*ATR_ROWS[4], LONG)
    rows += [
        (101, 108, 100, 107, 0),  # level 101 - dist = 95.33; best high -> 108
        (107, 109, 102.5, 104, 0),  # level 108 - dist = 102.33 < 102.5: survives; best -> 109
        (104, 105, 103, 104, 0),  # level 109 - dist = 103.33 >= 103: stopped
        FLAT,
    ]
    t = only_trade(run(rows, fees=0.0, atr_window=3, trail_atr=1.5))
    assert (t["exit_reason"], t["exit_price"]) == ("trailing_stop", close_to(109 - dist))


# ---------------------------------------------------------------------------------------------
# exposure and notional caps
# ---------------------------------------------------------------------------------------------


def _group(a, b, c, **settings):
    frames = {"A": bars(a), "B": bars(b), "C": bars(c)}
    settings.setdefault("init_cash", 1000.0)
    settings.setdefault("fees", 0.0)
    return Backtest(Scripted(), frames, cash_sharing=True, **settings).run()


def test_max_exposure_caps_the_gross_notional_of_a_cash_sharing_group():
    a = [(100, 101, 99, 100, LONG), (100, 101, 79, 80, 0), (80, 81, 79, 80, 0), (80, 81, 79, 80, 0)]
    b = [(50, 51, 49, 50, SHORT), (50, 51, 49, 50, 0), (50, 51, 49, 50, 0), (50, 51, 49, 50, 0)]
    c = [(20, 21, 19, 20, LONG), (20, 21, 19, 20, 0), (20, 21, 19, 20, 0), (20, 21, 19, 20, 0)]
    res = _group(a, b, c, size=0.5, max_exposure=0.8, allow_short=True)
    o = res.fills
    # bar 1 (decided at bar 0, equity 1000, room 0.8 * 1000 = 800, each wants 0.5 * 1000 = 500):
    #   A buys 500 / 100 = 5; B shorts (800 - 500) / 50 = 6: a short counts by its absolute notional;
    #   C: room 800 - 500 - 300 = 0, refused (signed exposure would have left it 600)
    assert o["instrument"].tolist() == ["A", "B"]
    assert o["side"].tolist() == ["buy", "sell"]
    assert o["qty"].tolist() == [close_to(5.0), close_to(6.0)]
    assert res.cash.iloc[1] == close_to(1000 - 500 + 300)
    assert res.equity.iloc[1] == close_to(800 + 5 * 80 - 6 * 50)
    # without the cap (smaller sizes, so the no-leverage rule does not bind either) C gets its
    # 0.3 * 1000 / 20 = 15: free cash 1000 - 2 * 300 (B's short proceeds and margin) = 400 >= 300
    o2 = _group(a, b, c, size=0.3, allow_short=True).fills
    assert o2["instrument"].tolist() == ["A", "B", "C"]
    assert o2["qty"].tolist() == [close_to(3.0), close_to(6.0), close_to(15.0)]


def test_max_exposure_room_follows_the_equity_at_the_decision():
    # A and B fill at bar 1; A falls to 80 at bar 1's close; C's entry decided then gets the room left
    a = [(100, 101, 99, 100, LONG), (100, 101, 79, 80, 0), (80, 81, 79, 80, 0), (80, 81, 79, 80, 0)]
    b = [(50, 51, 49, 50, LONG), (50, 51, 49, 50, 0), (50, 51, 49, 50, 0), (50, 51, 49, 50, 0)]
    c = [(20, 21, 19, 20, 0), (20, 21, 19, 20, LONG), (20, 21, 19, 20, 0), (20, 21, 19, 20, 0)]
    res = _group(a, b, c, size=0.5, max_exposure=0.8)
    o = res.fills
    # bar 1: A 500 / 100 = 5, B (800 - 500) / 50 = 6 -> cash 200
    # bar 1 close: equity 200 + 5 * 80 + 6 * 50 = 900; room 0.8 * 900 - 700 = 20 -> C 20 / 20 = 1
    assert o["instrument"].tolist() == ["A", "B", "C"]
    assert list(o["time"]) == [res.index[1], res.index[1], res.index[2]]
    assert o["qty"].tolist() == [close_to(5.0), close_to(6.0), close_to(1.0)]
    assert res.cash.iloc[-1] == close_to(180.0)
    assert res.equity.iloc[-1] == close_to(180 + 5 * 80 + 6 * 50 + 1 * 20)


def test_max_exposure_is_per_column_without_cash_sharing():
    a = [(100, 101, 99, 100, LONG), (100, 101, 99, 100, 0), FLAT]
    frames = {"A": bars(a), "B": bars(a)}
    res = Backtest(Scripted(), frames, init_cash=1000.0, fees=0.0, max_exposure=0.3).run()
    # two separate cash pools of 1000: each position is capped at 300, not the pair
    assert res.fills["qty"].tolist() == [close_to(3.0), close_to(3.0)]


def test_max_position_notional_caps_a_long_at_the_fill_price_with_fees_on_top():
    fees, slip = 0.01, 0.001
    rows = [(100, 101, 99, 100, LONG), (102, 103, 101, 102, 0), FLAT]
    res = run(rows, fees=fees, slippage=slip, max_position_notional=300.0)
    price = 102 * (1 + slip)
    o = res.fills.iloc[0]
    assert o["price"] == close_to(price)
    assert o["qty"] == close_to(300.0 / price)  # the notional cap, not the 1000 / (price * 1.01) cash cap
    assert o["fee"] == close_to(300.0 * fees)
    assert res.cash.iloc[1] == close_to(1000 - 300 - 3)


def test_max_position_notional_caps_a_short_and_a_limit_fill():
    fees = 0.01
    rows = [(100, 101, 99, 100, SHORT), (104, 105, 103, 104, 0), FLAT]
    res = run(rows, Scripted(order_type=1, offset=0.02), allow_short=True, fees=fees, max_position_notional=300.0)
    o = res.fills.iloc[0]
    assert (o["side"], o["price"]) == ("sell", 104.0)  # the sell limit at 102, gapped through
    assert o["qty"] == close_to(300.0 / 104)
    assert res.cash.iloc[1] == close_to(1000 + 300 - 3)


def test_max_position_notional_applies_per_position_in_a_group_and_only_when_binding():
    a = [(100, 101, 99, 100, LONG), (100, 101, 99, 100, 0), FLAT]
    b = [(50, 51, 49, 50, LONG), (50, 51, 49, 50, 0), (50, 51, 49, 50, 0)]
    c = [(20, 21, 19, 20, LONG), (20, 21, 19, 20, 0), (20, 21, 19, 20, 0)]
    res = _group(a, b, c, size=0.1, max_position_notional=300.0)
    # size 0.1 wants 100 per position, under the 300 cap
    assert res.fills["qty"].tolist() == [close_to(1.0), close_to(2.0), close_to(5.0)]
    res = _group(a, b, c, size=0.5, max_position_notional=300.0)
    # 500 wanted, 300 allowed, until the cash runs out: 1000 - 300 - 300 leaves 400 >= 300
    assert res.fills["qty"].tolist() == [close_to(3.0), close_to(6.0), close_to(15.0)]
    assert res.cash.iloc[-1] == close_to(100.0)


# ---------------------------------------------------------------------------------------------
# boolean and stop settings
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"allow_short": "yes"}, r"allow_short must be true or false \(a bool\), got 'yes'"),
        ({"allow_short": 1}, r"allow_short must be true or false \(a bool\), got 1"),
        ({"allow_short": None}, r"allow_short must be true or false \(a bool\), got None"),
        ({"cash_sharing": 1}, r"cash_sharing must be true or false \(a bool\), got 1"),
        ({"cash_sharing": "false"}, r"cash_sharing must be true or false \(a bool\), got 'false'"),
        ({"sl_pct": 0.0}, r"sl_pct must be in \(0, 1\) .*entry × \(1 − sl_pct\)\), got 0.0"),
        ({"sl_pct": 1.0}, r"sl_pct must be in \(0, 1\)"),
        ({"trail_pct": 1.0}, r"trail_pct must be in \(0, 1\) .*best × \(1 − trail_pct\)\), got 1.0"),
        ({"trail_pct": -0.1}, r"trail_pct must be in \(0, 1\)"),
        ({"tp_pct": 0.0}, r"tp_pct must be a finite number > 0, got 0.0"),
        ({"tp_pct": float("inf")}, r"tp_pct must be a finite number > 0"),
        ({"tp_pct": 1.0, "allow_short": True},
         r"tp_pct must be in \(0, 1\) \(with allow_short=True; a short's target sits at entry × \(1 − tp_pct\)\), got 1.0"),
    ],
)
def test_invalid_bool_and_stop_settings_name_the_setting(settings, message):
    with pytest.raises(ValueError, match=message):
        SimSettings(**settings)
    with pytest.raises(ValueError, match=message):
        Backtest(Scripted(), bars([FLAT, FLAT]), **settings)


def test_valid_bool_and_target_settings_are_accepted():
    assert SimSettings(allow_short=np.bool_(True), cash_sharing=np.bool_(False)).allow_short
    assert SimSettings(tp_pct=2.5).tp_pct == 2.5  # a long's target may be more than +100 %
    assert SimSettings(tp_pct=0.99, allow_short=True).tp_pct == 0.99


def test_cli_setting_strings_become_real_bools():
    from framework.settings import parse_setting

    parsed = dict(parse_setting(s) for s in ("allow_short=true", "cash_sharing=no", "tp_pct=0.5"))
    assert parsed == {"allow_short": True, "cash_sharing": False, "tp_pct": 0.5}
    s = SimSettings.build(**parsed)
    assert s.allow_short is True and s.cash_sharing is False
    with pytest.raises(ValueError, match="setting 'allow_short' takes true or false"):
        parse_setting("allow_short=maybe")


def test_cli_reports_a_bad_bool_setting(capsys):
    from framework.cli import main

    assert main(["backtest", "sma_cross", "--data", "BTC_USDT-1d", "--set", "allow_short=none"]) == 2
    assert "allow_short must be true or false" in capsys.readouterr().err
    assert main(["backtest", "sma_cross", "--data", "BTC_USDT-1d", "--set", "allow_short=true",
                 "--set", "tp_pct=1.5"]) == 2
    assert "tp_pct must be in (0, 1) (with allow_short=True" in capsys.readouterr().err


def test_short_proceeds_do_not_fund_longs_in_a_cash_sharing_group():
    # A shorts 0.5 * 1000 / 100 = 5 at bar 1: cash 1000 + 500 = 1500, of which the 500 proceeds
    # and another 500 of margin are not free. B and C each want 500 at bar 2's open of 100:
    # B gets (1500 - 2 * 500) / 100 = 5 (cash 1000), C gets (1000 - 2 * 500) / 100 = 0.
    # Gross exposure 5 * 100 + 5 * 100 = 1000 = equity: no leverage.
    a = [(100, 101, 99, 100, SHORT), FLAT, FLAT, FLAT]
    b = [FLAT, (100, 101, 99, 100, LONG), FLAT, FLAT]
    res = _group(a, b, b, size=0.5, allow_short=True)
    assert res.positions.iloc[-1].tolist() == [-5.0, 5.0, 0.0]
    assert res.cash.iloc[-1] == 1000.0
    assert res.equity.iloc[-1] == 1000.0
    assert res.fills["instrument"].tolist() == ["A", "B"]


def test_short_proceeds_leave_a_single_column_unaffected():
    # one column: a short's own proceeds are not counted against its reversal into a long
    rows = [(100, 101, 99, 100, SHORT), (100, 101, 99, 100, LONG), FLAT, FLAT]
    res = run(rows, fees=0.0, allow_short=True)
    buy = res.fills.iloc[-1]
    assert (buy["side"], buy["qty"]) == ("buy", 10.0)


def test_atr_stop_entries_wait_for_the_atr():
    # sl_atr=1 with a 3-bar ATR: the long decided at bar 0 has no ATR to place its stop and is
    # not sent; the one decided at bar 3 (true ranges 2, 2, 2 -> ATR 2) enters at bar 4's open
    # 100 with its stop at 100 - 2 = 98, hit inside bar 5.
    rows = [(100, 101, 99, 100, LONG), FLAT, FLAT, (100, 101, 99, 100, LONG), FLAT, (100, 101, 90, 95, 0), FLAT]
    res = run(rows, fees=0.0, atr_window=3, sl_atr=1.0)
    t = only_trade(res)
    assert (t["entry_time"], t["entry_price"]) == (res.equity.index[4], 100.0)
    assert (t["exit_time"], t["exit_price"], t["exit_reason"]) == (res.equity.index[5], 98.0, "stop_loss")


# ---------------------------------------------------------------------------------------------
# exits in the bar of an entry filled inside it (limit / stop level, not the open)
# ---------------------------------------------------------------------------------------------


def test_limit_entry_inside_a_bar_takes_no_profit_from_prices_before_it():
    # buy limit at 100 fills inside bar 1 (open 106, low 99); the bar's open 106 and high 106 came
    # before the entry, so the 5 % target (105) is not taken in bar 1; bar 2 reaches 105.5
    rows = [(100, 101, 99, 100, LONG), (106, 106, 99, 100, 0), (100, 105.5, 99, 104, 0), FLAT]
    res = run(rows, strategy=Scripted(order_type=1, offset=0.0), fees=0.0, tp_pct=0.05)
    t = only_trade(res)
    assert (t["entry_time"], t["entry_price"]) == (res.equity.index[1], 100.0)
    assert (t["exit_time"], t["exit_price"], t["exit_reason"]) == (res.equity.index[2], close_to(105.0), "take_profit")


def test_stop_entry_inside_a_bar_stops_at_its_level_not_at_the_earlier_open():
    # buy stop at 100 fills inside bar 1 (open 94, high 101); its 5 % stop (95) is checked from
    # the entry against the bar's low 93.5 (worst case) and fills at 95, not at the open 94
    rows = [(100, 101, 99, 100, LONG), (94, 101, 93.5, 100, 0), FLAT]
    res = run(rows, strategy=Scripted(order_type=2, offset=0.0), fees=0.0, sl_pct=0.05)
    t = only_trade(res)
    assert (t["entry_time"], t["entry_price"]) == (res.equity.index[1], 100.0)
    assert (t["exit_time"], t["exit_price"], t["exit_reason"]) == (res.equity.index[1], close_to(95.0), "stop_loss")


def test_limit_entry_at_a_gapped_open_still_checks_its_target_in_the_entry_bar():
    # the bar opens below the buy limit: the entry is at the open, so the whole bar came after it
    rows = [(100, 101, 99, 100, LONG), (98, 104, 97, 103, 0), FLAT]
    res = run(rows, strategy=Scripted(order_type=1, offset=0.0), fees=0.0, tp_pct=0.05)
    t = only_trade(res)
    assert (t["entry_price"], t["exit_time"], t["exit_price"]) == (98.0, res.equity.index[1], close_to(98 * 1.05))


# ---------------------------------------------------------------------------------------------
# negative equity and the maintenance margin
# ---------------------------------------------------------------------------------------------

# an all-in short at 100, then the price runs to 250 (each bar opens at the last close)
RUN_UP = [(100, 101, 99, 100, SHORT), (100, 101, 99, 100, 0), (100, 130, 100, 130, 0),
          (130, 170, 130, 170, 0), (170, 210, 170, 210, 0), (210, 250, 210, 250, EXIT),
          (250, 251, 249, 250, LONG), (250, 251, 249, 250, 0)]


def test_without_a_maintenance_margin_a_short_takes_equity_below_zero():
    """The documented behaviour when nothing liquidates: equity goes negative and stays there,
    and no entry can be sized from it."""
    fees = 0.001
    res = run(RUN_UP, allow_short=True, init_cash=10_000.0, fees=fees)
    qty = 10_000 / (100 * (1 + fees))
    cash = 10_000 + qty * 100 * (1 - fees)  # = 200 * qty: proceeds plus the margin
    assert res.equity.iloc[5] == close_to(cash - qty * 250)  # -4,995 at the close of 250
    final = cash - qty * 250 * (1 + fees)  # bought back at 250: -5,020
    assert final < -5000 and res.cash.iloc[-1] == close_to(final)
    # the long decided at bar 6 is refused: a fraction of negative equity is no order
    assert res.fills["side"].tolist() == ["sell", "buy"]
    assert res.trades.iloc[0]["exit_reason"] == "signal"


@pytest.mark.parametrize("slip", [0.0, 0.001])
def test_maintenance_margin_liquidates_a_short_at_the_liquidation_price(slip):
    fees, m = 0.001, 0.05
    res = run(RUN_UP, allow_short=True, init_cash=10_000.0, fees=fees, slippage=slip, maintenance_margin=m)
    entry = 100 * (1 - slip)
    qty = 10_000 / (entry * (1 + fees))
    cash = 10_000 + qty * entry * (1 - fees)
    # equity cash - qty * P falls below m * qty * P at P = cash / (qty * (1 + m)): 190.48 without
    # slippage; bar 4 (170 -> 210) reaches it inside the bar
    level = cash / (qty * (1 + m))
    assert 170 < level < 210
    o = res.fills
    assert o["side"].tolist() == ["sell", "buy", "buy"]  # the long decided at bar 6 fills again
    liq = o.iloc[1]
    assert (liq["reason"], liq["order_type"], liq["time"]) == ("liquidation", "stop", res.index[4])
    assert liq["price"] == close_to(level * (1 + slip))  # a stop's fill: slippage against the trader
    assert liq["qty"] == close_to(qty)
    after = cash - qty * level * (1 + slip) * (1 + fees)
    assert res.cash.iloc[4] == close_to(after) and res.equity.iloc[4] == close_to(after)
    assert after == close_to(qty * level * (m - slip - fees - slip * fees))  # what the margin leaves
    assert (res.equity >= 0).all()
    t = res.trades.iloc[0]
    assert (t["side"], t["exit_reason"], t["exit_price"]) == ("short", "liquidation", close_to(level * (1 + slip)))


def test_a_gap_through_the_liquidation_price_fills_at_the_open():
    fees, m = 0.001, 0.05
    rows = [(100, 101, 99, 100, SHORT), (100, 101, 99, 100, 0), (220, 230, 215, 225, 0), FLAT]
    res = run(rows, allow_short=True, init_cash=10_000.0, fees=fees, maintenance_margin=m)
    qty = 10_000 / (100 * (1 + fees))
    liq = res.fills.iloc[1]
    assert (liq["reason"], liq["price"], liq["time"]) == ("liquidation", 220.0, res.index[2])
    # beyond the bankruptcy price (200) nothing covers the rest: equity ends below zero
    final = qty * (200 - 220 * (1 + fees))
    assert final < 0 and res.cash.iloc[-1] == close_to(final)


def test_tighter_stop_loss_binds_before_the_liquidation_price():
    res = run(RUN_UP, allow_short=True, init_cash=10_000.0, fees=0.0, sl_pct=0.2, maintenance_margin=0.05)
    stop = res.fills.iloc[1]
    assert (stop["reason"], stop["price"], stop["time"]) == ("stop_loss", close_to(120.0), res.index[2])


def test_liquidation_price_counts_the_other_positions_of_a_cash_sharing_group():
    # A long 50 and B short 50 at 100 (size 0.5, no fees): cash 10,000. With A marked at 80,
    # B's equity 10,000 + 50 * 80 - 50 * P falls below 0.1 * (50 * 80 + 50 * P) at
    # P = (14,000 - 400) / (50 * 1.1) = 247.27 (it would be 263.64 with A still at 100)
    a = [(100, 101, 99, 100, LONG), (100, 101, 99, 100, 0), (100, 101, 79, 80, 0), (80, 81, 79, 80, 0), (80, 81, 79, 80, 0)]
    b = [(100, 101, 99, 100, SHORT), (100, 101, 99, 100, 0), (100, 200, 99, 200, 0), (200, 250, 199, 240, 0), (240, 241, 239, 240, 0)]
    frames = {"A": bars(a), "B": bars(b)}
    res = Backtest(Scripted(), frames, cash_sharing=True, allow_short=True, size=0.5, init_cash=10_000.0,
                   fees=0.0, maintenance_margin=0.1).run()
    o = res.fills
    assert o["instrument"].tolist() == ["A", "B", "B"]
    liq = o.iloc[2]
    level = (10_000 + 50 * 80 - 0.1 * 50 * 80) / (50 * 1.1)
    assert (liq["reason"], liq["time"], liq["price"]) == ("liquidation", res.index[3], close_to(level))
    assert res.positions.iloc[-1].tolist() == [50.0, 0.0]  # the long stays: paid from cash


@pytest.mark.parametrize(
    "value, message",
    [
        (1.0, r"maintenance_margin must be in \[0, 1\) \(a fraction of the gross position notional"),
        (-0.1, r"maintenance_margin must be in \[0, 1\)"),
        (float("nan"), r"maintenance_margin must be in \[0, 1\)"),
        ("5%", r"maintenance_margin must be in \[0, 1\) .*, got '5%'"),
    ],
)
def test_invalid_maintenance_margin_names_the_setting(value, message):
    with pytest.raises(ValueError, match=message):
        SimSettings(maintenance_margin=value)
    assert SimSettings(maintenance_margin=0.0).maintenance_margin == 0.0
