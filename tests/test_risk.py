"""Tests for framework.risk and framework.risk_nb.

References are independent of the code under test: NumPy quantiles and means, scipy's normal
distribution, moments, numerical integration (``scipy.integrate.quad``), ``linregress``,
``binomtest``'s Wilson interval, hand-computed Kupiec statistics, and a NumPy / pure-Python
re-implementation of the documented SplitMix64 draws and resampling rules.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from framework import risk
from framework import risk_nb as nb
from framework.backtest import Backtest
from framework.synthetic import generate_ohlcv
from strategies.sma_cross import SmaCross

ROOT = Path(__file__).resolve().parents[1]

# --- reference generator, written from risk_nb's docstring --------------------------------

GAMMA = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def ref_uniforms(seed: int, n_paths: int, n_draws: int) -> np.ndarray:
    """(paths, draws) uniforms: path p's k-th draw is unit(mix(s_p + G (k + 1)))."""
    with np.errstate(over="ignore"):
        paths = np.arange(1, n_paths + 1, dtype=np.uint64)
        start = _mix(np.uint64(seed) + GAMMA * paths)
        k = np.arange(1, n_draws + 1, dtype=np.uint64)
        z = _mix(start[:, None] + GAMMA * k[None, :])
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def ref_path_stats(step_returns: np.ndarray) -> np.ndarray:
    """(paths, 3) final return, max drawdown, min return of equity paths starting at 1."""
    equity = np.maximum(np.cumprod(1.0 + step_returns, axis=1), 0.0)
    with_start = np.concatenate([np.ones((len(equity), 1)), equity], axis=1)
    peak = np.maximum.accumulate(with_start, axis=1)
    return np.column_stack([
        equity[:, -1] - 1.0,
        (with_start / peak - 1.0).min(axis=1),
        with_start.min(axis=1) - 1.0,
    ])


@pytest.fixture(scope="module")
def returns() -> np.ndarray:
    """Fat-tailed, skewed daily-like returns."""
    rng = np.random.default_rng(7)
    return 0.01 * rng.standard_t(4, 3000) - 0.004 * rng.exponential(1.0, 3000) + 0.004


@pytest.fixture(scope="module")
def result():
    data = generate_ohlcv(1500, freq="1D", seed=3)
    return Backtest(SmaCross(fast=5, slow=20), data, fees=0.001, slippage=0.0005).run()


# --- historical VaR / ES ------------------------------------------------------------------


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.975, 0.99, 0.999])
def test_historical_var_es_match_numpy_quantile_and_tail_mean(returns, confidence):
    q = np.quantile(returns, 1 - confidence)  # linear interpolation, NumPy's default
    assert risk.value_at_risk(returns, confidence) == -q
    assert risk.expected_shortfall(returns, confidence) == pytest.approx(
        -returns[returns <= q].mean(), rel=1e-13
    )


def test_historical_horizon_uses_overlapping_compounded_returns(returns):
    h = 10
    windows = np.lib.stride_tricks.sliding_window_view(1.0 + returns, h)
    compounded = windows.prod(axis=1) - 1.0
    assert len(compounded) == len(returns) - h + 1
    q = np.quantile(compounded, 0.01)
    assert risk.value_at_risk(returns, 0.99, horizon=h) == pytest.approx(-q, rel=1e-12)
    assert risk.expected_shortfall(returns, 0.99, horizon=h) == pytest.approx(
        -compounded[compounded <= q].mean(), rel=1e-12
    )


def test_var_and_es_are_positive_losses_and_es_is_beyond_var(returns):
    for method in risk.VAR_METHODS:
        var = risk.value_at_risk(returns, 0.99, method=method, seed=1)
        es = risk.expected_shortfall(returns, 0.99, method=method, seed=1)
        assert 0 < var < es, method
        assert risk.var_es(returns, 0.99, method=method, seed=1) == (var, es)


