"""The simulation step against hand-computed fills, cash and equity (DESIGN.md semantics)."""

import numpy as np
import pandas as pd
import pytest

from framework.backtest import Backtest
from tests.scripted import Scripted

LONG, EXIT, SHORT = 1, 2, 3


def bars(rows, freq="1D", start="2024-01-01"):
    """rows: (open, high, low, close, script code) per bar."""
    arr = np.array(rows, dtype=float)
    index = pd.date_range(start, periods=len(arr), freq=freq, tz="UTC", name="timestamp")
    return pd.DataFrame(arr, index=index, columns=["open", "high", "low", "close", "volume"])


def run(rows, strategy=None, freq="1D", **settings):
    settings.setdefault("init_cash", 1000.0)
    settings.setdefault("fees", 0.01)
    return Backtest(strategy or Scripted(), bars(rows, freq), **settings).run()


FLAT = (100, 101, 99, 100, 0)


def test_market_order_fills_next_open_with_fees_and_slippage():
    rows = [(100, 101, 99, 100, LONG), (102, 103, 101, 102, 0), (104, 106, 103, 105, EXIT), (103, 104, 102, 103, 0)]
    res = run(rows, slippage=0.001)
    buy = 102 * 1.001
    qty = 1000 / (buy * 1.01)  # all in: cash covers notional plus the 1 % fee
    sell = 103 * (1 - 0.001)
    o = res.fills
    assert list(o["side"]) == ["buy", "sell"]
    assert list(o["time"]) == [res.index[1], res.index[3]]
    np.testing.assert_allclose(o["price"], [buy, sell], rtol=1e-12)
    np.testing.assert_allclose(o["qty"], [qty, qty], rtol=1e-12)
    np.testing.assert_allclose(o["fee"], [qty * buy * 0.01, qty * sell * 0.01], rtol=1e-12)
    expected_equity = [1000, qty * 102, qty * 105, qty * sell * 0.99]
    np.testing.assert_allclose(res.equity, expected_equity, rtol=1e-12, atol=1e-9)
    t = res.trades.iloc[0]
    assert t["side"] == "long" and t["exit_reason"] == "signal"
    np.testing.assert_allclose(t["pnl"], qty * (sell - buy) - qty * buy * 0.01 - qty * sell * 0.01, rtol=1e-12)


def test_cash_plus_positions_is_equity_every_bar():
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 300)))
    codes = rng.choice([0, 0, 0, LONG, EXIT, SHORT], 300)
    rows = [(c * 0.999, c * 1.01, c * 0.99, c, k) for c, k in zip(close, codes)]
    res = run(rows, allow_short=True, fees=0.002)
    np.testing.assert_allclose(res.cash + (res.positions.iloc[:, 0] * close), res.equity, rtol=1e-12)
    # every fee booked is in the fills, and pnl of closed trades adds up to the equity change
    closed = res.trade_records
    np.testing.assert_allclose(closed["pnl"].sum(), res.equity.iloc[-1] - 1000, rtol=1e-9)


def test_short_position_profits_when_price_falls():
    rows = [(100, 101, 99, 100, SHORT), (100, 101, 99, 100, 0), (90, 91, 89, 90, EXIT), (80, 81, 79, 80, 0)]
    res = run(rows, allow_short=True, fees=0.0)
    qty = 1000 / 100
    np.testing.assert_allclose(res.equity.iloc[-1], 1000 + qty * (100 - 80), rtol=1e-12)
    assert res.trades.iloc[0]["side"] == "short"


def test_short_signal_closes_long_when_shorts_disabled():
    rows = [(100, 101, 99, 100, LONG), (100, 101, 99, 100, SHORT), (110, 111, 109, 110, 0), (120, 121, 119, 120, 0)]
    res = run(rows, fees=0.0)
    assert list(res.fills["side"]) == ["buy", "sell"]
    assert (res.positions.iloc[-1] == 0).all()


