"""Deflated Sharpe ratio and probability of backtest overfitting, against the papers' worked
example, an independent scipy implementation, hand-computed cases and known limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from framework.overfitting import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
)


def _dsr_reference(sr: float, n: int, var: float, t: int, skew: float, kurt: float) -> float:
    """Straight transcription of Bailey & López de Prado (2014), eq. for SR0 and DSR."""
    g = np.euler_gamma
    sr0 = math.sqrt(var) * ((1 - g) * norm.ppf(1 - 1 / n) + g * norm.ppf(1 - 1 / (n * math.e)))
    return norm.cdf((sr - sr0) * math.sqrt(t - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr ** 2))


def test_paper_numerical_example() -> None:
    # Bailey & López de Prado (2014), section "A numerical example": annualised SR 2.5 over
    # 5 years of daily returns (T = 1250), N = 100 trials with annualised variance of Sharpe
    # ratios 0.5, skewness -3, kurtosis 10 -> SR0 = 0.1132 (per day) and DSR = 0.9004.
    assert expected_max_sharpe(100, 0.5 / 250) == pytest.approx(0.1132, abs=5e-5)
    dsr = deflated_sharpe_ratio(2.5 / math.sqrt(250), n_trials=100, sharpe_variance=0.5 / 250, n_obs=1250,
                                skew=-3, kurtosis=10)
    assert dsr == pytest.approx(0.9004, abs=5e-5)


@pytest.mark.parametrize("sr, n, var, t, skew, kurt", [
    (0.1, 10, 0.001, 500, 0.0, 3.0), (0.05, 1000, 0.0004, 2000, -1.0, 6.0), (0.3, 2, 0.01, 60, 0.5, 4.0),
    (-0.02, 50, 0.002, 300, 0.2, 3.5)])
def test_matches_independent_implementation(sr, n, var, t, skew, kurt) -> None:
    got = deflated_sharpe_ratio(sr, n_trials=n, sharpe_variance=var, n_obs=t, skew=skew, kurtosis=kurt)
    assert got == pytest.approx(_dsr_reference(sr, n, var, t, skew, kurt), rel=1e-12, abs=1e-15)


def test_limits() -> None:
    sr = 0.08
    # one trial: no deflation, the probabilistic Sharpe ratio against 0
    assert deflated_sharpe_ratio(sr, n_trials=1, sharpe_variance=0.01, n_obs=400) == \
        probabilistic_sharpe_ratio(sr, 0.0, 400)
    # normal returns: Phi(SR sqrt(T - 1) / sqrt(1 + SR^2 / 2))
    assert probabilistic_sharpe_ratio(sr, 0.0, 400) == pytest.approx(
        norm.cdf(sr * math.sqrt(399) / math.sqrt(1 + sr ** 2 / 2)), rel=1e-14)
    # more trials deflate more; more observations sharpen the verdict
    by_n = [deflated_sharpe_ratio(sr, n_trials=n, sharpe_variance=0.001, n_obs=400) for n in (2, 10, 100, 1000)]
    assert all(a > b for a, b in zip(by_n, by_n[1:]))
    assert deflated_sharpe_ratio(sr, n_trials=10, sharpe_variance=0.001, n_obs=10**7) > 0.999999
    assert deflated_sharpe_ratio(0.0, n_trials=10, sharpe_variance=0.001, n_obs=10**7) < 1e-6
    # the Sharpe ratio equal to the expected maximum: a coin flip
    sr0 = expected_max_sharpe(50, 0.002)
    assert deflated_sharpe_ratio(sr0, n_trials=50, sharpe_variance=0.002, n_obs=300) == pytest.approx(0.5)


def test_expected_max_sharpe_against_simulation() -> None:
    # the approximation of E[max of N normals] is close to the simulated mean for large N
    # (within 1 % from N = 100; 3.5 % high at N = 10)
    rng = np.random.default_rng(7)
    for n in (100, 1000):
        simulated = rng.standard_normal((4000, n)).max(axis=1).mean() * math.sqrt(0.5)
        assert expected_max_sharpe(n, 0.5) == pytest.approx(simulated, rel=0.02)


def test_dsr_bad_inputs_name_the_keyword() -> None:
    with pytest.raises(ValueError, match="n_trials"):
        deflated_sharpe_ratio(0.1, n_trials=0, sharpe_variance=0.01, n_obs=100)
    with pytest.raises(ValueError, match="sharpe_variance"):
        deflated_sharpe_ratio(0.1, n_trials=5, sharpe_variance=-1, n_obs=100)
    with pytest.raises(ValueError, match="n_obs"):
        deflated_sharpe_ratio(0.1, n_trials=5, sharpe_variance=0.01, n_obs=1)
    with pytest.raises(ValueError, match="kurtosis"):
        deflated_sharpe_ratio(0.1, n_trials=5, sharpe_variance=0.01, n_obs=100, kurtosis=0.5)


def test_pbo_hand_computed() -> None:
    # 4 observations (one per block), 3 trials, metric = mean; by hand, for the in-sample block
    # pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3): in-sample best 0 0 0 0 2 2, its out-of-sample
    # rank 2 1 3 3 2 1 of 3, logits ln(w / (1 - w)) with w = rank / 4: 0 -ln3 ln3 ln3 0 -ln3.
    m = np.array([[4, 1, 0], [2, 3, 1], [3, 0.5, 2], [3, 2.2, 5.0]])
    res = probability_of_backtest_overfitting(m, n_splits=4, metric=lambda x: x.mean(axis=0))
    ln3 = math.log(3)
    np.testing.assert_allclose(res.logits, [0, -ln3, ln3, ln3, 0, -ln3], atol=1e-15)
    assert res.best.tolist() == [0, 0, 0, 0, 2, 2]
    assert res.pbo == pytest.approx(4 / 6)


def test_pbo_noise_is_a_coin_flip() -> None:
    # exchangeable trials without edge: the in-sample best ranks uniformly out of sample
    rng = np.random.default_rng(1)
    pbos = [probability_of_backtest_overfitting(rng.standard_normal((240, 20)) * 0.01, n_splits=8).pbo
            for _ in range(30)]
    assert np.mean(pbos) == pytest.approx(0.5, abs=0.1)


def test_pbo_true_edge_is_not_overfit() -> None:
    rng = np.random.default_rng(2)
    m = rng.standard_normal((800, 10)) * 0.01
    m[:, 3] += 0.01  # Sharpe ~1 per observation: best in and out of every split
    res = probability_of_backtest_overfitting(m, n_splits=16)
    assert len(res.logits) == math.comb(16, 8)
    assert res.pbo == 0.0
    assert (res.best == 3).all()


def test_pbo_bad_inputs_name_the_keyword() -> None:
    with pytest.raises(ValueError, match="n_splits"):
        probability_of_backtest_overfitting(np.zeros((20, 3)) + np.arange(3), n_splits=5)
    with pytest.raises(ValueError, match="n_splits"):
        probability_of_backtest_overfitting(np.ones((6, 3)), n_splits=8)
    with pytest.raises(ValueError, match="returns"):
        probability_of_backtest_overfitting(np.ones(10), n_splits=2)
    with pytest.raises(ValueError, match="returns must be finite"):
        probability_of_backtest_overfitting(np.full((10, 2), np.nan), n_splits=2)