def test_rolling_historical_matches_numpy_per_window_across_chunks():
    # rounded returns: many ties, which the sorted-window slide must handle
    rng = np.random.default_rng(11)
    r = np.round(rng.normal(0, 0.01, 2 * nb.CHUNK + 500), 3)
    window, level = 120, 1 - 0.95  # the level the module uses (not exactly 0.05)
    got = risk.rolling_var_es(r, window, 0.95)
    assert got.iloc[: window - 1].isna().all().all()
    chunk_edges = [window - 1 + k * nb.CHUNK + d for k in (1, 2) for d in (-1, 0, 1)]
    for t in [*range(window - 1, len(r), 7), *chunk_edges, len(r) - 1]:
        w = r[t - window + 1 : t + 1]
        q = np.quantile(w, level)
        assert got["var"].iat[t] == -q, t
        assert got["es"].iat[t] == pytest.approx(-w[w <= q].mean(), rel=1e-12, abs=1e-15), t
    # and pandas' skip-list rolling quantile agrees (same linear interpolation)
    pd_var = -pd.Series(r).rolling(window).quantile(level, interpolation="linear")
    np.testing.assert_allclose(got["var"], pd_var, rtol=1e-12, atol=1e-15)


def test_rolling_historical_with_horizon_uses_the_windows_h_bar_returns(returns):
    window, h = 60, 5
    got = risk.rolling_var_es(pd.Series(returns[:400]), window, 0.95, horizon=h)
    assert got.iloc[: window - 1].isna().all().all()
    for t in (window - 1, window, 200, 399):
        w = returns[t - window + 1 : t + 1]
        assert got["var"].iat[t] == pytest.approx(risk.value_at_risk(w, 0.95, h), rel=1e-12)
        assert got["es"].iat[t] == pytest.approx(risk.expected_shortfall(w, 0.95, h), rel=1e-12)


# --- parametric and Cornish-Fisher --------------------------------------------------------


def _tail_mean(quantile_fn, level: float) -> float:
    """Mean of a quantile function over (0, level]: ES = -this."""
    return integrate.quad(quantile_fn, 0.0, level, limit=200, epsabs=1e-13)[0] / level


@pytest.mark.parametrize("horizon", [1, 10])
def test_parametric_normal_matches_scipy(returns, horizon):
    mu, sd = returns.mean() * horizon, returns.std(ddof=1) * math.sqrt(horizon)
    var = risk.value_at_risk(returns, 0.99, horizon, "parametric")
    assert var == pytest.approx(-stats.norm.ppf(0.01, loc=mu, scale=sd), rel=1e-10)
    es = risk.expected_shortfall(returns, 0.99, horizon, "parametric")
    expected = -_tail_mean(lambda p: stats.norm.ppf(p, loc=mu, scale=sd), 0.01)
    assert es == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("horizon", [1, 4])
def test_cornish_fisher_matches_hand_formula_with_scipy_moments(returns, horizon):
    c = 0.99
    mu, sd = returns.mean(), returns.std(ddof=1)
    s = stats.skew(returns) / math.sqrt(horizon)  # i.i.d. sum of `horizon` bars
    k = stats.kurtosis(returns) / horizon  # excess, biased (scipy's defaults)

    def q(p: float) -> float:
        z = stats.norm.ppf(p)
        z_cf = (z + (z**2 - 1) * s / 6 + (z**3 - 3 * z) * k / 24
                - (2 * z**3 - 5 * z) * s**2 / 36)
        return mu * horizon + sd * math.sqrt(horizon) * z_cf

    assert risk.value_at_risk(returns, c, horizon, "cornish_fisher") == pytest.approx(
        -q(1 - c), rel=1e-9)
    assert risk.expected_shortfall(returns, c, horizon, "cornish_fisher") == pytest.approx(
        -_tail_mean(q, 1 - c), rel=1e-7)
    # fat left tail: the corrected VaR is beyond the normal one
    assert risk.value_at_risk(returns, c, horizon, "cornish_fisher") > risk.value_at_risk(
        returns, c, horizon, "parametric")