def test_reversal_closes_then_opens_at_the_same_price():
    rows = [(100, 101, 99, 100, LONG), (100, 101, 99, 100, SHORT), (110, 111, 109, 110, 0), (120, 121, 119, 120, 0)]
    res = run(rows, fees=0.0, allow_short=True)
    o = res.fills
    assert list(o["side"]) == ["buy", "sell", "sell"]
    assert o["price"].iloc[1] == o["price"].iloc[2] == 110
    np.testing.assert_allclose(o["qty"].iloc[2], 1000 / 110, rtol=1e-12)  # equity 1000 after the flat round trip


@pytest.mark.parametrize(
    "offset, bar1, expected_price",
    [
        (-0.02, (99, 100, 97, 99, 0), 98.0),  # touched inside the bar: fills at the limit
        (-0.02, (97, 98, 96, 97, 0), 97.0),  # opens through the limit: fills at the (better) open
        (-0.02, (99, 100, 98.5, 99, 0), None),  # not touched: the order expires
    ],
)
def test_limit_buy(offset, bar1, expected_price):
    rows = [(100, 101, 99, 100, LONG), bar1, FLAT]
    res = run(rows, Scripted(order_type=1, offset=offset), fees=0.0)
    if expected_price is None:
        assert len(res.fills) == 0
    else:
        assert res.fills["price"].iloc[0] == pytest.approx(expected_price, rel=1e-12)
        assert res.fills["order_type"].iloc[0] == "limit"


@pytest.mark.parametrize(
    "bar1, expected_price",
    [
        ((101, 103, 100, 102, 0), 102.0 * 1.01),  # triggered inside the bar at the stop (+ slippage)
        ((104, 105, 103, 104, 0), 104.0 * 1.01),  # gaps above the stop: fills at the open
        ((100, 101.5, 99, 100, 0), None),  # never reaches the stop
    ],
)
def test_stop_buy(bar1, expected_price):
    rows = [(100, 101, 99, 100, LONG), bar1, FLAT]
    res = run(rows, Scripted(order_type=2, offset=0.02), fees=0.0, slippage=0.01)
    if expected_price is None:
        assert len(res.fills) == 0
    else:
        assert res.fills["price"].iloc[0] == pytest.approx(expected_price, rel=1e-12)


def test_stop_loss_first_when_both_touched():
    rows = [(100, 101, 99, 100, LONG), (100, 111, 89, 100, 0), FLAT]
    res = run(rows, fees=0.0, sl_pct=0.1, tp_pct=0.1)
    t = res.trades.iloc[0]
    assert t["exit_reason"] == "stop_loss"
    assert t["exit_price"] == pytest.approx(90.0, rel=1e-12)
    assert t["exit_time"] == res.index[1]  # same bar as the entry: the entry happened at the open


def test_take_profit_and_gap_through_stop():
    rows = [(100, 101, 99, 100, LONG), (100, 104, 99, 103, 0), (103, 111, 102, 108, 0), FLAT]
    res = run(rows, fees=0.0, tp_pct=0.1)
    t = res.trades.iloc[0]
    assert (t["exit_reason"], t["exit_price"]) == ("take_profit", pytest.approx(110.0))
    # a gap below the stop fills at the open, not at the stop price
    rows = [(100, 101, 99, 100, LONG), (100, 101, 99, 100, 0), (80, 82, 79, 81, 0), FLAT]
    t = run(rows, fees=0.0, sl_pct=0.1).trades.iloc[0]
    assert (t["exit_reason"], t["exit_price"]) == ("stop_loss", 80.0)


