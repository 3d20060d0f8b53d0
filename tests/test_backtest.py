"""Backtest API: result contents, statistics beside buy-and-hold, settings and data errors."""

import numpy as np
import pytest

from framework.backtest import Backtest
from framework.data import DataValidationError
from framework.synthetic import generate_ohlcv
from strategies.sma_cross import SmaCross

STAT_KEYS = [
    "total_return", "cagr", "ann_volatility", "sharpe", "sortino", "calmar", "max_drawdown",
    "max_drawdown_duration", "win_rate", "profit_factor", "expectancy", "total_trades",
    "avg_trade_duration", "largest_win", "largest_loss", "exposure_time",
]


@pytest.fixture(scope="module")
def result():
    return Backtest(SmaCross(fast=5, slow=20), "BTC_USDT-1d", fees=0.001).run()


def test_result_has_everything_the_issue_names(result):
    assert set(STAT_KEYS) <= set(result.stats) and set(STAT_KEYS) <= set(result.benchmark_stats)
    trades = result.trades
    for col in ("entry_time", "exit_time", "entry_price", "exit_price", "qty", "side", "pnl", "return", "duration", "exit_reason"):
        assert col in trades
    assert len(trades) == result.stats["total_trades"] > 10
    assert {"time", "side", "qty", "price", "fee", "order_type", "reason"} <= set(result.fills)
    assert result.equity.index.equals(result.index) and result.cash.index.equals(result.index)
    assert result.positions.shape == (len(result.index), 1)
    np.testing.assert_allclose(result.drawdown, result.equity / result.equity.cummax() - 1)
    assert result.stats["max_drawdown"] == pytest.approx(result.drawdown.min())
    table = result.stats_table()
    assert "Buy & Hold" in table and "Sharpe ratio" in table


def test_buy_and_hold_benchmark_is_the_asset_return_less_fees(result):
    bars = result.frames["BTC_USDT-1d"]
    expected = bars["close"].iloc[-1] / bars["open"].iloc[1] / 1.001 - 1  # bought at the 2nd open
    assert result.benchmark_stats["total_return"] == pytest.approx(expected, rel=1e-12)


def test_annualisation_follows_the_bar_frequency():
    daily = Backtest(SmaCross(), generate_ohlcv(500, freq="1D", seed=1))
    hourly = Backtest(SmaCross(), generate_ohlcv(500, freq="1h", seed=1))
    assert daily.ann_factor == 365 and hourly.ann_factor == 365 * 24
    res = hourly.run()
    r = res.equity.pct_change().dropna()
    assert res.stats["sharpe"] == pytest.approx(r.mean() / r.std() * np.sqrt(8760), rel=1e-9)


def test_strategy_by_name_or_class():
    data = generate_ohlcv(400, freq="1h", seed=2)
    a = Backtest("sma_cross", data).run()
    b = Backtest(SmaCross, data).run()
    np.testing.assert_array_equal(a.fill_records, b.fill_records)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"fees": 0.5}, r"fees must be in \[0, 0.1\]"),
        ({"size": 0.0}, r"size must be in \(0, 1\]"),
        ({"sizing": "risk", "size": 1.5}, r"size must be in \(0, 1\]"),
        ({"sizing": "kelly"}, "sizing must be one of fraction, cash, risk, vol_target"),
        ({"sl_pct": 1.2}, r"sl_pct must be in \(0, 1\)"),
        ({"atr_window": 0}, r"atr_window must be an integer in \[1, 1000000\], got 0"),
        ({"fee": 0.1}, "unknown setting 'fee'; valid settings:"),
        ({"sl_pct": 0.1, "sl_atr": 2.0}, "either sl_pct or sl_atr"),
    ],
)
def test_invalid_settings_name_the_setting(settings, message):
    with pytest.raises(ValueError, match=message):
        Backtest(SmaCross(), generate_ohlcv(100, seed=1), **settings)


def _broken(kind):
    d = generate_ohlcv(60, freq="1D", seed=4)
    if kind == "nan":
        d.iloc[10, d.columns.get_loc("close")] = np.nan
    elif kind == "duplicate":
        d.index = d.index.insert(5, d.index[5])[:60]
    elif kind == "unsorted":
        d = d.iloc[[0, 1, 3, 2, *range(4, 60)]]
    elif kind == "missing":
        d = d.drop(columns=["low"])
    elif kind == "non_positive":
        d.iloc[7, d.columns.get_loc("open")] = 0.0
    elif kind == "high_below_low":
        d.iloc[9, d.columns.get_loc("high")] = d["low"].iloc[9] - 1
    return d


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("nan", r"row 10, 2020-01-11"),
        ("duplicate", r"row 6, 2020-01-06"),
        ("unsorted", r"row 3, 2020-01-03"),
        ("missing", r"missing column\(s\) \['low'\]"),
        ("non_positive", r"row 7, 2020-01-08"),
        ("high_below_low", r"row 9, 2020-01-10"),
    ],
)
def test_bad_data_raises_naming_the_first_offending_rows(kind, expected):
    with pytest.raises(DataValidationError, match=expected):
        Backtest(SmaCross(), _broken(kind))


def test_unknown_dataset_name_lists_bundled_names():
    with pytest.raises(Exception, match="BTC_USDT-1d"):
        Backtest(SmaCross(), "BTC_USDT-3m")