def test_rolling_moments_match_scipy_across_chunks():
    rng = np.random.default_rng(5)
    x = 0.02 * rng.standard_t(5, nb.CHUNK + 300) + 0.001
    window = 50
    got = nb.rolling_moments_nb(x, window)
    assert np.isnan(got[: window - 1]).all()
    for t in [window - 1, window, 1000, nb.CHUNK + window - 2, nb.CHUNK + window - 1, len(x) - 1]:
        w = x[t - window + 1 : t + 1]
        expected = [w.mean(), w.std(ddof=1), stats.skew(w), stats.kurtosis(w)]
        np.testing.assert_allclose(got[t], expected, rtol=1e-9, err_msg=str(t))


@pytest.mark.parametrize("method", ["parametric", "cornish_fisher"])
def test_rolling_parametric_equals_static_on_each_window(returns, method):
    window = 250
    got = risk.rolling_var_es(returns, window, 0.975, horizon=3, method=method)
    for t in (window - 1, 1000, len(returns) - 1):
        w = returns[t - window + 1 : t + 1]
        assert got["var"].iat[t] == pytest.approx(
            risk.value_at_risk(w, 0.975, 3, method), rel=1e-9)
        assert got["es"].iat[t] == pytest.approx(
            risk.expected_shortfall(w, 0.975, 3, method), rel=1e-9)


def test_constant_window_gives_minus_the_return_for_every_rolling_method():
    r = np.full(30, -0.01)
    for method in risk.ROLLING_METHODS:
        got = risk.rolling_var_es(r, 10, 0.99, method=method)
        np.testing.assert_allclose(got["var"].iloc[9:], 0.01, rtol=1e-12)
        np.testing.assert_allclose(got["es"].iloc[9:], 0.01, rtol=1e-12)


# --- Monte Carlo VaR ----------------------------------------------------------------------


def test_monte_carlo_var_reproduces_documented_draws(returns):
    mu, sd, h, n = returns.mean(), returns.std(ddof=1), 5, 20_000
    u = ref_uniforms(42, n, 2 * h)
    z = np.sqrt(-2.0 * np.log(1.0 - u[:, 0::2])) * np.cos(2.0 * np.pi * u[:, 1::2])
    sims = np.prod(1.0 + mu + sd * z, axis=1) - 1.0
    q = np.quantile(sims, 0.05)
    var = risk.value_at_risk(returns, 0.95, h, "monte_carlo", n_sims=n, seed=42)
    es = risk.expected_shortfall(returns, 0.95, h, "monte_carlo", n_sims=n, seed=42)
    assert var == pytest.approx(-q, rel=1e-12)
    assert es == pytest.approx(-sims[sims <= q].mean(), rel=1e-12)


def test_monte_carlo_var_converges_to_normal(returns):
    n = 200_000
    var = risk.value_at_risk(returns, 0.99, method="monte_carlo", n_sims=n, seed=1)
    normal = risk.value_at_risk(returns, 0.99, method="parametric")
    # standard error of a 1 % quantile: sqrt(p (1 - p) / n) / pdf(z) in units of sigma
    se = math.sqrt(0.01 * 0.99 / n) / stats.norm.pdf(stats.norm.ppf(0.01)) * returns.std()
    assert abs(var - normal) < 5 * se


# --- input checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(confidence=0.0), ["confidence", "(0, 1)"]),
        (dict(confidence=1.0), ["confidence", "(0, 1)"]),
        (dict(confidence=1.5), ["confidence", "(0, 1)"]),
        (dict(horizon=0), ["horizon", ">= 1"]),
        (dict(horizon=2.5), ["horizon", "integer"]),
        (dict(method="gaussian"), ["method", "'historical'", "'cornish_fisher'"]),
        (dict(method="monte_carlo", n_sims=1), ["n_sims", ">= 2"]),
        (dict(method="monte_carlo", seed=-1), ["seed"]),
    ],
)
def test_bad_keywords_raise_naming_keyword_and_range(returns, kwargs, words):
    with pytest.raises(ValueError) as err:
        risk.value_at_risk(returns, **kwargs)
    for word in words:
        assert word in str(err.value)


