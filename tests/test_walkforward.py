"""Walk-forward: window bounds, selection, out-of-sample runs and the stitched equity, each
against an independent computation with sweep/Backtest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from framework.backtest import Backtest, load_instruments, strategy_class
from framework.sweep import sweep
from framework.walkforward import splits, walk_forward

DATA = "BTC_USDT-1d"
GRID = {"fast": [5, 10, 20], "slow": [30, 60]}
TRAIN, TEST, WARMUP = 365, 240, 60


@pytest.fixture(scope="module")
def index() -> pd.DatetimeIndex:
    return load_instruments(DATA)[DATA].index


@pytest.fixture(scope="module", params=[False, True], ids=["rolling", "anchored"])
def wf(request):
    return walk_forward("sma_cross", DATA, GRID, train=TRAIN, test=TEST, warmup=WARMUP,
                        anchored=request.param, fees=0.001)


def test_splits_by_hand() -> None:
    # 10 bars, train 4, test 3, warm-up 2: tests [4..6], [7..9]
    assert splits(10, train=4, test=3, warmup=2) == [(0, 3, 2, 4, 6), (3, 6, 5, 7, 9)]
    assert splits(10, train=4, test=3, warmup=2, anchored=True) == [(0, 3, 2, 4, 6), (0, 6, 5, 7, 9)]


def test_splits_cover_tail_and_refuse_bad_keywords() -> None:
    assert [w[3:] for w in splits(11, train=4, test=3)] == [(4, 6), (7, 9)]  # bar 10 alone: untested
    assert [w[3:] for w in splits(12, train=4, test=3)] == [(4, 6), (7, 9), (10, 11)]
    assert splits(12, train=4, test=3, warmup=9)[0][2] == 0  # warm-up clipped at the first bar
    with pytest.raises(ValueError, match="train"):
        splits(5, train=4, test=3)
    with pytest.raises(ValueError, match="test must be"):
        splits(50, train=4, test=1)
    with pytest.raises(ValueError, match="warmup must be"):
        splits(50, train=4, test=3, warmup=-1)


def test_windows_are_well_formed(wf, index) -> None:
    w = wf.windows
    anchored = w["train_start"].nunique() == 1 and len(w) > 1
    for row in w.itertuples():
        assert row.train_end < row.test_start <= row.test_end
        assert index.get_loc(row.test_start) - index.get_loc(row.train_end) == 1
        assert index.get_loc(row.test_start) - index.get_loc(row.warmup_start) == WARMUP
        if anchored:
            assert row.train_start == index[0]
        else:
            assert index.get_loc(row.train_end) - index.get_loc(row.train_start) + 1 == TRAIN
    # consecutive test windows touch without overlapping, from bar TRAIN to the last bar
    assert w["test_start"].iloc[0] == index[TRAIN]
    for a, b in zip(w.itertuples(), w.iloc[1:].itertuples()):
        assert index.get_loc(b.test_start) == index.get_loc(a.test_end) + 1
    assert w["test_end"].iloc[-1] == index[-1]


def test_rolling_and_anchored_differ(index) -> None:
    rolling = splits(len(index), train=TRAIN, test=TEST)
    anchored = splits(len(index), train=TRAIN, test=TEST, anchored=True)
    assert [w[3:] for w in rolling] == [w[3:] for w in anchored]
    assert {w[0] for w in anchored} == {0}
    assert [w[0] for w in rolling] == [w[3] - TRAIN for w in rolling]


def test_choice_and_oos_runs_match_direct_calls(wf) -> None:
    level = 10_000.0
    expected = []
    for row, table in zip(wf.windows.itertuples(), wf.sweeps):
        direct = sweep("sma_cross", DATA, GRID, start=row.train_start, end=row.train_end, fees=0.001)
        pd.testing.assert_frame_equal(table, direct)
        best = direct.loc[direct["sharpe"].fillna(-np.inf).idxmax()]
        assert (row.fast, row.slow) == (best["fast"], best["slow"])
        assert row.is_sharpe == best["sharpe"]
        res = Backtest(strategy_class("sma_cross")(fast=int(best["fast"]), slow=int(best["slow"])), DATA, fees=0.001,
                       start=row.warmup_start, trade_from=row.test_start, end=row.test_end).run()
        assert row.oos_sharpe == res.stats["sharpe"] or (np.isnan(row.oos_sharpe) and np.isnan(res.stats["sharpe"]))
        assert row.oos_cagr == res.stats["cagr"]
        eq = res.equity.loc[row.test_start:]
        assert eq.index[0] == row.test_start and eq.index[-1] == row.test_end
        expected.append(eq / eq.iloc[0] * level)
        level = expected[-1].iloc[-1]
    stitched = pd.concat(expected)
    np.testing.assert_allclose(wf.equity.to_numpy(), stitched.to_numpy(), rtol=1e-12)
    assert wf.equity.index.equals(stitched.index)
    # total return is the product of the windows' total returns
    window_growth = np.prod([s.iloc[-1] / s.iloc[0] for s in expected])
    assert wf.stats["total_return"] == pytest.approx(window_growth - 1, rel=1e-12)


def test_efficiency_definition(wf) -> None:
    mean_is = wf.windows["is_cagr"].mean()
    if mean_is > 0:
        assert wf.efficiency == pytest.approx(wf.stats["cagr"] / mean_is, rel=1e-12)
    else:
        assert np.isnan(wf.efficiency)


@pytest.mark.parametrize("metric", ["max_drawdown_duration", "ann_volatility", "max_drawdown"])
def test_other_metrics_choose_the_best_row(metric) -> None:
    wf = walk_forward("sma_cross", DATA, GRID, train=TRAIN, test=TEST, metric=metric)
    for row, table in zip(wf.windows.itertuples(), wf.sweeps):
        col = table[metric]
        target = col.max() if metric == "max_drawdown" else col.min()
        first = table.loc[(col == target).to_numpy()].iloc[0]  # first in grid order among ties
        assert (row.fast, row.slow) == (first["fast"], first["slow"])


def test_refuses_bad_keywords() -> None:
    with pytest.raises(ValueError, match="metric must be one of"):
        walk_forward("sma_cross", DATA, GRID, train=TRAIN, test=TEST, metric="profit")
    with pytest.raises(ValueError, match="does not take start"):
        walk_forward("sma_cross", DATA, GRID, train=TRAIN, test=TEST, start="2021-01-01")
