"""Vectorised strategies (framework.vector): the same fills as the numba twin, the same fills
backtest / bar stepper / paper runner, causality checked, a bounded window within tolerance."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from framework import cli
from framework.backtest import Backtest
from framework.data import load_ohlcv
from framework.indicators import ema
from framework.runner import BarStepper
from framework.settings import SimSettings
from framework.strategy import Param
from framework.vector import CausalityError, VectorStrategy, check_causality
from live.store import StateStore
from strategies.sma_cross import SmaCross
from strategies.sma_cross_vec import SmaCrossVec
from tests.test_live_runner import FILES, W, csv_rows, frames, local_exchange, paper_args

ROOT = Path(__file__).resolve().parents[1]
BTC = load_ohlcv("BTC_USDT-1h").iloc[20_000:22_000]
ETH = load_ohlcv("ETH_USDT-1h").iloc[20_000:22_000]


def step_all(strategy, bt: Backtest, stepper: BarStepper | None = None, start: int = 0,
             stop: int | None = None) -> BarStepper:
    """Step the backtest's bars ``start..stop`` one at a time through a BarStepper."""
    o, h, l, c, v, ts = bt.kernel_prices()
    if stepper is None:
        stepper = BarStepper(strategy, bt.sim_vector(), n_columns=c.shape[1])
    for t in range(start, len(c) if stop is None else stop):
        stepper.step(int(ts[t] // 86_400_000_000_000), o[t], h[t], l[t], c[t], v[t], time=int(ts[t]))
    return stepper


# --- parity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [dict(allow_short=True), dict(sl_pct=0.02, tp_pct=0.04, fees=0.001)])
def test_vectorised_sma_cross_fills_equal_the_numba_sma_cross(settings):
    data = {"BTC": BTC, "ETH": ETH}
    ref = Backtest(SmaCross(fast=8, slow=40), data, cash_sharing=True, **settings).run()
    vec = Backtest(SmaCrossVec(fast=8, slow=40), data, cash_sharing=True, **settings).run()
    assert len(ref.fill_records) > 40
    assert np.array_equal(ref.fill_records, vec.fill_records)
    assert ref.equity.equals(vec.equity)


def test_the_bar_stepper_equals_the_backtest_and_resumes_from_a_snapshot():
    """Stepped bar by bar (signals recomputed over every bar so far at each close, the last row
    fed), the fills equal the backtest's; a snapshot taken half-way restores into a new stepper
    (the bars kept for the signals travel in it) that ends with the same fills."""
    strategy = SmaCrossVec(fast=5, slow=20)
    bt = Backtest(strategy, {"BTC": BTC.iloc[:600], "ETH": ETH.iloc[:600]}, allow_short=True, cash_sharing=True,
                  trade_from=BTC.index[50])
    result = bt.run()
    whole = step_all(strategy, bt)
    assert len(result.fill_records) > 10 and np.array_equal(whole.fills, result.fill_records)
    half = step_all(strategy, bt, stop=300)
    resumed = BarStepper(strategy, bt.sim_vector(), n_columns=2)
    resumed.restore(half.snapshot())
    step_all(strategy, bt, resumed, start=300)
    assert np.array_equal(resumed.fills, result.fill_records)
    other = BarStepper(SmaCrossVec(fast=6, slow=20), bt.sim_vector(), n_columns=2)
    with pytest.raises(ValueError, match="parameters"):
        other.restore(half.snapshot())
    with pytest.raises(ValueError, match="time="):
        resumed.step(resumed.day, 1.0, 1.0, 1.0, 1.0, 1.0)


def test_paper_on_the_local_exchange_equals_the_backtest_and_the_numba_strategy(tmp_path):
    """``tradpal paper --strategy strategies/sma_cross_vec.py:SmaCrossVec`` over the local
    exchange, stopped and resumed: its fills CSV equals ``tradpal backtest`` of the same bars,
    and the numba ``sma_cross`` paper run's CSV (but for the client order ids' strategy tag)."""
    data = frames(2)
    for s, frame in data.items():
        out = frame.copy()
        out.index = out.index.strftime("%Y-%m-%dT%H:%M:%SZ")
        out.to_csv(tmp_path / f"{FILES[s]}.csv", index_label="timestamp")
    spec = f"{ROOT}/strategies/sma_cross_vec.py:SmaCrossVec"
    params = ["--param", "fast=5", "--param", "slow=20", "--set", "allow_short=true", "--set", "cash_sharing=true"]
    with local_exchange(data) as ex:
        for bars in ("60", "120"):  # a restart half-way: the bars for the signals come from the snapshot
            args = paper_args("", ex, 2, tmp_path / "vec", "--strategy", spec, *params, "--max-bars", bars,
                              "--fills-out", str(tmp_path / "vec.csv"), "--summary-out", str(tmp_path / "s.json"))
            assert cli.main([a for a in args if a]) == 0
    with local_exchange(data) as ex:
        assert cli.main(paper_args("sma_cross", ex, 2, tmp_path / "nb", *params, "--max-bars", "120",
                                   "--fills-out", str(tmp_path / "nb.csv"))) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    bt = ["backtest", "--strategy", spec, "--start", summary["first_bar"], "--end", summary["last_bar"],
          "--trade-from", summary["trade_from"], "--run-id", "p1", "--fills-out", str(tmp_path / "bt.csv"),
          *params, *[a for s in data for a in ("--data", str(tmp_path / f"{FILES[s]}.csv"))]]
    assert cli.main(bt) == 0
    paper = csv_rows(tmp_path / "vec.csv")
    assert len(paper) == summary["fills"] > 10
    assert paper == csv_rows(tmp_path / "bt.csv")
    numba = [[*r[:6], r[6].replace("smacross.", "smacrossvec."), *r[7:]] for r in csv_rows(tmp_path / "nb.csv")]
    assert paper == numba


# --- target positions and the output's checks ----------------------------------------------------------


class TargetAboveSma(VectorStrategy):
    """Long above the SMA, short below, no opinion in the warm-up (NaN)."""

    window_ = Param(24, low=2, high=1000)

    def signals(self, df, params):
        mean = df.close.rolling(params.window_).mean()
        return np.sign(df.close - mean).where(mean.notna())


def test_a_target_position_is_held_from_the_next_open():
    result = Backtest(TargetAboveSma(), BTC.iloc[:400], allow_short=True).run()
    close = BTC.close.iloc[:400]
    target = np.sign(close - close.rolling(24).mean()).to_numpy()
    held = np.sign(result.positions.iloc[:, 0].to_numpy())
    # decided at close t, filled at the open of t + 1: the position at close t + 1 is target[t]
    known = ~np.isnan(target[:-1])
    assert np.array_equal(held[1:][known], target[:-1][known])
    assert (held[1:24] == 0).all()  # nothing before the SMA exists


@pytest.mark.parametrize(("output", "words"), [
    (lambda df: pd.DataFrame({"entries": df.close > 0, "short_entries": df.close > 0}),
     "entries and short_entries are both True at bar 0"),
    (lambda df: pd.DataFrame({"entry": df.close > 0}), "expected any of entries"),
    (lambda df: pd.Series(2.0, index=df.index), "target must be 1, -1, 0 or NaN, got 2.0 at bar 0"),
    (lambda df: (df.close > 0).iloc[1:].to_frame("entries"), "one row per bar"),
    (lambda df: df.close.to_numpy(), "must return a DataFrame"),
])
def test_bad_signals_are_refused_naming_what_is_wrong(output, words):
    class Bad(VectorStrategy):
        causality_cuts = 0

        def signals(self, df, params):
            return output(df)

    with pytest.raises((ValueError, TypeError), match=words.replace("(", r"\(")):
        Backtest(Bad(), BTC.iloc[:50]).run()


def test_a_vectorised_strategy_is_refused_by_sweep_with_the_reason():
    from framework.sweep import sweep

    with pytest.raises(TypeError, match="vectorised"):
        sweep(SmaCrossVec, BTC, {"fast": [5, 6]})


# --- causality ---------------------------------------------------------------------------------------


class LooksAheadFrom(VectorStrategy):
    """Causal up to bar ``start``; from there its target peeks at the next close (shift(-1))."""

    start = Param(333, low=0, high=10**9)

    def signals(self, df, params):
        ahead = np.sign(df.close.shift(-1) - df.close)
        behind = np.sign(df.close - df.close.shift(1))
        return behind.where(np.arange(len(df)) < params.start, ahead)


class NextBarUp(VectorStrategy):
    def signals(self, df, params):
        return pd.DataFrame({"entries": df.close.shift(-1) > df.close, "exits": df.close.shift(-1) < df.close})


@pytest.mark.parametrize("start", [333, 1234])
def test_a_planted_look_ahead_is_caught_naming_the_bar_where_it_starts(start):
    with pytest.raises(CausalityError, match=re.escape(f"'target' at bar {start} ({BTC.index[start]}) is nan")):
        check_causality(LooksAheadFrom(start=start), BTC, cuts=8, seed=1)
    with pytest.raises(CausalityError, match=f"at bar {start} "):
        Backtest(LooksAheadFrom(start=start), BTC).run()
    Backtest(LooksAheadFrom(start=start), BTC, check_causality=False).run()  # skipped on request
    check_causality(LooksAheadFrom(start=len(BTC)), BTC)  # never looks ahead inside the data: passes


def test_a_shift_minus_one_signal_is_caught_at_a_bar_that_really_looks_ahead():
    strategy = NextBarUp()
    with pytest.raises(CausalityError) as err:
        check_causality(strategy, BTC, cuts=4, seed=3)
    bar = int(str(err.value).split("at bar ")[1].split(" ")[0])
    full = strategy.signal_output(BTC)
    cut = strategy.signal_output(BTC.iloc[:bar + 1])  # what a live runner computes at that close
    assert not cut.iloc[-1].equals(full.iloc[bar])
    assert "shift(-k)" in str(err.value) and "check_causality=False" in str(err.value)


def test_the_live_runner_refuses_to_promote_a_strategy_that_looks_ahead(tmp_path):
    from framework.exchange import create_exchange
    from live.feed import CandleFeed
    from live.runner import LiveRunner, PaperBroker

    with local_exchange(frames(1)) as ex:
        feed = CandleFeed(create_exchange("binance", url=ex.url), ["BTC/USDT"], "1h")
        runner = LiveRunner(NextBarUp(), PaperBroker(), feed, SimSettings(), StateStore(tmp_path),
                            warmup_bars=W, run_id="p1")
        try:
            with pytest.raises(CausalityError):
                runner.start()
            assert runner.stepper is None and runner.store.latest_snapshot() is None
        finally:
            runner.close()


# --- a bounded window ------------------------------------------------------------------------------


class EmaCrossWindow(VectorStrategy):
    """EMA crossover recomputed live over the last 300 bars only."""

    window = 300
    fast = Param(12, low=1, high=1000)
    slow = Param(26, low=2, high=1000)

    def signals(self, df, params):
        diff = ema(df.close, params.fast) - ema(df.close, params.slow)
        prev = diff.shift(1)
        return pd.DataFrame({"entries": (prev <= 0) & (diff > 0), "short_entries": (prev >= 0) & (diff < 0)})


def test_a_bounded_window_matches_the_backtest_once_its_indicators_converge():
    """Over the last 300 bars the EMAs (slow 26: weight (25/27)^k of a bar k back) differ from
    the full run's by less than 1e-7 of the price; the decisions and so the fills are the
    backtest's (trading from bar 300, when the window is full)."""
    close = BTC.close
    full = ema(close, 26)
    worst = max(abs(ema(close.iloc[t - 299:t + 1], 26).iloc[-1] - full.iloc[t]) / close.iloc[t]
                for t in range(300, len(close), 97))
    assert 0 < worst < 1e-7
    strategy = EmaCrossWindow()
    bt = Backtest(strategy, BTC.iloc[:1200], allow_short=True, trade_from=BTC.index[300])
    result = bt.run()
    stepped = step_all(strategy, bt)
    assert stepped.feed.n == 300  # memory bounded by the window
    assert len(result.fill_records) > 20 and np.array_equal(stepped.fills, result.fill_records)


class FailsAbove(VectorStrategy):
    """Fails on a close above 1000 (a strategy's bug), else long."""

    window = 3
    causality_cuts = 0

    def signals(self, df, params):
        if df.close.iloc[-1] > 1000:
            raise ValueError("a bug in signals")
        return pd.Series(1.0, index=df.index)


def test_a_failing_signals_call_leaves_the_stepper_as_it_was():
    stepper = BarStepper(FailsAbove(), SimSettings().vector(8760.0))
    day, ns = 19000, 19000 * 86_400_000_000_000
    for i, price in enumerate((10.0, 11.0, 12.0, 13.0)):
        stepper.step(day, price, price, price, price, 1.0, time=ns + i * 3_600_000_000_000)
    before = (stepper.snapshot(), stepper.feed.times[:stepper.feed.n].tolist())
    assert before[1] == [ns + i * 3_600_000_000_000 for i in (1, 2, 3)]  # the last window = 3 bars
    with pytest.raises(ValueError, match="a bug in signals"):
        stepper.step(day, 2000.0, 2000.0, 2000.0, 2000.0, 1.0, time=ns + 4 * 3_600_000_000_000)
    assert (stepper.snapshot(), stepper.feed.times[:stepper.feed.n].tolist()) == before