def test_trailing_stop_follows_the_best_high():
    rows = [(100, 101, 99, 100, LONG), (100, 110, 99, 109, 0), (109, 120, 108, 119, 0), (119, 119, 107, 110, 0), FLAT]
    t = run(rows, fees=0.0, trail_pct=0.1).trades.iloc[0]
    # best high before bar 3 is 120 -> stop at 108, touched by bar 3's low of 107
    assert (t["exit_reason"], t["exit_price"]) == ("trailing_stop", pytest.approx(108.0))
    assert t["exit_time"] == pd.Timestamp("2024-01-04", tz="UTC")


def test_sizing_fraction_and_cash():
    rows = [(100, 101, 99, 100, LONG), (100, 101, 99, 100, 0), FLAT]
    assert run(rows, fees=0.0, size=0.25).fills["qty"].iloc[0] == pytest.approx(2.5)
    assert run(rows, fees=0.0, sizing="cash", size=300.0).fills["qty"].iloc[0] == pytest.approx(3.0)


def test_risk_sizing_with_atr_stop_distance():
    # constant true range of 4 (high - low, no gaps) makes the ATR exactly 4 once warmed up
    rows = [(100, 102, 98, 100, 0)] * 5 + [(100, 102, 98, 100, LONG), (100, 102, 98, 100, 0), (100, 102, 98, 100, 0)]
    res = run(rows, fees=0.0, sizing="risk", size=0.02, atr_window=3, atr_stop_mult=2.5, sl_atr=2.5)
    qty = 1000 * 0.02 / (4 * 2.5)  # risk amount / stop distance
    assert res.fills["qty"].iloc[0] == pytest.approx(qty, rel=1e-12)
    # and that stop sits 2.5 ATR below the entry
    rows2 = rows[:7] + [(100, 102, 89, 95, 0), FLAT]
    t = run(rows2, fees=0.0, sizing="risk", size=0.02, atr_window=3, atr_stop_mult=2.5, sl_atr=2.5).trades.iloc[0]
    assert (t["exit_reason"], t["exit_price"]) == ("stop_loss", pytest.approx(90.0))


def test_vol_target_sizing():
    # log returns alternate +r, -r: sample std over an even window w is r * sqrt(w / (w - 1))
    r, w = 0.01, 4
    closes = [100.0]
    for i in range(8):
        closes.append(closes[-1] * np.exp(r if i % 2 == 0 else -r))
    codes = [0] * 8 + [LONG]
    rows = [(c, c * 1.001, c * 0.999, c, k) for c, k in zip(closes, codes)] + [(100, 101, 99, 100, 0)]
    res = run(rows, freq="1D", fees=0.0, sizing="vol_target", size=0.2, vol_window=w)
    vol = r * np.sqrt(w / (w - 1)) * np.sqrt(365)
    assert res.fills["qty"].iloc[0] == pytest.approx(min(1000 * 0.2 / vol, 1000) / 100, rel=1e-9)


def test_max_drawdown_halts_and_flattens():
    rows = [(100, 101, 99, 100, LONG), (100, 101, 99, 100, 0), (100, 101, 70, 75, 0), (76, 77, 75, 76, LONG), (80, 81, 79, 80, LONG), FLAT]
    res = run(rows, fees=0.0, max_drawdown=0.2)
    o = res.fills
    assert list(o["reason"]) == ["signal", "max_drawdown"]
    assert o["time"].iloc[1] == res.index[3] and o["price"].iloc[1] == 76
    assert (res.positions.iloc[3:] == 0).all().all()  # the LONG at bar 3 and 4 is ignored: halted


