"""Stress tests: historical episodes against direct backtests, hand-checked shocks."""

import numpy as np
import pandas as pd
import pytest

from framework.backtest import Backtest, load_instruments
from framework.data import validate_ohlcv
from framework.stress import correlation_shock, gap_shock, stress_test, vol_shock

DATA = "BTC_USDT-1d"
SETTINGS = dict(fees=0.001, sl_pct=0.08)


def _tiny() -> dict[str, pd.DataFrame]:
    index = pd.date_range("2024-01-01", periods=4, freq="D", tz="UTC")
    return {"a": pd.DataFrame({"open": [100.0, 102, 104, 103], "high": [103.0, 105, 106, 104],
                               "low": [99.0, 101, 102, 100], "close": [102.0, 104, 103, 101],
                               "volume": [5.0, 6, 7, 8]}, index=index)}


def test_episode_rows_equal_direct_backtests_over_the_same_bars():
    episodes = (("covid", "2020-03-01", "2020-04-15"), ("may21", "2021-05-01", "2021-06-15"))
    table = stress_test("sma_cross", DATA, episodes=episodes, shocks=(), warmup=50, **SETTINGS)
    index = load_instruments(DATA)[DATA].index
    for (name, start, end), (_, row) in zip(episodes, table.iterrows()):
        first = index.searchsorted(pd.Timestamp(start, tz="UTC"))
        result = Backtest("sma_cross", DATA, start=index[first - 50], trade_from=start, end=end,
                          **SETTINGS).run()
        equity = result.equity.to_numpy()[50:]  # the 50 warm-up bars hold the cash
        assert (result.equity.to_numpy()[:50] == SETTINGS.get("init_cash", 10_000.0)).all()
        assert row.scenario == name and row.kind == "historical" and row.covered
        assert row.start == pd.Timestamp(start, tz="UTC") and row.end == pd.Timestamp(end, tz="UTC")
        assert row["return"] == pytest.approx(equity[-1] / equity[0] - 1, rel=1e-12)  # return
        assert row.max_drawdown == pytest.approx(np.min(equity / np.maximum.accumulate(equity) - 1))
        assert row.worst_bar == pytest.approx(np.min(equity[1:] / equity[:-1] - 1))
        close = result.close[50:, 0]
        entry = result.frames[DATA]["open"].iloc[51]
        qty = 10_000.0 / (entry * 1.001)
        bh = (10_000.0 - qty * entry * 1.001 + qty * close[-1]) / 10_000.0 - 1
        assert row.buy_and_hold_return == pytest.approx(bh, rel=1e-12)
        assert not row.risk_limit_fired


def test_episodes_outside_the_data_are_reported_not_covered():
    table = stress_test("sma_cross", DATA, episodes=(("2018", "2018-01-01", "2018-02-01"),
                                                      ("half", "2024-02-01", "2024-03-31")), shocks=())
    assert list(table["covered"]) == [False, False]
    assert table["return"].isna().all()
    assert table["note"].str.contains("outside the data").all()


def test_gap_shock_by_hand_and_the_result_validates():
    frames = _tiny()
    out = gap_shock(frames, 0.1, at="2024-01-03")["a"]
    expected = pd.DataFrame({"open": [100.0, 102, 93.6, 92.7], "high": [103.0, 105, 95.4, 93.6],
                             "low": [99.0, 101, 91.8, 90.0], "close": [102.0, 104, 92.7, 90.9],
                             "volume": [5.0, 6, 7, 8]}, index=frames["a"].index)
    pd.testing.assert_frame_equal(out, expected, rtol=1e-12)
    _, report = validate_ohlcv(out)  # raises on any error
    assert frames["a"]["close"].iloc[2] == 103.0  # the input is not modified


def test_vol_shock_times_one_is_the_identity_and_times_k_scales_returns_and_keeps_ohlc_valid():
    frames = load_instruments(DATA)
    same = vol_shock(frames, 1.0)[DATA]
    pd.testing.assert_frame_equal(same, frames[DATA], rtol=1e-12)
    tiny = _tiny()["a"]
    doubled = vol_shock({"a": tiny}, 2.0)["a"]
    r, r2 = np.diff(np.log(tiny["close"])), np.diff(np.log(doubled["close"]))
    np.testing.assert_allclose(r2 - r2.mean(), 2 * (r - r.mean()), atol=1e-12)
    np.testing.assert_allclose(r2.mean(), r.mean(), atol=1e-12)
    # high's log distance above the close doubles: log(105/104) at bar 1
    assert np.log(doubled["high"].iloc[1] / doubled["close"].iloc[1]) == pytest.approx(2 * np.log(105 / 104))
    validate_ohlcv(doubled)
    big = vol_shock(frames, 3.0)[DATA]
    assert (big["high"] >= big[["open", "close"]].max(axis=1)).all()
    assert (big["low"] <= big[["open", "close"]].min(axis=1)).all()


def test_correlation_shock_makes_every_instrument_follow_the_first():
    frames = load_instruments({"BTC": "BTC_USDT-1d", "ETH": "ETH_USDT-1d"})
    out = correlation_shock(frames)
    pd.testing.assert_frame_equal(out["BTC"], frames["BTC"])
    ratio = out["ETH"][["open", "high", "low", "close"]] / frames["BTC"][["open", "high", "low", "close"]]
    np.testing.assert_allclose(ratio.to_numpy(), frames["ETH"]["close"].iloc[0] / frames["BTC"]["close"].iloc[0])
    assert list(out["ETH"].columns) == list(frames["ETH"].columns)
    tiny = _tiny()
    two = correlation_shock({"a": tiny["a"], "b": tiny["a"] * 2.0})
    np.testing.assert_array_equal(two["b"]["volume"], tiny["a"]["volume"] * 2.0)  # volume kept
    np.testing.assert_allclose(two["b"]["close"], tiny["a"]["close"] * 2.0)


def test_a_max_drawdown_limit_fires_in_a_crash_and_is_reported():
    # a 40 % gap down at the open after a close where the strategy holds a long position
    positions = Backtest("sma_cross", DATA).run().positions[DATA]
    long_bar = int(np.argmax(positions.to_numpy() > 0))
    assert positions.iloc[long_bar] > 0
    crash = (("gap", 0.4, positions.index[long_bar + 1]),)
    limited = stress_test("sma_cross", DATA, episodes=(), shocks=crash, max_drawdown=0.25)
    free = stress_test("sma_cross", DATA, episodes=(), shocks=crash)
    assert limited.loc[0, "risk_limit_fired"] and limited.loc[0, "risk_reasons"] == "max_drawdown"
    assert not free.loc[0, "risk_limit_fired"] and free.loc[0, "risk_reasons"] == ""
    assert free.loc[0, "worst_bar"] <= -0.39  # the gap hit the open position
    assert limited.loc[0, "max_drawdown"] <= -0.25
