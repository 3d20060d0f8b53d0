"""Tests for framework.metrics and framework.metrics_nb.

Reference values come from (a) small curves worked out by hand in the comments, (b) vectorbt's
returns and drawdowns accessors (configured with 365-day years), and (c) plain NumPy formulas
written out here.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import vectorbt  # noqa: F401  (registers the .vbt accessors used as references)

from framework import metrics_nb as nb
from framework.enums import REASON_END, REASON_SIGNAL, REASON_STOP_LOSS, trade_dt
from framework.metrics import (
    bars_per_year,
    drawdown,
    performance_stats,
    stats_frame,
    stats_table,
)

KEYS = [
    "start",
    "end",
    "duration",
    "total_return",
    "cagr",
    "ann_volatility",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "max_drawdown_duration",
    "win_rate",
    "profit_factor",
    "expectancy",
    "total_trades",
    "avg_trade_duration",
    "largest_win",
    "largest_loss",
    "exposure_time",
]

NO_TRADES = np.zeros(0, dtype=trade_dt)


def daily(values, start="2021-01-01", freq="1D") -> pd.Series:
    values = np.asarray(values, dtype=np.float64)
    return pd.Series(values, index=pd.date_range(start, periods=len(values), freq=freq, tz="UTC"))


def make_trades(rows: list[tuple[int, int, float]]) -> np.ndarray:
    """trade_dt records from (entry_bar, exit_bar, pnl); other fields are plausible fillers."""
    trades = np.zeros(len(rows), dtype=trade_dt)
    for i, (entry, exit_, pnl) in enumerate(rows):
        trades[i]["direction"] = 1
        trades[i]["qty"] = 1.0
        trades[i]["entry_bar"] = entry
        trades[i]["entry_price"] = 100.0
        trades[i]["exit_bar"] = exit_
        trades[i]["exit_price"] = 100.0 + pnl
        trades[i]["pnl"] = pnl
        trades[i]["ret"] = pnl / 100.0
        trades[i]["exit_reason"] = REASON_STOP_LOSS if pnl < 0 else REASON_SIGNAL
    return trades


def random_equity(n: int, freq: str, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    values = 1_000.0 * np.exp(np.cumsum(rng.normal(0.0004, 0.02, n)))
    return daily(values, freq=freq)


# --- bars_per_year ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("freq", "expected"),
    [("1D", 365.0), ("1h", 8760.0), ("15min", 35040.0), ("4h", 2190.0), ("7D", 365 / 7)],
)
def test_bars_per_year_from_spacing(freq, expected):
    index = pd.date_range("2022-01-01", periods=50, freq=freq, tz="UTC")
    assert bars_per_year(index) == pytest.approx(expected, rel=1e-12)


def test_bars_per_year_ignores_a_few_gaps():
    index = pd.date_range("2022-01-01", periods=100, freq="1h", tz="UTC").delete([10, 11, 50])
    assert bars_per_year(index) == 8760.0


def test_bars_per_year_rejects_short_or_unsorted_index():
    with pytest.raises(ValueError, match="at least 2 bars"):
        bars_per_year(pd.DatetimeIndex(["2022-01-01"]))
    with pytest.raises(ValueError, match="must be positive"):
        bars_per_year(pd.date_range("2022-01-01", periods=5, freq="1D")[::-1])
    with pytest.raises(TypeError, match="DatetimeIndex"):
        bars_per_year(pd.RangeIndex(5))


# --- drawdown ---------------------------------------------------------------------------------


def test_drawdown_by_hand():
    # peaks: 100, 120, 120, 120, 130 -> drawdowns 0, 0, 90/120-1, 108/120-1, 0
    dd = drawdown(np.array([100.0, 120.0, 90.0, 108.0, 130.0]))
    np.testing.assert_allclose(dd, [0.0, 0.0, -0.25, -0.1, 0.0], atol=1e-15)
    assert (dd <= 0).all()


# --- performance_stats: a curve worked out on paper -------------------------------------------


def test_five_bar_curve_by_hand():
    # Equity 100, 110, 99, 108.9, 119.79 on daily bars.
    # Returns: +0.1, -0.1, +0.1, +0.1 -> mean 0.05; deviations .05 -.15 .05 .05, squares sum
    # 0.03, / (4 - 1) = 0.01 -> std 0.1. Per-bar Sharpe 0.5; annualised 0.5 * sqrt(365).
    # Downside: min(r, 0)^2 = 0, .01, 0, 0 -> mean .0025 -> downside dev 0.05 -> per-bar
    # Sortino 1.0; annualised sqrt(365).
    # Peak 110 at bar 1, trough 99 at bar 2: max drawdown 99/110 - 1 = -0.1. Bar 3 (108.9) is
    # still under 110; bar 4 (119.79) recovers -> under water from bar 1 to bar 4 = 3 days.
    # Total return 119.79/100 - 1 = 0.1979 over 4 calendar days.
    equity = daily([100.0, 110.0, 99.0, 108.9, 119.79])
    stats = performance_stats(equity, NO_TRADES, np.array([0, 1, 1, 0, 0], bool), 365.0)
    assert list(stats) == KEYS
    assert stats["start"] == pd.Timestamp("2021-01-01", tz="UTC")
    assert stats["end"] == pd.Timestamp("2021-01-05", tz="UTC")
    assert stats["duration"] == pd.Timedelta(days=4)
    assert stats["total_return"] == pytest.approx(0.1979, rel=1e-12)
    assert stats["cagr"] == pytest.approx(1.1979 ** (365 / 4) - 1, rel=1e-12)
    assert stats["ann_volatility"] == pytest.approx(0.1 * math.sqrt(365), rel=1e-12)
    assert stats["sharpe"] == pytest.approx(0.5 * math.sqrt(365), rel=1e-12)
    assert stats["sortino"] == pytest.approx(1.0 * math.sqrt(365), rel=1e-12)
    assert stats["max_drawdown"] == pytest.approx(-0.1, rel=1e-12)
    assert stats["calmar"] == pytest.approx((1.1979 ** (365 / 4) - 1) / 0.1, rel=1e-12)
    assert stats["max_drawdown_duration"] == pd.Timedelta(days=3)
    assert stats["exposure_time"] == pytest.approx(2 / 5)


def test_risk_free_is_annual_and_converted_per_bar():
    equity = random_equity(500, "1D", seed=3)
    rf = 0.05
    stats = performance_stats(equity, NO_TRADES, np.ones(500, bool), 365.0, risk_free=rf)
    r = equity.pct_change().to_numpy()[1:]
    rf_bar = 1.05 ** (1 / 365) - 1
    excess = r - rf_bar
    sharpe = excess.mean() / r.std(ddof=1) * math.sqrt(365)
    sortino = excess.mean() / math.sqrt(np.mean(np.minimum(excess, 0) ** 2)) * math.sqrt(365)
    assert stats["sharpe"] == pytest.approx(sharpe, rel=1e-10)
    assert stats["sortino"] == pytest.approx(sortino, rel=1e-10)


# --- performance_stats against vectorbt -------------------------------------------------------


@pytest.mark.parametrize(("freq", "seed"), [("1D", 0), ("1h", 1), ("4h", 2)])
@pytest.mark.parametrize("risk_free", [0.0, 0.03])
def test_return_stats_match_vectorbt(freq, seed, risk_free):
    equity = random_equity(2_000, freq, seed)
    ann = bars_per_year(equity.index)
    stats = performance_stats(equity, NO_TRADES, np.zeros(len(equity), bool), ann, risk_free)

    rf_bar = (1 + risk_free) ** (1 / ann) - 1
    returns = equity.pct_change().iloc[1:]
    ref = returns.vbt.returns(freq=freq, year_freq="365 days")
    assert ref.ann_factor == pytest.approx(ann)
    assert stats["sharpe"] == pytest.approx(ref.sharpe_ratio(risk_free=rf_bar), rel=1e-9)
    assert stats["sortino"] == pytest.approx(ref.sortino_ratio(required_return=rf_bar), rel=1e-9)
    assert stats["ann_volatility"] == pytest.approx(ref.annualized_volatility(), rel=1e-9)
    assert stats["max_drawdown"] == pytest.approx(ref.max_drawdown(), rel=1e-9)
    assert stats["total_return"] == pytest.approx(ref.total(), rel=1e-9)
    # On a regular index vectorbt's bar-count years equal the calendar span.
    assert stats["cagr"] == pytest.approx(ref.annualized(), rel=1e-9)
    assert stats["calmar"] == pytest.approx(ref.calmar_ratio(), rel=1e-9)
    # vectorbt's drawdown records: peak bar and recovery (or last) bar of every drawdown. (Its
    # own `duration` starts one bar after the peak for recovered drawdowns; ours, like
    # backtesting.py's, runs from the peak.)
    records = equity.vbt(freq=freq).drawdowns.values
    longest = np.argmax(records["end_idx"] - records["peak_idx"])
    peak, end = records["peak_idx"][longest], records["end_idx"][longest]
    assert stats["max_drawdown_duration"] == equity.index[end] - equity.index[peak]


def test_cagr_uses_calendar_span_on_irregular_index():
    # 3 bars over 2 years (730 days): doubling -> 2 ** (1/2) - 1 a year.
    equity = pd.Series(
        [100.0, 150.0, 200.0],
        index=pd.DatetimeIndex(["2020-01-01", "2020-01-02", "2021-12-31"], tz="UTC"),
    )
    stats = performance_stats(equity, NO_TRADES, np.zeros(3, bool), 365.0)
    assert stats["cagr"] == pytest.approx(math.sqrt(2) - 1, rel=1e-12)


# --- trade statistics -------------------------------------------------------------------------


def test_trade_stats_by_hand():
    equity = daily(np.linspace(100.0, 150.0, 20), freq="1h")
    # pnl 50, -20, 30, -10, 0: winners 50 + 30 = 80, losers -30 -> profit factor 80/30;
    # 2 winners out of 5 -> win rate 0.4; mean pnl 50/5 = 10.
    # durations 2h, 1h, 5h, 3h, 0h -> mean 11h / 5 = 2h12m.
    trades = make_trades(
        [(0, 2, 50.0), (3, 4, -20.0), (5, 10, 30.0), (11, 14, -10.0), (15, 15, 0.0)]
    )
    trades[-1]["exit_reason"] = REASON_END
    stats = performance_stats(equity, trades, np.ones(20, bool), 8760.0)
    assert stats["total_trades"] == 5
    assert stats["win_rate"] == pytest.approx(0.4)
    assert stats["profit_factor"] == pytest.approx(80 / 30)
    assert stats["expectancy"] == pytest.approx(10.0)
    assert stats["largest_win"] == 50.0
    assert stats["largest_loss"] == -20.0
    assert stats["avg_trade_duration"] == pd.Timedelta(hours=2, minutes=12)
    assert stats["exposure_time"] == 1.0


def test_no_trades():
    stats = performance_stats(daily([100.0, 101.0, 102.0]), NO_TRADES, np.zeros(3, bool), 365.0)
    assert stats["total_trades"] == 0
    for key in ("win_rate", "profit_factor", "expectancy", "largest_win", "largest_loss"):
        assert math.isnan(stats[key]), key
    assert stats["avg_trade_duration"] is pd.NaT
    assert stats["exposure_time"] == 0.0


def test_no_losing_trades_gives_infinite_profit_factor():
    trades = make_trades([(0, 1, 5.0), (1, 2, 0.0)])
    stats = performance_stats(daily([100.0, 105.0, 105.0]), trades, np.ones(3, bool), 365.0)
    assert stats["profit_factor"] == math.inf
    assert stats["win_rate"] == 0.5
    assert math.isnan(stats["largest_loss"])


def test_only_breakeven_trades_give_nan_profit_factor():
    trades = make_trades([(0, 1, 0.0)])
    stats = performance_stats(daily([100.0, 100.0, 100.0]), trades, np.ones(3, bool), 365.0)
    assert math.isnan(stats["profit_factor"])
    assert stats["win_rate"] == 0.0


# --- edge cases of the curve ------------------------------------------------------------------


def test_flat_equity():
    stats = performance_stats(daily([100.0] * 10), NO_TRADES, np.zeros(10, bool), 365.0)
    assert stats["total_return"] == 0.0
    assert stats["cagr"] == 0.0
    assert stats["ann_volatility"] == 0.0
    assert stats["max_drawdown"] == 0.0
    assert stats["max_drawdown_duration"] == pd.Timedelta(0)
    for key in ("sharpe", "sortino", "calmar"):  # 0 / 0
        assert math.isnan(stats[key]), key


def test_steady_growth_has_no_drawdown():
    # +1 % every bar: no return below the risk-free rate -> Sortino +inf; no drawdown -> Calmar
    # +inf. (The float returns differ in the last bits, so the std is tiny but not exactly 0.)
    equity = daily(100.0 * 1.01 ** np.arange(6))
    stats = performance_stats(equity, NO_TRADES, np.ones(6, bool), 365.0)
    assert stats["max_drawdown"] == 0.0
    assert stats["calmar"] == math.inf
    assert stats["sortino"] == math.inf
    assert stats["ann_volatility"] == pytest.approx(0.0, abs=1e-12)


def test_two_bars_is_enough_for_most_stats():
    stats = performance_stats(daily([100.0, 90.0]), NO_TRADES, np.zeros(2, bool), 365.0)
    assert stats["total_return"] == pytest.approx(-0.1)
    assert math.isnan(stats["sharpe"])  # one return: no sample std (ddof=1)
    assert math.isnan(stats["ann_volatility"])
    # one return -0.1: downside deviation sqrt(0.01) = 0.1 -> per-bar Sortino -1
    assert stats["sortino"] == pytest.approx(-math.sqrt(365))
    assert stats["max_drawdown"] == pytest.approx(-0.1)
    assert stats["max_drawdown_duration"] == pd.Timedelta(days=1)


def test_unrecovered_drawdown_runs_to_the_last_bar():
    # 100 120 110 115 100 119: peak 120 at bar 1, never regained -> under water from bar 1 to
    # the last bar (5) = 4 days; deepest point 100/120 - 1.
    stats = performance_stats(
        daily([100.0, 120.0, 110.0, 115.0, 100.0, 119.0]), NO_TRADES, np.zeros(6, bool), 365.0
    )
    assert stats["max_drawdown_duration"] == pd.Timedelta(days=4)
    assert stats["max_drawdown"] == pytest.approx(100 / 120 - 1)


def test_final_equity_wiped_out():
    stats = performance_stats(daily([100.0, 50.0, 0.0]), NO_TRADES, np.ones(3, bool), 365.0)
    assert stats["total_return"] == -1.0
    assert stats["cagr"] == -1.0
    assert stats["max_drawdown"] == -1.0


@pytest.mark.parametrize(
    ("equity", "exposure", "trades", "error", "message"),
    [
        ([100.0], [True], NO_TRADES, ValueError, "at least 2 bars"),
        ([0.0, 100.0], [True, True], NO_TRADES, ValueError, "start positive"),
        ([100.0, np.nan], [True, True], NO_TRADES, ValueError, "NaN"),
        ([100.0, 101.0], [True], NO_TRADES, ValueError, "one value per equity bar"),
        ([100.0, 101.0], [True, True], np.zeros(1), TypeError, "trade_dt"),
        ([100.0, 101.0], [True, True], make_trades([(0, 5, 1.0)]), ValueError, "exit_bar 5"),
    ],
)
def test_bad_inputs_raise(equity, exposure, trades, error, message):
    with pytest.raises(error, match=message):
        performance_stats(daily(equity), trades, np.array(exposure), 365.0)


def test_bad_ann_factor_and_index():
    with pytest.raises(ValueError, match="ann_factor"):
        performance_stats(daily([1.0, 2.0]), NO_TRADES, np.ones(2, bool), 0.0)
    with pytest.raises(TypeError, match="DatetimeIndex"):
        performance_stats(pd.Series([1.0, 2.0]), NO_TRADES, np.ones(2, bool), 365.0)


# --- the streaming kernels --------------------------------------------------------------------


def test_streaming_state_equals_two_pass_numpy():
    # the state folded bar by bar (as a sweep and the live runner do) against two-pass formulas
    # over the whole curve
    equity = random_equity(300, "1D", seed=9).to_numpy().copy()
    equity[150:170] = equity[149] * np.linspace(0.7, 0.9, 20)  # a deep, long drawdown
    exposure = np.arange(300) % 3 == 0
    rf_bar = 1e-4
    state = nb.stats_init_nb(rf_bar)
    for value, flag in zip(equity, exposure):
        nb.stats_update_nb(state, value, flag)

    excess = equity[1:] / equity[:-1] - 1.0 - rf_bar
    peak = np.maximum.accumulate(equity)
    # underwater stretches: runs of bars below the running peak; each runs from the bar before
    # it (the peak) to the bar after it (the recovery), or to the last bar if never recovered
    edges = np.flatnonzero(np.diff(np.r_[0, (equity < peak).astype(int), 0]))
    starts, stops = edges[::2], edges[1::2]
    longest = (np.minimum(stops, len(equity) - 1) - (starts - 1)).max()
    assert state[nb.S_BARS] == 300 and state[nb.S_N_RET] == 299
    assert state[nb.S_FIRST_EQUITY] == equity[0] and state[nb.S_LAST_EQUITY] == equity[-1]
    assert state[nb.S_MEAN] == pytest.approx(excess.mean(), rel=1e-12)
    assert state[nb.S_M2] == pytest.approx(((excess - excess.mean()) ** 2).sum(), rel=1e-12)
    assert state[nb.S_DOWN_SQ] == pytest.approx((np.minimum(excess, 0.0) ** 2).sum(), rel=1e-12)
    assert state[nb.S_PEAK] == peak[-1]
    assert state[nb.S_MAX_DD] == pytest.approx((equity / peak - 1.0).min(), rel=1e-12)
    assert state[nb.S_DD_END_BAR] - state[nb.S_DD_START_BAR] == longest
    assert state[nb.S_EXPOSED_BARS] == exposure.sum()


# --- formatting -------------------------------------------------------------------------------


def test_stats_table_layout():
    equity = daily([100.0, 110.0, 99.0, 108.9, 119.79])
    trades = make_trades([(0, 1, 10.0), (2, 4, 20.79)])
    strategy = performance_stats(equity, trades, np.ones(5, bool), 365.0)
    benchmark = performance_stats(equity, NO_TRADES, np.ones(5, bool), 365.0)
    table = stats_table(strategy, benchmark, names=("SMA cross", "Hold"))
    lines = table.splitlines()
    assert "SMA cross" in lines[0] and "Hold" in lines[0]
    assert len({len(line) for line in lines}) == 1  # every line padded to one width
    row = {line.split("  ")[0].strip(): line for line in lines[2:]}
    assert row["Total return"].split()[-1] == "19.79%"
    assert row["Max drawdown"].split()[-1] == "-10.00%"
    assert row["Max drawdown duration"].split()[-1] == "3d"
    assert row["Win rate"].split()[-2:] == ["100.00%", "n/a"]
    assert row["Trades"].split()[-2:] == ["2", "0"]
    assert row["Avg trade duration"].split()[-3:] == ["1d", "12:00", "n/a"]  # (1d + 2d) / 2


def test_stats_frame_keeps_raw_values():
    equity = daily([100.0, 101.0, 102.0])
    a = performance_stats(equity, NO_TRADES, np.ones(3, bool), 365.0)
    frame = stats_frame(a, {**a, "extra": 1.5}, names=("A", "B"))
    assert list(frame.columns) == ["A", "B"]
    assert list(frame.index) == KEYS + ["extra"]
    assert frame.loc["total_return", "A"] == a["total_return"]
    assert frame.loc["extra", "A"] is None
    with pytest.raises(ValueError, match="2 column names"):
        stats_frame(a, a, names=("only one",))