def test_instruments_must_share_timestamps():
    a = generate_ohlcv(100, freq="1h", seed=1)
    b = generate_ohlcv(100, freq="1h", seed=2, start="2021-01-01")
    with pytest.raises(ValueError, match="different timestamps"):
        Backtest(SmaCross(), {"A": a, "B": b})


# --- ann_factor and risk_free keywords; align_ohlcv output as data ------------------------------


def test_ann_factor_overrides_the_bar_spacing_for_sharpe_and_volatility():
    data = generate_ohlcv(500, freq="1D", seed=3)
    res = Backtest(SmaCross(fast=5, slow=20), data, ann_factor=252).run()
    assert res.ann_factor == 252.0
    r = res.equity.to_numpy()[1:] / res.equity.to_numpy()[:-1] - 1.0  # returns by hand
    assert res.stats["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(252), rel=1e-9)
    assert res.stats["ann_volatility"] == pytest.approx(r.std(ddof=1) * np.sqrt(252), rel=1e-9)
    b = res.benchmark[0].to_numpy()
    rb = b[1:] / b[:-1] - 1.0
    assert res.benchmark_stats["sharpe"] == pytest.approx(rb.mean() / rb.std(ddof=1) * np.sqrt(252), rel=1e-9)


def test_ann_factor_reaches_volatility_target_sizing():
    """Realised volatility scales with sqrt(bars per year), so the first vol-targeted entry
    (sized on the initial cash) is sqrt(365 / 252) times larger with 252."""
    data = generate_ohlcv(400, freq="1D", seed=6)
    kw = dict(sizing="vol_target", size=0.2, fees=0.0)
    q365 = Backtest(SmaCross(fast=5, slow=20), data, **kw).run().fill_records["qty"][0]
    q252 = Backtest(SmaCross(fast=5, slow=20), data, ann_factor=252, **kw).run().fill_records["qty"][0]
    assert q252 / q365 == pytest.approx(np.sqrt(365 / 252), rel=1e-9)


def test_risk_free_is_subtracted_per_bar_in_sharpe_and_sortino():
    data = generate_ohlcv(600, freq="1D", seed=8)
    res = Backtest(SmaCross(fast=5, slow=20), data, ann_factor=252, risk_free=0.04).run()
    equity = res.equity.to_numpy()
    excess = equity[1:] / equity[:-1] - 1.0 - (1.04 ** (1 / 252) - 1.0)
    assert res.stats["sharpe"] == pytest.approx(excess.mean() / excess.std(ddof=1) * np.sqrt(252), rel=1e-9)
    downside = np.sqrt(np.mean(np.minimum(excess, 0.0) ** 2))
    assert res.stats["sortino"] == pytest.approx(excess.mean() / downside * np.sqrt(252), rel=1e-9)
    plain = Backtest(SmaCross(fast=5, slow=20), data, ann_factor=252).run()
    assert res.stats["sharpe"] < plain.stats["sharpe"]  # the rate matters
    np.testing.assert_array_equal(res.fill_records, plain.fill_records)  # ...for the statistics only


@pytest.mark.parametrize("keyword, value, message", [
    ("ann_factor", 0, "ann_factor must be a finite number > 0 .*got 0"),
    ("ann_factor", -252.0, "ann_factor must be a finite number > 0 .*got -252.0"),
    ("ann_factor", float("nan"), "ann_factor must be a finite number > 0 .*got nan"),
    ("ann_factor", float("inf"), "ann_factor must be a finite number > 0 .*got inf"),
    ("ann_factor", True, "ann_factor must be a finite number > 0 .*got True"),
    ("ann_factor", "252", "ann_factor must be a finite number > 0 .*got '252'"),
    ("risk_free", -1.0, r"risk_free must be a finite annual rate \(a fraction above -1, e.g. 0.04 for 4 %\), got -1.0"),
    ("risk_free", float("nan"), "risk_free must be a finite annual rate .*got nan"),
    ("risk_free", "4%", "risk_free must be a finite annual rate .*got '4%'"),
])
def test_bad_ann_factor_or_risk_free_names_the_keyword(keyword, value, message):
    with pytest.raises(ValueError, match=message):
        Backtest(SmaCross(), generate_ohlcv(100, seed=1), **{keyword: value})


def test_align_ohlcv_output_is_accepted_as_instruments():
    from framework.data import align_ohlcv

    a = generate_ohlcv(300, freq="1h", seed=1)
    b = generate_ohlcv(300, freq="1h", seed=2, start="2020-01-03")  # overlaps a's last 252 bars
    aligned = align_ohlcv({"A": a, "B": b})
    common = a.index.intersection(b.index)
    expected = Backtest(SmaCross(fast=5, slow=20), {"A": a.loc[common], "B": b.loc[common]}).run()
    for data in (aligned, aligned.swaplevel(axis=1)):  # (field, symbol) or (symbol, field)
        res = Backtest(SmaCross(fast=5, slow=20), data).run()
        assert res.columns == ["A", "B"] and res.index.equals(common)
        np.testing.assert_array_equal(res.fill_records, expected.fill_records)
        np.testing.assert_array_equal(res.group_equity, expected.group_equity)
    assert len(expected.fill_records) > 4


def test_multiindex_columns_without_ohlcv_fields_are_refused():
    import pandas as pd

    a = generate_ohlcv(50, freq="1h", seed=1)
    frame = pd.concat({"A": a.rename(columns=str.upper)}, axis=1)
    with pytest.raises(ValueError, match="one level of OHLCV field names"):
        Backtest(SmaCross(), frame)
