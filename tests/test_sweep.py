"""Parameter sweeps: each combination's statistics equal a Backtest's with those parameters."""

import logging
import re

import numba
import pandas as pd
import pytest

from framework import sweep as sweep_module
from framework.backtest import Backtest
from framework.indicators_nb import sma_nb
from framework.strategy import SharedIndicator
from framework.sweep import sweep
from framework.synthetic import generate_ohlcv
from strategies.donchian_breakout import DonchianBreakout
from strategies.sma_cross import SmaCross
from tests.scripted import Scripted
from tests.test_parity import EXIT, LIMIT, LONG, SHORT, STOP, scripted_data

STATS = ["total_return", "cagr", "ann_volatility", "sharpe", "sortino", "calmar", "max_drawdown",
         "max_drawdown_duration", "exposure_time", "total_trades", "win_rate", "profit_factor",
         "expectancy"]


def same(a, b):
    return a == b or (a != a and b != b)  # NaN equals NaN here


def assert_rows_match_backtests(table, cls, data, settings):
    """Each row's statistics equal a Backtest's of its parameters on its instrument; its trade
    statistics equal what its trades give, counted by hand here."""
    for _, row in table.iterrows():
        params = {k: type(cls.param_spec()[k].default)(row[k]) for k in cls.param_spec()}
        source = data[row["instrument"]] if isinstance(data, dict) else data
        result = Backtest(cls(**params), source, **settings).run()
        for key in STATS:
            assert same(row[key], result.stats[key]), (params, key, row[key], result.stats[key])
        pnl = result.trades["pnl"].to_numpy()
        assert row["total_trades"] == len(pnl)
        if len(pnl):
            assert row["win_rate"] == (pnl > 0).sum() / len(pnl)
            assert row["profit_factor"] == pytest.approx(pnl[pnl > 0].sum() / -pnl[pnl < 0].sum(), rel=1e-12)
            assert row["avg_trade_return"] == pytest.approx(result.trades["return"].mean(), rel=1e-12)


def test_sma_grid_equals_one_backtest_per_combination_and_skips_invalid_pairs(caplog):
    data = generate_ohlcv(3000, freq="1h", seed=5)
    settings = dict(fees=0.001, sl_pct=0.03, tp_pct=0.06, allow_short=True)
    with caplog.at_level(logging.INFO, logger="framework.sweep"):
        table = sweep("sma_cross", data, {"fast": [5, 10, 20], "slow": [10, 30, 50]}, chunk=2, **settings)
    # fast >= slow breaks the strategy's rule: (10, 10), (20, 10) are skipped, grid order kept
    assert list(zip(table["fast"], table["slow"])) == [(5, 10), (5, 30), (5, 50), (10, 30), (10, 50), (20, 30), (20, 50)]
    assert "skipped 2 of 9 combinations" in caplog.text
    assert (table["total_trades"] > 10).all()  # the comparison below means something
    assert_rows_match_backtests(table, SmaCross, data, settings)


def test_sweep_keeps_strategy_defaults_and_risk_sizing():
    data = generate_ohlcv(2000, freq="4h", seed=9)
    table = sweep(DonchianBreakout, data, {"entry_window": [20, 40], "exit_window": [5, 10]}, fees=0.0005)
    assert len(table) == 4 and (table["total_trades"] > 3).all()
    assert_rows_match_backtests(table, DonchianBreakout, data, {"fees": 0.0005})


def test_parameters_left_out_keep_their_defaults_or_the_instance_values():
    data = generate_ohlcv(1500, freq="1h", seed=2)
    table = sweep(SmaCross, data, {"slow": [40]})
    assert table[["fast", "slow"]].to_numpy().tolist() == [[10, 40]]
    assert_rows_match_backtests(table, SmaCross, data, {})
    table = sweep(SmaCross(fast=7, slow=90), data, {"slow": [30, 60]})
    assert table[["fast", "slow"]].to_numpy().tolist() == [[7, 30], [7, 60]]
    assert_rows_match_backtests(table, SmaCross, data, {})