def test_daily_loss_limit_blocks_the_rest_of_the_day():
    # 4-hour bars: 2024-01-01 00:00 .. 20:00 are bars 0-5, 2024-01-02 00:00 is bar 6
    low_day = (92, 93, 91, 92, LONG)
    rows = [(100, 101, 99, 100, LONG), (100, 101, 99, 100, 0), (100, 101, 90, 92, 0),
            low_day, low_day, low_day, low_day, FLAT, FLAT]
    res = run(rows, freq="4h", fees=0.0, daily_loss=0.05)
    o = res.fills
    # bar 2 (08:00) closes 8 % below the day's opening equity: exit at bar 3's open. The LONGs
    # decided later that day (bars 3, 4 and 5, the last filling on the next day) are refused;
    # the one decided at bar 6, on the new day, enters at bar 7's open.
    assert list(o["reason"]) == ["signal", "daily_loss", "signal"]
    assert list(o["side"]) == ["buy", "sell", "buy"]
    assert list(o["time"]) == [res.index[1], res.index[3], res.index[7]]
    np.testing.assert_allclose(o["price"], [100.0, 92.0, 100.0])


def test_max_trades_per_day_and_cooldown():
    day = [(100, 101, 99, 100, LONG), (100, 101, 99, 100, EXIT)] * 3 + [FLAT]
    res = run(day, freq="4h", fees=0.0, max_trades_per_day=2)
    assert (res.fills["side"] == "buy").sum() == 2
    # cooldown: a stop-out at bar 1 blocks entries decided at bars 1..2 (cooldown_bars=2)
    rows = [(100, 101, 99, 100, LONG), (100, 101, 89, 95, LONG), (95, 96, 94, 95, LONG), (95, 96, 94, 95, LONG), FLAT, FLAT]
    res = run(rows, fees=0.0, sl_pct=0.1, cooldown_bars=2)
    buys = res.fills[res.fills["side"] == "buy"]
    assert list(buys["time"]) == [res.index[1], res.index[4]]


def test_position_notional_and_exposure_caps():
    rows = [(100, 101, 99, 100, LONG), (100, 101, 99, 100, 0), FLAT]
    assert run(rows, fees=0.0, max_position_notional=250.0).fills["qty"].iloc[0] == pytest.approx(2.5)
    assert run(rows, fees=0.0, max_exposure=0.4).fills["qty"].iloc[0] == pytest.approx(4.0)


def test_cash_sharing_group_with_max_positions():
    a = bars([(100, 101, 99, 100, LONG), (100, 101, 99, 100, 0), FLAT])
    b = bars([(50, 51, 49, 50, 0), (50, 51, 49, 50, LONG), (50, 51, 49, 50, 0)])
    res = Backtest(Scripted(), {"A": a, "B": b}, init_cash=1000.0, fees=0.0, size=0.5,
                   cash_sharing=True, max_positions=1).run()
    assert list(res.fills["instrument"]) == ["A"]  # B's entry is refused: one position at a time
    res = Backtest(Scripted(), {"A": a, "B": b}, init_cash=1000.0, fees=0.0, size=0.5, cash_sharing=True).run()
    assert list(res.fills["instrument"]) == ["A", "B"]
    np.testing.assert_allclose(res.fills["qty"], [5.0, 10.0])  # half of the shared 1000 each
    np.testing.assert_allclose(res.cash.iloc[-1], 0.0, atol=1e-9)


def test_emergency_stop_raised_by_a_driver_flattens_and_halts():
    from framework.enums import ORDER_MARKET, REASON_EMERGENCY
    from framework.runner import BarStepper
    from framework.settings import SimSettings

    stepper = BarStepper(Scripted(), SimSettings(init_cash=1000.0, fees=0.0).vector(365.0))
    script = [(100, 101, 99, 100, LONG), (100, 101, 99, 100, 0), (105, 106, 104, 105, 0),
              (107, 108, 106, 107, LONG), (108, 109, 107, 108, LONG), (110, 111, 109, 110, 0)]
    for t, bar in enumerate(script):
        if t == 2:
            stepper.emergency_stop()  # raised between the closes of bars 1 and 2
        stepper.step(t, *bar)
    fills = stepper.fills
    assert fills["reason"].tolist() == [0, REASON_EMERGENCY]
    # at once: flattened at the open of the very next bar (105), not a close later
    assert fills["bar"].tolist() == [1, 2] and fills["price"][1] == 105
    assert fills["order_type"][1] == ORDER_MARKET and fills["side"][1] == -1
    assert stepper.positions.tolist() == [0.0]  # the LONG signals after it are ignored: halted


