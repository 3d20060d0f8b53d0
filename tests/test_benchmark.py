"""``Backtest(benchmark=)``: what a backtest is compared with, the relative statistics in its
table, and per-instrument statistics of multi-instrument runs.

Relative statistics are checked against a least-squares fit (``np.linalg.lstsq``) and
hand-written formulas; per-instrument rows against backtests of each instrument alone.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from framework import Backtest
from framework.cli import main
from framework.data import load_ohlcv

PAIR = {"BTC": "BTC_USDT-1d", "ETH": "ETH_USDT-1d"}


@pytest.fixture(scope="module")
def eth():
    return load_ohlcv("ETH_USDT-1d")


@pytest.fixture(scope="module")
def vs_eth():
    return Backtest("sma_cross", "BTC_USDT-1d", benchmark="ETH_USDT-1d", fees=0.001, slippage=0.0005).run()


def _returns(values: np.ndarray) -> np.ndarray:
    return values[1:] / values[:-1] - 1.0


def test_dataset_benchmark_is_its_buy_and_hold_by_hand(vs_eth, eth):
    s = vs_eth.settings
    prices = eth.loc[vs_eth.index]
    entry = prices["open"].iloc[1] * (1 + s.slippage)
    qty = s.init_cash / (entry * (1 + s.fees))
    expected = s.init_cash - qty * entry * (1 + s.fees) + qty * prices["close"].to_numpy()
    expected[0] = s.init_cash
    equity = vs_eth.benchmark[0]
    np.testing.assert_allclose(equity.to_numpy(), expected, rtol=1e-12)
    assert vs_eth.benchmark_name == "Buy & Hold ETH_USDT-1d"
    assert vs_eth.benchmark_stats["total_return"] == pytest.approx(expected[-1] / s.init_cash - 1, rel=1e-12)


def test_relative_stats_against_least_squares_and_hand_formulas(eth):
    ann, rf = 365.0, 0.03
    result = Backtest("sma_cross", "BTC_USDT-1d", benchmark="ETH_USDT-1d", risk_free=rf).run()
    s = _returns(result.equity.to_numpy())
    b = _returns(result.benchmark[0].to_numpy())
    rf_bar = (1 + rf) ** (1 / ann) - 1
    design = np.column_stack([np.ones_like(b), b - rf_bar])
    (intercept, slope), *_ = np.linalg.lstsq(design, s - rf_bar, rcond=None)
    got = result.relative_stats
    assert got["beta"] == pytest.approx(slope, rel=1e-9)
    assert got["alpha"] == pytest.approx(intercept * ann, rel=1e-9)
    assert got["correlation"] == pytest.approx(np.corrcoef(s, b)[0, 1], rel=1e-9)
    active = s - b
    te = math.sqrt(sum((a - active.mean()) ** 2 for a in active) / (len(active) - 1))
    assert got["tracking_error"] == pytest.approx(te * math.sqrt(ann), rel=1e-9)
    assert got["information_ratio"] == pytest.approx(active.mean() / te * math.sqrt(ann), rel=1e-9)
    for key, mask in (("up_capture", b > 0), ("down_capture", b < 0)):
        n = mask.sum()
        geo = [math.prod(1 + x for x in r[mask]) ** (1 / n) - 1 for r in (s, b)]
        assert got[key] == pytest.approx(geo[0] / geo[1], rel=1e-9)
    assert got["observations"] == len(result.index) - 1


def test_stats_table_shows_the_benchmark_and_relative_rows(vs_eth):
    table = vs_eth.stats_table()
    header = table.splitlines()[0]
    assert "sma_cross" in header and "Buy & Hold ETH_USDT-1d" in header
    rows = {line[:22].strip(): line for line in table.splitlines()[2:]}
    rel = vs_eth.relative_stats
    assert rows["Beta"].split()[-1] == f"{rel['beta']:,.2f}"
    assert rows["Alpha (ann.)"].split()[-1] == f"{rel['alpha'] * 100:,.2f}%"
    assert rows["Tracking error (ann.)"].split()[-1] == f"{rel['tracking_error'] * 100:,.2f}%"
    for label in ("Correlation", "Information ratio", "Up capture", "Down capture"):
        assert label in rows
    # default: buy-and-hold of the traded instrument, as before
    default = Backtest("sma_cross", "BTC_USDT-1d").run()
    assert default.benchmark_name == "Buy & Hold"
    assert "Buy & Hold" in default.stats_table().splitlines()[0]


def test_price_series_return_series_and_instrument_name(eth):
    close = eth["close"].rename("ETH close")
    by_prices = Backtest("sma_cross", "BTC_USDT-1d", benchmark=close).run()
    bench = by_prices.benchmark[0]
    init = by_prices.settings.init_cash
    np.testing.assert_allclose(bench.to_numpy(), init * close.loc[by_prices.index] / close.loc[by_prices.index[0]],
                               rtol=1e-12)
    assert by_prices.benchmark_name == "ETH close" and len(by_prices.benchmark[1]) == 0
    # the same prices as returns (a naive index is UTC) give the same curve
    returns = close.pct_change().fillna(0.0)
    returns.index = returns.index.tz_localize(None)
    by_returns = Backtest("sma_cross", "BTC_USDT-1d", benchmark=returns).run()
    np.testing.assert_allclose(by_returns.benchmark[0].to_numpy(), bench.to_numpy(), rtol=1e-10)
    # an instrument of the run is its buy-and-hold with the whole starting cash: the same as
    # the dataset of the same prices
    pair = Backtest("sma_cross", PAIR, benchmark="ETH").run()
    dataset = Backtest("sma_cross", PAIR, benchmark="ETH_USDT-1d").run()
    np.testing.assert_array_equal(pair.benchmark[0].to_numpy(), dataset.benchmark[0].to_numpy())
    assert pair.benchmark[0].iloc[0] == pair.equity.iloc[0] == 2 * init  # two cash groups
    assert pair.benchmark_name == "Buy & Hold ETH"


def test_series_benchmark_with_gaps_compares_on_its_bars(eth):
    close = eth["close"].iloc[::7]  # weekly prices
    result = Backtest("sma_cross", "BTC_USDT-1d", benchmark=close).run()
    common = close.index.intersection(result.index)
    assert result.benchmark[0].index.equals(common)
    s = _returns(result.equity.loc[common].to_numpy())
    b = _returns(close.loc[common].to_numpy())
    assert result.relative_stats["correlation"] == pytest.approx(np.corrcoef(s, b)[0, 1], rel=1e-9)
    assert result.relative_stats["observations"] == len(common) - 1


def test_benchmark_from_trade_from_on(eth):
    result = Backtest("sma_cross", "BTC_USDT-1d", trade_from="2022-01-01", benchmark=eth["close"]).run()
    bench = result.benchmark[0]
    assert bench.index[0] == pd.Timestamp("2022-01-01", tz="UTC") == result.index[result.trade_from]
    assert result.benchmark_stats["total_return"] == pytest.approx(
        eth["close"].iloc[-1] / eth["close"].loc["2022-01-01"] - 1, rel=1e-12)


def test_bad_benchmarks_are_refused_in_the_keywords_words(eth):
    with pytest.raises(ValueError, match=r"benchmark 'SOL' is no instrument of the data \(BTC, ETH\)"):
        Backtest("sma_cross", PAIR, benchmark="SOL")
    with pytest.raises(TypeError, match="needs a DatetimeIndex"):
        Backtest("sma_cross", "BTC_USDT-1d", benchmark=pd.Series([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="NaN"):
        Backtest("sma_cross", "BTC_USDT-1d", benchmark=eth["close"].where(eth.index.day != 3))
    early = eth["close"].copy()
    early.index = early.index - pd.Timedelta(days=20_000)
    with pytest.raises(ValueError, match="shares 0 bars"):
        Backtest("sma_cross", "BTC_USDT-1d", benchmark=early)
    with pytest.raises(TypeError, match="benchmark must be an instrument of the data"):
        Backtest("sma_cross", "BTC_USDT-1d", benchmark=42)
    with pytest.raises(TypeError, match="got a builtins.dict"):
        Backtest("sma_cross", "BTC_USDT-1d", benchmark=PAIR)


# --- per instrument ---------------------------------------------------------------------------


def test_instrument_stats_without_cash_sharing_equal_each_instrument_alone():
    settings = {"fees": 0.001, "sl_pct": 0.08}
    pair = Backtest("sma_cross", PAIR, **settings).run()
    table = pair.instrument_stats()
    assert list(table.index) == ["BTC", "ETH"]
    for name, source in PAIR.items():
        alone = Backtest("sma_cross", source, **settings).run()
        row = table.loc[name]
        for key in ("total_return", "cagr", "sharpe", "max_drawdown", "exposure_time", "win_rate",
                    "profit_factor"):
            assert row[key] == pytest.approx(alone.stats[key], rel=1e-9, abs=1e-12), key
        assert row["total_trades"] == alone.stats["total_trades"] == len(alone.trades)
        assert row["pnl"] == pytest.approx(alone.equity.iloc[-1] - alone.equity.iloc[0], rel=1e-9)
        assert row["fees"] == pytest.approx(alone.fills["fee"].sum(), rel=1e-12)
        assert row["buy_and_hold_return"] == pytest.approx(alone.benchmark_stats["total_return"], rel=1e-12)
    assert table["contribution"].sum() == pytest.approx(pair.stats["total_return"], rel=1e-9)


def test_instrument_stats_with_cash_sharing_split_the_pnl():
    result = Backtest("sma_cross", PAIR, cash_sharing=True, size=0.5, trade_from="2021-01-01").run()
    table = result.instrument_stats()
    t0 = result.trade_from
    assert (table["capital"] == result.settings.init_cash / 2).all()
    total_pnl = result.equity.iloc[-1] - result.equity.iloc[t0]
    assert table["pnl"].sum() == pytest.approx(total_pnl, rel=1e-9)
    assert table["contribution"].sum() == pytest.approx(result.stats["total_return"], rel=1e-9)
    # each instrument's P&L by hand: cash of its fills plus its position at the last close
    fills = result.fills
    for name in PAIR:
        mine = fills[fills["instrument"] == name]
        sign = np.where(mine["side"] == "buy", -1.0, 1.0)
        cash = (sign * mine["qty"] * mine["price"] - mine["fee"]).sum()
        value = cash + result.positions[name].iloc[-1] * result.frames[name]["close"].iloc[-1]
        assert table.loc[name, "pnl"] == pytest.approx(value, rel=1e-9)
        assert table.loc[name, "total_trades"] == (result.trades["instrument"] == name).sum()


# --- command line -----------------------------------------------------------------------------


def test_cli_backtest_benchmark(capsys):
    assert main(["backtest", "sma_cross", "--data", "BTC_USDT-1d", "--data", "ETH_USDT-1d",
                 "--benchmark", "ETH_USDT-1d"]) == 0
    out = capsys.readouterr().out
    assert "Buy & Hold ETH_USDT-1d" in out and "Information ratio" in out and "Beta" in out
    assert main(["backtest", "sma_cross", "--data", "BTC_USDT-1d", "--benchmark", "NOPE-1d"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--benchmark NOPE-1d" in err and "BTC_USDT-1d" in err