def test_nan_and_too_few_returns_raise():
    r = pd.Series([0.01, np.nan, -0.02], index=pd.date_range("2024-01-01", periods=3, tz="UTC"))
    with pytest.raises(ValueError, match=r"returns contains 1 NaN.*position 1 \(2024-01-02"):
        risk.value_at_risk(r)
    with pytest.raises(ValueError, match="needs at least 2"):
        risk.value_at_risk([0.01, 0.02], horizon=2)
    with pytest.raises(ValueError, match="needs at least 4"):
        risk.expected_shortfall([0.01, 0.02, -0.01], method="cornish_fisher")
    with pytest.raises(ValueError, match="window must be at least 6 bars"):
        risk.rolling_var_es(np.zeros(50), 5, horizon=5)
    with pytest.raises(ValueError, match="window .* is longer than returns"):
        risk.rolling_var_es(np.zeros(50), 51)
    with pytest.raises(ValueError, match="method must be one of 'historical', 'parametric'"):
        risk.rolling_var_es(np.zeros(50), 10, method="monte_carlo")


# --- Kupiec and the VaR backtest ----------------------------------------------------------


def test_kupiec_hand_computed_example():
    # 5 breaches in 250 days at 99 %: p = 0.01, p_hat = 0.02.
    # ln L0 = 245 ln 0.99 + 5 ln 0.01 = -2.4623323 - 23.0258509 = -25.4881832
    # ln L1 = 245 ln 0.98 + 5 ln 0.02 = -4.9496633 - 19.5601150 = -24.5097783
    # LR = -2 (ln L0 - ln L1) = 1.9568098; p = P(chi2_1 > LR) = erfc(sqrt(LR / 2)) = 0.161855
    lr, p = risk.kupiec_pof(5, 250, 0.99)
    assert lr == pytest.approx(1.9568098, abs=1e-6)
    assert p == pytest.approx(0.161855, abs=1e-6)


def test_kupiec_edges():
    lr, p = risk.kupiec_pof(0, 500, 0.99)  # no breach: LR = -2 n ln(1 - p)
    assert lr == pytest.approx(-2 * 500 * math.log(0.99), rel=1e-12)
    lr, p = risk.kupiec_pof(5, 500, 0.99)  # exactly as expected: LR 0, p-value 1
    assert lr == pytest.approx(0.0, abs=1e-9) and p == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="breaches must be an integer in 0..observations"):
        risk.kupiec_pof(11, 10, 0.99)
    with pytest.raises(ValueError, match="observations must be an integer >= 1"):
        risk.kupiec_pof(0, 0, 0.99)


def test_var_backtest_shifts_the_rolling_forecast_by_one_bar(returns):
    window = 250
    bt = risk.var_backtest(returns, 0.99, window, "historical")
    rolling = risk.rolling_var_es(returns, window, 0.99)["var"].to_numpy()
    forecast = bt.forecast.to_numpy()
    assert np.isnan(forecast[:window]).all()
    np.testing.assert_array_equal(forecast[window:], rolling[window - 1 : -1])
    hits = -returns[window:] > rolling[window - 1 : -1]
    assert bt.observations == len(returns) - window
    assert bt.breaches == hits.sum() == bt.breach.sum()
    assert bt.expected_breaches == pytest.approx(0.01 * bt.observations)
    assert (bt.lr_stat, bt.p_value) == risk.kupiec_pof(bt.breaches, bt.observations, 0.99)