def test_emergency_stop_cancels_the_entry_decided_at_the_last_close():
    """Raised between bar 0 (LONG decided at its close) and bar 1: the buy that would fill at
    bar 1's open is cancelled, nothing ever fills; the Backtest's ``emergency_at`` (the time of
    bar 1) does the same, and without it the buy fills at 101."""
    from framework.runner import BarStepper
    from framework.settings import SimSettings

    script = [(100, 101, 99, 100, LONG), (101, 102, 100, 101, 0), (102, 103, 101, 102, LONG), (103, 104, 102, 103, 0)]
    stepper = BarStepper(Scripted(), SimSettings(init_cash=1000.0, fees=0.0).vector(365.0))
    stepper.step(0, *script[0])
    stepper.emergency_stop()
    for t in range(1, 4):
        stepper.step(t, *script[t])
    assert len(stepper.fills) == 0 and stepper.halted and stepper.equity == 1000.0
    data = bars(script)
    halted = Backtest(Scripted(), data, init_cash=1000.0, fees=0.0, emergency_at=data.index[1]).run()
    assert len(halted.fills) == 0
    free = Backtest(Scripted(), data, init_cash=1000.0, fees=0.0).run()
    assert free.fills["price"].tolist() == [101.0]


def test_trade_from_places_no_order_before_it_and_trades_from_it():
    """Daily bars from 2024-01-01; LONG at the closes of bars 0 and 3, EXIT at bar 2's. With
    trading from bar 2 (2024-01-03) the LONG of bar 0 is ignored (no buy at 101), the EXIT finds
    nothing to close, and the LONG of bar 3 buys all in at bar 4's open, 104: 1000 / 104."""
    rows = [(100, 101, 99, 100, LONG), (101, 102, 100, 101, 0), (102, 103, 101, 102, EXIT),
            (103, 104, 102, 103, LONG), (104, 105, 103, 105, 0), (106, 107, 105, 106, 0)]
    data = bars(rows)
    res = Backtest(Scripted(), data, init_cash=1000.0, fees=0.0, trade_from="2024-01-03").run()
    assert res.trade_from == 2
    assert res.fills["time"].tolist() == [data.index[4]]
    assert res.fills["price"].tolist() == [104.0]
    assert res.equity.iloc[:5].tolist() == [1000.0] * 4 + [1000.0 / 104 * 105]
    # statistics and the benchmark cover the traded bars only: 2024-01-03 .. 2024-01-06
    assert res.stats["start"] == data.index[2] and res.stats["end"] == data.index[5]
    bench, _ = res.benchmark
    assert bench.index[0] == data.index[2]
    # buy and hold from bar 2: bought at bar 3's open (103), held to the close of bar 5 (106)
    assert bench.iloc[-1] == pytest.approx(1000.0 / 103 * 106, rel=1e-12)
    # the full run buys at bar 1's open and sells at bar 3's
    full = Backtest(Scripted(), data, init_cash=1000.0, fees=0.0).run()
    assert full.fills["price"].tolist() == [101.0, 103.0, 104.0]


def test_bar_stepper_trade_from_warms_up_then_trades():
    """The stepper's ``trade_from`` is a bar index: with 2, the LONG at bar 0's close is dropped
    and the one at bar 2's close buys at bar 3's open (103); a bad value names the keyword."""
    from framework.runner import BarStepper
    from framework.settings import SimSettings

    p = SimSettings(init_cash=1000.0, fees=0.0).vector(365.0)
    rows = [(100, 101, 99, 100, LONG), (101, 102, 100, 101, 0), (102, 103, 101, 102, LONG), (103, 104, 102, 103, 0)]
    stepper = BarStepper(Scripted(), p, trade_from=2)
    for t, row in enumerate(rows):
        stepper.step(t, *row)
    assert stepper.fills["bar"].tolist() == [3] and stepper.fills["price"].tolist() == [103.0]
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="trade_from must be a bar index >= 0"):
            BarStepper(Scripted(), p, trade_from=bad)
    from framework.enums import N_SIM_PARAMS

    with pytest.raises(ValueError, match=f"sim_params must be a vector of {N_SIM_PARAMS} floats"):
        BarStepper(Scripted(), p[:-2])