@pytest.mark.parametrize(
    "grid, message",
    [
        ({"fastest": [1]}, "sma_cross has no parameter 'fastest'; valid parameters: fast, slow"),
        ({"fast": []}, "grid values for 'fast' are empty"),
        ({"fast": [0, 5]}, "parameter 'fast' must be an integer in [1, 100000], got 0"),
        ({"fast": [50], "slow": [10]}, "no valid parameter combination in the grid; e.g. sma_cross: 'fast' must be less than 'slow'"),
    ],
)
def test_bad_grids_name_the_problem(grid, message):
    data = generate_ohlcv(200, freq="1h", seed=1)
    with pytest.raises(ValueError, match=re.escape(message)):
        sweep("sma_cross", data, grid)


def test_several_instruments_each_on_its_own_bars():
    """A mapping, a list of bundled names and a (field, symbol) frame: every combination on
    every instrument, instrument by instrument, each row equal to a Backtest on that one."""
    a = generate_ohlcv(1500, freq="1h", seed=21)
    b = generate_ohlcv(1100, freq="1h", seed=22, start="2021-03-01")  # other bars, other length
    grid = {"fast": [5, 10], "slow": [30]}
    table = sweep("sma_cross", {"A": a, "B": b}, grid, fees=0.001, chunk=1)
    assert table[["instrument", "fast"]].values.tolist() == [["A", 5], ["A", 10], ["B", 5], ["B", 10]]
    assert (table["total_trades"] > 5).all()
    assert_rows_match_backtests(table, SmaCross, {"A": a, "B": b}, {"fees": 0.001})

    both = generate_ohlcv(800, 2, freq="1h", seed=1, names=["X", "Y"])  # (field, symbol) columns
    table = sweep("sma_cross", both, grid)
    assert table["instrument"].tolist() == ["X", "X", "Y", "Y"]
    assert_rows_match_backtests(table, SmaCross, {"X": both["X"], "Y": both["Y"]}, {})

    table = sweep("sma_cross", ["BTC_USDT-1d", "ETH_USDT-1d"], grid, start="2022-01-01")
    one = sweep("sma_cross", "ETH_USDT-1d", grid, start="2022-01-01")
    assert one["instrument"].tolist() == ["ETH_USDT-1d"] * 2
    pd.testing.assert_frame_equal(table.iloc[2:].reset_index(drop=True), one)


@pytest.mark.parametrize(
    "data, error, message",
    [
        ([], ValueError, "data is an empty list"),
        ({}, ValueError, "data is an empty mapping"),
        (["BTC_USDT-1d", "data/BTC_USDT-1d.csv"], ValueError, "two sources for instrument 'BTC_USDT-1d'"),
        ([generate_ohlcv(50, seed=1)], TypeError, "give DataFrames as a mapping {instrument: frame}"),
    ],
)
def test_bad_instrument_lists_name_the_problem(data, error, message):
    with pytest.raises(error, match=re.escape(message)):
        sweep("sma_cross", data, {"fast": [5]})


def test_bad_chunk_and_client_are_refused():
    data = generate_ohlcv(200, freq="1h", seed=1)
    with pytest.raises(ValueError, match="chunk must be an integer >= 1"):
        sweep("sma_cross", data, {"fast": [5]}, chunk=0)
    with pytest.raises(TypeError, match="client must be a distributed.Client"):
        sweep("sma_cross", data, {"fast": [5]}, client="tcp://127.0.0.1:8786")


def test_trade_statistics_equal_the_backtest_trades_with_limits_stops_reversals_and_fees():
    """Limit and stop entries, reversals (a long signal while short), stop-loss and
    take-profit exits, fees and slippage, a position open at the end: every row's trade count,
    win rate, profit factor and expectancy equal those of its Backtest's trades, bit for bit."""
    codes = ([0, EXIT, LIMIT + LONG, LIMIT + SHORT, STOP + LONG, STOP + SHORT, LONG, SHORT],
             [0.7, 0.04, 0.05, 0.05, 0.05, 0.05, 0.03, 0.03])
    data = scripted_data(2500, 1, seed=31, codes=codes)
    data.iloc[-3:, data.columns.get_loc("volume")] = [LONG, 0, 0]  # open at the end
    settings = dict(fees=0.002, slippage=0.0005, allow_short=True, sl_pct=0.02, tp_pct=0.03, size=0.5)
    table = sweep(Scripted, data, {"order_type": [0, 1, 2], "gap": [0.0, 0.003]}, **settings)
    assert_rows_match_backtests(table, Scripted, data, settings)
    result = Backtest(Scripted(order_type=1, gap=0.003), data, **settings).run()
    reasons = set(result.trades["exit_reason"])
    assert {"stop_loss", "take_profit", "open_at_end"} <= reasons, reasons  # the cases happened
    assert (result.trades["pnl"] > 0).any() and (result.trades["pnl"] < 0).any()
    assert len(result.trades) > 50