def test_var_backtest_with_given_forecasts():
    r = np.array([0.01, -0.03, -0.05, 0.02, -0.021, -0.019])
    var = np.array([np.nan, 0.02, 0.06, 0.02, 0.02, 0.02])  # breaches: bars 1 and 4
    bt = risk.var_backtest(r, 0.95, var=var)
    assert (bt.observations, bt.breaches) == (5, 2)
    assert list(bt.breach) == [False, True, False, False, True, False]
    with pytest.raises(ValueError, match="var must hold one forecast per return"):
        risk.var_backtest(r, 0.95, var=var[:-1])


# --- Monte Carlo of equity paths ----------------------------------------------------------


def test_trade_bootstrap_equals_numpy_reference():
    rng = np.random.default_rng(3)
    trades = rng.normal(0.005, 0.05, 80)
    n_paths, n_steps = 300, 120
    mc = risk.monte_carlo(trades, "trades", n_paths, n_steps, seed=2024)
    idx = np.minimum((ref_uniforms(2024, n_paths, n_steps) * len(trades)).astype(np.int64),
                     len(trades) - 1)
    expected = ref_path_stats(trades[idx])
    np.testing.assert_allclose(
        mc.paths[["final_return", "max_drawdown", "min_return"]].to_numpy(), expected,
        rtol=1e-12, atol=1e-15)


def ref_block_paths(r: np.ndarray, n_paths: int, n_steps: int, block: float, seed: int):
    """Politis-Romano resampling, written out with the documented use of the draws."""
    u = ref_uniforms(seed, n_paths, 2 * n_steps)
    out = np.empty((n_paths, n_steps))
    for p in range(n_paths):
        pos = 0
        for k in range(n_steps):
            if k == 0 or u[p, 2 * k] < 1.0 / block:
                pos = min(int(u[p, 2 * k + 1] * len(r)), len(r) - 1)
            else:
                pos = (pos + 1) % len(r)
            out[p, k] = r[pos]
    return out


