"""framework.portfolio: combined returns, and optimised weights against closed forms.

The unconstrained optima have closed forms (Lagrange multipliers on ``sum w = 1``); long-only
weights are checked against them where no bound binds, and by brute force where one does.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from framework import Backtest, portfolio
from strategies.sma_cross import SmaCross

INDEX = pd.date_range("2020-01-01", periods=1500, freq="D", tz="UTC")


def _equities(mu, cov, seed=7, names=("a", "b", "c")) -> dict[str, pd.Series]:
    rng = np.random.default_rng(seed)
    r = rng.multivariate_normal(mu, cov, size=len(INDEX) - 1)
    growth = np.vstack([np.ones(len(mu)), np.cumprod(1 + r, axis=0)])
    return {n: pd.Series(100.0 * growth[:, i], index=INDEX) for i, n in enumerate(names)}


def _moments(equities):
    r = pd.DataFrame(equities).pct_change().iloc[1:]
    return r, r.mean().to_numpy(), r.cov().to_numpy()


# one strategy short-worthy for min variance (highly correlated, more volatile) ...
COV_SHORT = np.array([[1.0, 1.35, 0.2], [1.35, 2.25, 0.3], [0.2, 0.3, 1.44]]) * 1e-4
# ... and one where every optimum is long-only on its own
COV_LONG = np.array([[1.0, 0.2, 0.1], [0.2, 1.69, 0.15], [0.1, 0.15, 2.25]]) * 1e-4
MU = np.array([0.0008, 0.0010, 0.0009])


def _closed_min_variance(sigma):
    x = np.linalg.solve(sigma, np.ones(len(sigma)))
    return x / x.sum()


def test_min_variance_matches_the_closed_form():
    eq = _equities(MU, COV_SHORT)
    _, _, sigma = _moments(eq)
    want = _closed_min_variance(sigma)
    assert (want < 0).any()  # the unconstrained optimum shorts one
    got = portfolio.combine(eq, "min_variance", long_only=False).weights.to_numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    # long-only where the bound does not bind: the same point
    eq = _equities(MU, COV_LONG)
    _, _, sigma = _moments(eq)
    want = _closed_min_variance(sigma)
    assert (want > 0).all()
    np.testing.assert_allclose(portfolio.combine(eq, "min_variance").weights.to_numpy(), want, atol=1e-6)


def test_long_only_min_variance_where_the_bound_binds_beats_every_grid_point():
    eq = _equities(MU, COV_SHORT)
    _, _, sigma = _moments(eq)
    w = portfolio.combine(eq, "min_variance").weights.to_numpy()
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
    best = min(np.array([a, b, 1 - a - b]) @ sigma @ np.array([a, b, 1 - a - b])
               for a, b in itertools.product(np.linspace(0, 1, 201), repeat=2) if a + b <= 1)
    assert w @ sigma @ w <= best * (1 + 1e-9)


def test_max_sharpe_is_the_tangency_portfolio():
    rf = 0.05  # annual
    for cov, long_only in ((COV_SHORT, False), (COV_LONG, True)):
        eq = _equities(MU, cov, seed=3)
        _, mu, sigma = _moments(eq)
        rf_bar = 1.05 ** (1 / 365) - 1
        x = np.linalg.solve(sigma, mu - rf_bar)
        want = x / x.sum()
        if long_only:
            assert (want > 0).all()
        p = portfolio.combine(eq, "max_sharpe", risk_free=rf, long_only=long_only)
        np.testing.assert_allclose(p.weights.to_numpy(), want, atol=1e-5)


def test_mean_variance_matches_the_lagrange_solution():
    eq = _equities(MU, COV_SHORT, seed=5)
    _, mu, sigma = _moments(eq)
    lam = 50.0
    inv_one, inv_mu = np.linalg.solve(sigma, np.ones(3)), np.linalg.solve(sigma, mu)
    eta = (inv_mu.sum() - lam) / inv_one.sum()  # the multiplier that makes sum w = 1
    want = (inv_mu - eta * inv_one) / lam
    assert want.sum() == pytest.approx(1.0)
    got = portfolio.combine(eq, "mean_variance", risk_aversion=lam, long_only=False).weights.to_numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_risk_parity_equalises_risk_contributions():
    eq = _equities(MU, COV_SHORT, seed=11)
    p = portfolio.combine(eq, "risk_parity")
    _, _, sigma = _moments(eq)
    w = p.weights.to_numpy()
    rc = w * (sigma @ w) / (w @ sigma @ w)
    np.testing.assert_allclose(rc, 1 / 3, atol=1e-7)
    np.testing.assert_allclose(p.risk_contributions.to_numpy(), rc, rtol=1e-12)
    assert (w > 0).all() and w.sum() == pytest.approx(1.0)
    # two components: inverse volatility, whatever the correlation
    two = {k: eq[k] for k in ("a", "b")}
    vol = pd.DataFrame(two).pct_change().std().to_numpy()
    np.testing.assert_allclose(portfolio.combine(two, "risk_parity").weights.to_numpy(),
                               (1 / vol) / (1 / vol).sum(), atol=1e-8)


def test_combined_returns_equity_and_correlation():
    eq = _equities(MU, COV_LONG, seed=2)
    eq["b"] = eq["b"].iloc[10:]  # a later start: only the shared bars count
    r = pd.DataFrame(eq).dropna().pct_change().iloc[1:]
    p = portfolio.combine(eq, {"a": 2, "b": 1, "c": 1}, init_cash=1000.0)
    np.testing.assert_allclose(p.weights.to_numpy(), [0.5, 0.25, 0.25])
    want = 0.5 * r["a"] + 0.25 * r["b"] + 0.25 * r["c"]
    np.testing.assert_allclose(p.returns.to_numpy(), want.to_numpy(), rtol=1e-12)
    assert p.equity.index[0] == INDEX[10] and p.equity.iloc[0] == 1000.0
    assert p.equity.iloc[-1] == pytest.approx(1000.0 * np.prod(1 + want.to_numpy()), rel=1e-12)
    assert p.stats["total_return"] == pytest.approx(p.equity.iloc[-1] / 1000.0 - 1, rel=1e-12)
    np.testing.assert_allclose(p.correlation.to_numpy(), np.corrcoef(r.to_numpy().T), atol=1e-12)
    np.testing.assert_allclose(p.covariance.to_numpy(), np.cov(r.to_numpy().T) * 365, rtol=1e-9)
    table = p.table()
    assert list(table.index) == ["a", "b", "c", "portfolio"]
    assert table.loc["portfolio", "ann_volatility"] == pytest.approx(want.std() * np.sqrt(365), rel=1e-9)
    # unnormalised weights keep the rest in cash
    half = portfolio.combine(eq, [0.25, 0.25, 0.0], normalize=False)
    np.testing.assert_allclose(half.returns.to_numpy(), (0.25 * r["a"] + 0.25 * r["b"]).to_numpy(), rtol=1e-12)


def test_combine_backtests():
    runs = [Backtest(SmaCross(fast=f, slow=s), "BTC_USDT-1d").run() for f, s in ((10, 30), (20, 60))]
    p = portfolio.combine(runs)
    assert list(p.weights.index) == ["SmaCross(fast=10, slow=30)", "SmaCross(fast=20, slow=60)"]
    r = pd.DataFrame({i: run.equity for i, run in enumerate(runs)}).pct_change().iloc[1:]
    np.testing.assert_allclose(p.returns.to_numpy(), r.mean(axis=1).to_numpy(), rtol=1e-12)
    assert p.equity.iloc[0] == runs[0].settings.init_cash and p.ann_factor == runs[0].ann_factor
    same = portfolio.combine([runs[0], runs[0]])
    assert list(same.weights.index) == ["SmaCross(fast=10, slow=30)", "SmaCross(fast=10, slow=30)#2"]


def test_bad_input_names_the_argument():
    eq = _equities(MU, COV_LONG)
    with pytest.raises(ValueError, match="weights must be one of 'equal'"):
        portfolio.combine(eq, "max_return")
    with pytest.raises(ValueError, match=r"missing \['c'\]"):
        portfolio.combine(eq, {"a": 1, "b": 1})
    with pytest.raises(ValueError, match="weights must hold 3 numbers"):
        portfolio.combine(eq, [1, 2])
    with pytest.raises(ValueError, match="at least 2 components"):
        portfolio.combine({"a": eq["a"]})
    with pytest.raises(TypeError, match=r"results\['x'\] must be a BacktestResult"):
        portfolio.combine({"x": [1, 2, 3], "a": eq["a"]})
    with pytest.raises(ValueError, match="risk_aversion must be a number > 0"):
        portfolio.combine(eq, "mean_variance", risk_aversion=0)
    losing = {k: v.iloc[::-1].set_axis(v.index) for k, v in _equities(np.full(3, 0.002), COV_LONG).items()}
    with pytest.raises(ValueError, match="beats the risk-free rate"):
        portfolio.combine(losing, "max_sharpe")