def test_ann_factor_and_risk_free_reach_every_combination():
    data = generate_ohlcv(800, freq="1D", seed=4)
    keywords = dict(ann_factor=252, risk_free=0.03)
    table = sweep("sma_cross", data, {"fast": [5, 10], "slow": [20, 40]}, fees=0.001, **keywords)
    assert_rows_match_backtests(table, SmaCross, data, dict(fees=0.001, **keywords))
    plain = sweep("sma_cross", data, {"fast": [5, 10], "slow": [20, 40]}, fees=0.001)
    assert (table["sharpe"] != plain["sharpe"]).all()


def test_sweep_over_start_end_equals_backtests_and_refuses_trade_from():
    """``start``/``end`` choose the bars as in ``Backtest``; ``trade_from`` would be silently
    ignored by the all-bars statistics, so it is refused with the keyword named."""
    data = generate_ohlcv(2000, freq="1h", seed=11)
    settings = dict(fees=0.001, start=data.index[300], end=data.index[1799])
    table = sweep("sma_cross", data, {"fast": [5, 10], "slow": [30]}, **settings)
    assert (table["total_trades"] > 5).all()
    assert_rows_match_backtests(table, SmaCross, data, settings)
    for keyword in ("trade_from", "emergency_at"):
        with pytest.raises(ValueError, match=f"sweep does not take {keyword}"):
            sweep("sma_cross", data, {"fast": [5]}, **{keyword: data.index[500]})


def test_shared_averages_once_per_distinct_window_and_block_size_changes_nothing(monkeypatch):
    """SmaCross declares its two SMAs shared: a sweep computes each distinct window once and
    each combination reads its own two columns; the statistics still equal the Backtest's
    (which streams the SMAs in decide_nb), and do not depend on how combinations are blocked."""
    grid = {"fast": [5, 10, 20], "slow": [10, 30, 50]}
    strategies = sweep_module._combinations(SmaCross, {}, grid)
    columns, idx = sweep_module._shared_columns(SmaCross, strategies)
    assert sorted(columns) == [(0, 5), (0, 10), (0, 20), (1, 10), (1, 30), (1, 50)]  # 6, not 14
    for strat, (a, b) in zip(strategies, idx, strict=True):
        assert columns[a] == (0, strat.params["fast"]) and columns[b] == (1, strat.params["slow"])

    data = generate_ohlcv(2500, freq="1h", seed=8)
    settings = dict(fees=0.001, sl_pct=0.02, allow_short=True)
    table = sweep(SmaCross, data, grid, **settings)
    assert (table["total_trades"] > 10).all()
    assert_rows_match_backtests(table, SmaCross, data, settings)
    for block in (1, 3):  # one combination per block; a last block that is not full
        monkeypatch.setattr(sweep_module, "BLOCK", block)
        pd.testing.assert_frame_equal(sweep(SmaCross, data, grid, chunk=5, **settings), table)
    threads = numba.get_num_threads()
    try:  # the blocks one after the other instead of in threads
        numba.set_num_threads(1)
        pd.testing.assert_frame_equal(sweep(SmaCross, data, grid, chunk=5, **settings), table)
    finally:
        numba.set_num_threads(threads)


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"shared": (SharedIndicator(sma_nb, "close", "fastest"),)},
         "'fastest' is not a declared integer or real parameter"),
        ({"shared": (SharedIndicator(sma_nb, "price", "fast"),)}, "field 'price' is not one of"),
        ({"shared": (("sma", "close", "fast"),)}, "holds SharedIndicator(kernel, field, param) entries"),
        ({"decide_shared_nb": None}, "declare shared indicators and decide_shared_nb together"),
    ],
)
def test_bad_shared_declarations_fail_at_class_creation(attrs, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        type("Bad", (SmaCross,), attrs)