def test_block_bootstrap_equals_reference_and_keeps_blocks(returns):
    r = returns[:200]
    mc = risk.monte_carlo(r, "block", 40, 500, block=7.5, seed=9, keep_paths=True)
    steps = ref_block_paths(r, 40, 500, 7.5, 9)
    np.testing.assert_allclose(mc.paths.to_numpy(), ref_path_stats(steps), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(mc.equity, np.cumprod(1 + steps, axis=1), rtol=1e-12)
    # blocks are runs of consecutive bars (circular) with geometric lengths of mean 7.5: a step
    # continues the previous one with probability 1 - 1/7.5 (+ 1/(7.5 n) for a new block that
    # happens to start right after the old one)
    pos = np.searchsorted(np.sort(r), steps)  # returns are distinct: value -> bar
    order = np.argsort(r)
    pos = order[pos]
    assert (r[pos] == steps).all()
    continues = pos[:, 1:] == (pos[:, :-1] + 1) % len(r)
    assert continues.mean() == pytest.approx(1 - 1 / 7.5, abs=0.015)


def test_timing_with_no_free_bars_places_trades_back_to_back():
    r = np.array([0.01, -0.02, 0.03, 0.01, -0.01, 0.02])
    close = np.concatenate([[1.0], np.cumprod(1 + r)])
    mc = risk.monte_carlo(r, "timing", 5, durations=[2, 1, 3], directions=[1, -1, 1],
                          cost=0.001, seed=1)
    t1 = close[2] / close[0] - 1 - 0.001
    t2 = -(close[3] / close[2] - 1) - 0.001
    t3 = close[6] / close[3] - 1 - 0.001
    final = (1 + t1) * (1 + t2) * (1 + t3) - 1
    np.testing.assert_allclose(mc.paths["final_return"], final, rtol=1e-12)


def test_timing_equals_reference_placement(returns):
    r = returns[:300]
    close = np.concatenate([[1.0], np.cumprod(1 + r)])
    dur = np.array([5, 12, 1, 30, 8, 0, 20])
    dirs = np.array([1, -1, 1, 1, -1, 1, -1])
    n_paths, free = 50, len(r) - dur.sum()
    mc = risk.monte_carlo(r, "timing", n_paths, durations=dur, directions=dirs, seed=77)
    # n sorted uniforms from n + 1 exponential spacings, scaled to the free bars
    e = -np.log(1.0 - ref_uniforms(77, n_paths, len(dur) + 1))
    gaps = np.minimum((np.cumsum(e, axis=1)[:, :-1] / e.sum(axis=1)[:, None] * (free + 1))
                      .astype(np.int64), free)
    entry = gaps + np.concatenate([[0], np.cumsum(dur)[:-1]])
    assert (np.diff(gaps, axis=1) >= 0).all()
    assert (entry[:, 1:] >= entry[:, :-1] + dur[:-1]).all()  # no overlap
    trade_r = dirs * (close[entry + dur] / close[entry] - 1.0)
    np.testing.assert_allclose(mc.paths.to_numpy(), ref_path_stats(trade_r), rtol=1e-12,
                               atol=1e-15)


@pytest.mark.parametrize("method", ["trades", "block", "timing"])
def test_monte_carlo_independent_of_thread_count_and_seeded(returns, method):
    kwargs = dict(durations=[10] * 50) if method == "timing" else {}
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = risk.monte_carlo(returns, method, 2000, seed=5, **kwargs).paths
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = risk.monte_carlo(returns, method, 2000, seed=5, **kwargs).paths
    finally:
        numba.set_num_threads(before)
    pd.testing.assert_frame_equal(one, many)
    other = risk.monte_carlo(returns, method, 2000, seed=6, **kwargs).paths
    assert not np.array_equal(one.to_numpy(), other.to_numpy())


def test_rolling_results_independent_of_thread_count():
    rng = np.random.default_rng(12)
    r = rng.normal(0, 0.01, 3 * nb.CHUNK)
    before = numba.get_num_threads()
    try:
        frames = []
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            frames.append([risk.rolling_var_es(r, 100, 0.99, method=m)
                           for m in risk.ROLLING_METHODS])
    finally:
        numba.set_num_threads(before)
    for one, many in zip(*frames):
        pd.testing.assert_frame_equal(one, many, check_exact=True)


def test_wiped_out_paths_stay_at_zero():
    mc = risk.monte_carlo([0.5, -1.2], "trades", 200, 30, seed=1)
    wiped = mc.paths["final_return"] == -1.0
    assert wiped.all()  # 30 draws without a -120 % trade has probability 2**-30
    assert (mc.paths["max_drawdown"] == -1.0).all() and (mc.paths["min_return"] == -1.0).all()
    assert mc.prob_ruin(1.0) == 1.0


def test_summary_bands_and_wilson_intervals(returns):
    mc = risk.monte_carlo(returns[:500], "trades", 4000, seed=8, periods_per_year=250)
    paths = mc.paths
    np.testing.assert_allclose(paths["cagr"], (1 + paths["final_return"]) ** (250 / 500) - 1)
    s = mc.summary(confidence=0.9, loss=0.1, ruin=0.3)
    np.testing.assert_allclose(
        s.loc["max_drawdown"], np.quantile(paths["max_drawdown"], [0.5, 0.05, 0.95]))
    k = int((paths["final_return"] < -0.1).sum())
    assert s.at["prob_loss", "estimate"] == k / 4000 == mc.prob_loss(0.1)
    ci = stats.binomtest(k, 4000).proportion_ci(0.9, method="wilson")
    assert (s.at["prob_loss", "lower"], s.at["prob_loss", "upper"]) == pytest.approx(
        (ci.low, ci.high), rel=1e-9)
    assert s.at["prob_ruin", "estimate"] == (paths["min_return"] <= -0.3).mean()
    with pytest.raises(ValueError, match="keep_paths=True"):
        mc.equity_bands()


def test_monte_carlo_bad_input():
    with pytest.raises(ValueError, match="method must be one of 'trades', 'block', 'timing'"):
        risk.monte_carlo([0.1], "bars")
    with pytest.raises(ValueError, match="n_paths must be an integer >= 1"):
        risk.monte_carlo([0.1], n_paths=0)
    with pytest.raises(ValueError, match="block must be a mean block length in bars, >= 1"):
        risk.monte_carlo([0.1, 0.2], "block", block=0.5)
    with pytest.raises(ValueError, match="durations applies to method='timing' only"):
        risk.monte_carlo([0.1, 0.2], "trades", durations=[1])
    with pytest.raises(ValueError, match="needs durations="):
        risk.monte_carlo([0.1, 0.2], "timing")
    with pytest.raises(ValueError, match="durations add up to 3 bars, more than the 2"):
        risk.monte_carlo([0.1, 0.2], "timing", durations=[1, 2])
    with pytest.raises(ValueError, match=r"directions must hold \+1 \(long\) or -1"):
        risk.monte_carlo([0.1, 0.2], "timing", durations=[1], directions=[2])
    with pytest.raises(ValueError, match="source contains 1 NaN"):
        risk.monte_carlo([0.1, np.nan])


# --- BacktestResult integration -----------------------------------------------------------


def test_backtest_result_is_accepted_everywhere(result):
    bar_returns = result.equity.pct_change().iloc[1:]
    assert risk.value_at_risk(result, 0.95) == risk.value_at_risk(bar_returns, 0.95)
    rolling = risk.rolling_var_es(result, 100)
    assert rolling.index.equals(bar_returns.index)

    trades = result.trades["return"].to_numpy()
    assert len(trades) > 10
    mc = risk.monte_carlo(result, "trades", 500, seed=3)
    pd.testing.assert_frame_equal(
        mc.paths.drop(columns="cagr"),
        risk.monte_carlo(trades, "trades", 500, seed=3).paths)
    years = (result.index[-1] - result.index[0]) / pd.Timedelta(days=365)
    assert mc.periods_per_year == pytest.approx(len(trades) / years)
    assert risk.monte_carlo(result.trades, "trades", 500, seed=3).paths.equals(
        risk.monte_carlo(trades, "trades", 500, seed=3).paths)

    block = risk.monte_carlo(result, "block", 100, seed=3)
    assert block.n_steps == len(bar_returns) and block.periods_per_year == 365.0

    timing = risk.monte_carlo(result, "timing", 100, seed=3)
    recs = result.trade_records
    close_r = pd.Series(result.close[:, 0]).pct_change().iloc[1:].to_numpy()
    plain = risk.monte_carlo(close_r, "timing", 100, seed=3,
                             durations=recs["exit_bar"] - recs["entry_bar"],
                             directions=recs["direction"], cost=2 * (0.001 + 0.0005))
    np.testing.assert_allclose(timing.paths["final_return"], plain.paths["final_return"],
                               rtol=1e-10)


# --- strategy against a benchmark ---------------------------------------------------------


def test_benchmark_comparison_matches_linregress_and_hand_formulas():
    rng = np.random.default_rng(2)
    b = rng.normal(0.0005, 0.02, 1000)
    s = 0.0002 + 0.7 * b + rng.normal(0, 0.01, 1000)
    ann, rf = 365.0, 0.03
    got = risk.benchmark_comparison(s, b, ann_factor=ann, risk_free=rf)
    rf_bar = (1 + rf) ** (1 / ann) - 1
    fit = stats.linregress(b - rf_bar, s - rf_bar)
    assert got["beta"] == pytest.approx(fit.slope, rel=1e-12)
    assert got["alpha"] == pytest.approx(fit.intercept * ann, rel=1e-10)
    assert got["correlation"] == pytest.approx(np.corrcoef(s, b)[0, 1], rel=1e-12)
    assert got["correlation"] == pytest.approx(fit.rvalue, rel=1e-12)
    active = s - b
    assert got["tracking_error"] == pytest.approx(active.std(ddof=1) * math.sqrt(ann), rel=1e-12)
    assert got["information_ratio"] == pytest.approx(
        active.mean() / active.std(ddof=1) * math.sqrt(ann), rel=1e-12)
    up, down = b > 0, b < 0
    geo = lambda x: np.prod(1 + x) ** (1 / len(x)) - 1  # noqa: E731
    assert got["up_capture"] == pytest.approx(geo(s[up]) / geo(b[up]), rel=1e-10)
    assert got["down_capture"] == pytest.approx(geo(s[down]) / geo(b[down]), rel=1e-10)
    assert got["observations"] == 1000


def test_benchmark_comparison_of_itself_and_of_a_scaled_copy():
    rng = np.random.default_rng(4)
    b = pd.Series(rng.normal(0, 0.01, 500),
                  index=pd.date_range("2024-01-01", periods=500, freq="1h", tz="UTC"))
    same = risk.benchmark_comparison(b, b)
    assert same["beta"] == pytest.approx(1.0) and same["correlation"] == pytest.approx(1.0)
    assert same["alpha"] == pytest.approx(0.0, abs=1e-15) and same["tracking_error"] == 0.0
    double = risk.benchmark_comparison(2 * b, b)  # ann_factor from the hourly index
    assert double["beta"] == pytest.approx(2.0)
    assert double["tracking_error"] == pytest.approx(b.std() * math.sqrt(8760))


def test_benchmark_comparison_aligns_series_and_reads_a_backtest(result):
    idx = pd.date_range("2024-01-01", periods=10, freq="1D", tz="UTC")
    s = pd.Series(np.linspace(-0.02, 0.03, 10), index=idx)
    b = pd.Series(np.sin(np.arange(10.0)) / 50, index=idx).iloc[3:]
    got = risk.benchmark_comparison(s, b)
    want = risk.benchmark_comparison(s.iloc[3:].to_numpy(), b.to_numpy(), ann_factor=365)
    assert got == pytest.approx(want)

    bench_r = result.benchmark[0].pct_change().iloc[1:]
    assert risk.benchmark_comparison(result) == pytest.approx(
        risk.benchmark_comparison(result.equity.pct_change().iloc[1:], bench_r))
    with pytest.raises(ValueError, match="same length"):
        risk.benchmark_comparison([0.1, 0.2, 0.3], [0.1, 0.2], ann_factor=365)
    with pytest.raises(ValueError, match="ann_factor .* is needed"):
        risk.benchmark_comparison([0.1, 0.2, 0.3], [0.1, 0.2, 0.0])
    with pytest.raises(ValueError, match="benchmark is needed"):
        risk.benchmark_comparison([0.1, 0.2, 0.3])


# --- benchmark script ---------------------------------------------------------------------


def test_bench_research_quick_prints_a_json_summary_last():
    """A smoke run: the script works and reports what it promises, never how fast (no timing)."""
    proc = subprocess.run([sys.executable, str(ROOT / "research" / "bench_research.py"), "--quick"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("mc_s", "mc_numpy_s", "mc_paths_per_s", "rolling_hist_var_s",
                "rolling_hist_var_pandas_s", "rolling_param_var_s", "static_historical_s"):
        assert math.isfinite(summary[key]) and summary[key] > 0, key
    # the peers did the same work: the same outputs
    assert summary["mc_max_diff"] < 1e-12
    assert summary["rolling_hist_max_diff"] < 1e-15
    assert summary["rolling_param_max_diff"] < 1e-12
    assert "pandas rolling().quantile" in proc.stdout and "NumPy vectorised" in proc.stdout