def test_start_end_and_trade_from_are_checked_and_named():
    data = bars([(100, 101, 99, 100, 0)] * 6)  # 2024-01-01 .. 2024-01-06
    res = Backtest(Scripted(), data, start="2024-01-02", end="2024-01-04").run()
    assert res.index.tolist() == data.index[1:4].tolist()  # both ends inclusive
    with pytest.raises(ValueError, match="start=2024-01-05 00:00:00\\+00:00 is after end=2024-01-02"):
        Backtest(Scripted(), data, start="2024-01-05", end="2024-01-02")
    with pytest.raises(ValueError, match="start must be a time"):
        Backtest(Scripted(), data, start="yesterday-ish")
    with pytest.raises(ValueError, match="keep 1 bar\\(s\\) of the data.*need at least 2 bars"):
        Backtest(Scripted(), data, start="2024-01-06")
    with pytest.raises(ValueError, match="trade_from=2024-01-05 00:00:00\\+00:00 is outside the backtested bars"):
        Backtest(Scripted(), data, end="2024-01-04", trade_from="2024-01-05")
    with pytest.raises(ValueError, match="trade_from=.* is the last bar"):
        Backtest(Scripted(), data, trade_from="2024-01-06")
    with pytest.raises(ValueError, match="emergency_at=2023-12-31 00:00:00\\+00:00 is outside"):
        Backtest(Scripted(), data, emergency_at="2023-12-31")


def test_bar_stepper_rejects_bad_bars_and_loses_nothing():
    from framework.runner import BarStepper
    from framework.settings import SimSettings

    p = SimSettings(init_cash=1000.0, fees=0.001, sl_pct=0.05).vector(365.0)
    script = [(100, 101, 99, 100, LONG), (100, 103, 99, 102, 0), (102, 104, 101, 103, 0),
              (103, 104, 90, 95, 0), (95, 96, 94, 95, LONG), (96, 99, 95, 98, 0)]
    clean = BarStepper(Scripted(), p)
    for t, bar in enumerate(script):
        clean.step(t, *bar)

    stepper = BarStepper(Scripted(), p)
    bad_bars = [
        ((np.nan, 104, 90, 95, 0), "a price is NaN"),
        ((103, 104, 90, 0.0, 0), "a price is <= 0"),
        ((103, 89, 90, 95, 0), "high/low do not contain open/close"),
        ((103, 104, 90, 95, -1.0), "negative volume"),
    ]
    for t, bar in enumerate(script):
        if t == 3:
            before = (stepper.g.copy(), stepper.cs.copy(), stepper.t, len(stepper.fills))
            for bad, why in bad_bars:
                with pytest.raises(ValueError, match=f"bar 3 rejected, state unchanged: {why}"):
                    stepper.step(t, *bad)
            with pytest.raises(ValueError, match="UTC day 1 is before the previous bar's .2."):
                stepper.step(1, *bar)
            np.testing.assert_array_equal(stepper.g, before[0])
            np.testing.assert_array_equal(stepper.cs, before[1])
            assert (stepper.t, len(stepper.fills)) == before[2:]
        stepper.step(t, *bar)
    np.testing.assert_array_equal(stepper.fills, clean.fills)
    assert stepper.equity == clean.equity and stepper.cash == clean.cash
    assert len(clean.fills) >= 3  # entry, stop-out, entry: the run did something
