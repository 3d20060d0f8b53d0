"""Parameter sweeps: each combination's statistics equal a Backtest's with those parameters."""

import logging
import re

import pytest

from framework.backtest import Backtest
from framework.sweep import sweep
from framework.synthetic import generate_ohlcv
from strategies.donchian_breakout import DonchianBreakout
from strategies.sma_cross import SmaCross

STATS = ["total_return", "cagr", "ann_volatility", "sharpe", "sortino", "calmar", "max_drawdown",
         "max_drawdown_duration", "exposure_time", "total_trades"]


def same(a, b):
    return a == b or (a != a and b != b)  # NaN equals NaN here


def assert_rows_match_backtests(table, cls, data, settings):
    for _, row in table.iterrows():
        params = {k: type(cls.param_spec()[k].default)(row[k]) for k in cls.param_spec()}
        stats = Backtest(cls(**params), data, **settings).run().stats
        for key in STATS:
            assert same(row[key], stats[key]), (params, key, row[key], stats[key])


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


def test_sweep_takes_one_instrument():
    data = generate_ohlcv(200, 2, freq="1h", seed=1, names=["A", "B"])
    with pytest.raises(ValueError, match="sweep runs one instrument, got 2 .A, B."):
        sweep("sma_cross", data, {"fast": [5]})
    with pytest.raises(ValueError, match="chunk must be an integer >= 1"):
        sweep("sma_cross", data["A"], {"fast": [5]}, chunk=0)


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
