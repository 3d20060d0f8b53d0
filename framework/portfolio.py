"""A portfolio of strategies: several backtests (strategies or parameter sets, each its own
``BacktestResult``) combined into one return stream.

    from framework import Backtest, portfolio
    runs = {"sma": Backtest("sma_cross", "BTC_USDT-1d").run(),
            "rsi": Backtest("rsi_reversion", "BTC_USDT-1d").run()}
    p = portfolio.combine(runs, weights="risk_parity")
    p.weights, p.correlation, p.stats, p.equity

Conventions:

- Each component contributes its per-bar equity returns over the bars all components share
  (an inner join of their indexes; a component's warm-up bars before ``trade_from`` count as
  flat). The portfolio is **rebalanced to its weights every bar**: its return is
  ``r_p = sum_i w_i r_i`` and its equity ``init_cash * prod(1 + r_p)``.
- Weights come from the sample mean ``mu`` and covariance ``Sigma`` (``ddof=1``) of the
  per-bar returns (annualised figures are for display only; the optimum is the same):

  * ``"equal"``: ``1 / n``; a dict ``{name: weight}`` or a sequence: fixed weights as given
    (normalised to sum 1 when ``normalize=True``).
  * ``"min_variance"``: minimise ``w' Sigma w``.
  * ``"max_sharpe"``: maximise ``(w' mu - rf) / sqrt(w' Sigma w)`` (``rf`` per bar); without
    bounds this is the tangency portfolio ``Sigma^-1 (mu - rf) / 1' Sigma^-1 (mu - rf)`` when
    that denominator is positive.
  * ``"mean_variance"``: maximise ``w' mu - risk_aversion / 2 * w' Sigma w``.
  * ``"risk_parity"``: equal risk contributions, ``w_i (Sigma w)_i = w' Sigma w / n``.

  Every optimised portfolio is fully invested (``sum w = 1``). ``long_only=True`` (default)
  adds ``0 <= w_i <= 1``; with ``long_only=False`` weights may be negative (short a
  strategy's returns). Risk parity is long-only by construction (solved as the convex problem
  ``min 1/2 w' Sigma w - 1/n sum log w_i``, then normalised; Spinu 2013). Optimisers run
  ``scipy.optimize.minimize`` (SLSQP) from equal weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize

from framework import metrics
from framework.backtest import BacktestResult
from framework.enums import trade_dt

METHODS = ("equal", "min_variance", "max_sharpe", "mean_variance", "risk_parity")
WeightsInput = str | Mapping[str, float] | Sequence[float]


@dataclass(frozen=True)
class PortfolioResult:
    """A combined portfolio of strategies (module docstring for the conventions)."""

    weights: pd.Series  # by component name, summing to 1
    component_returns: pd.DataFrame  # per-bar returns, one column per component
    returns: pd.Series  # the portfolio's per-bar returns
    equity: pd.Series  # init_cash compounded by ``returns``; first bar = init_cash
    stats: dict[str, object]  # ``metrics.performance_stats`` of ``equity`` (curve statistics)
    ann_factor: float
    method: str

    @property
    def correlation(self) -> pd.DataFrame:
        """Pearson correlation matrix of the components' per-bar returns."""
        return self.component_returns.corr()

    @property
    def covariance(self) -> pd.DataFrame:
        """Annualised covariance of the components' per-bar returns (``ddof=1``)."""
        return self.component_returns.cov() * self.ann_factor

    @property
    def risk_contributions(self) -> pd.Series:
        """Each component's share of the portfolio variance, ``w_i (Sigma w)_i / w' Sigma w``
        (sums to 1)."""
        sigma = self.component_returns.cov().to_numpy()
        w = self.weights.to_numpy()
        return pd.Series(w * (sigma @ w) / (w @ sigma @ w), index=self.weights.index, name="risk_contribution")

    def table(self) -> pd.DataFrame:
        """One row per component and one for the portfolio: weight, annualised return (mean
        per-bar return times ``ann_factor``), volatility, Sharpe (no risk-free) and risk
        contribution."""
        frame = pd.concat([self.component_returns, self.returns.rename("portfolio")], axis=1)
        mean, std = frame.mean() * self.ann_factor, frame.std(ddof=1) * math.sqrt(self.ann_factor)
        return pd.DataFrame({
            "weight": pd.concat([self.weights, pd.Series({"portfolio": self.weights.sum()})]),
            "ann_return": mean, "ann_volatility": std, "sharpe": mean / std,
            "risk_contribution": pd.concat([self.risk_contributions, pd.Series({"portfolio": 1.0})]),
        })


def combine(results: Mapping[str, BacktestResult | pd.Series] | Sequence[BacktestResult | pd.Series],
            weights: WeightsInput = "equal", *, long_only: bool = True, risk_aversion: float = 1.0,
            risk_free: float = 0.0, ann_factor: float | None = None, init_cash: float | None = None,
            normalize: bool = True) -> PortfolioResult:
    """Combine backtests into one portfolio, rebalanced to ``weights`` every bar.

    Args:
        results: ``{name: BacktestResult}`` or a list (named by each strategy with its
            parameters, ``SmaCross(fast=10, slow=30)``, made unique with ``#2``...). A component may also be an equity Series (DatetimeIndex).
        weights: ``"equal"``, ``"min_variance"``, ``"max_sharpe"``, ``"mean_variance"``,
            ``"risk_parity"``, or fixed weights: ``{name: w}`` (every component named) or a
            sequence in the order of ``results``.
        long_only: bound optimised weights to [0, 1] (module docstring).
        risk_aversion: ``lambda`` of ``"mean_variance"`` (> 0), for per-bar mean and variance.
        risk_free: annual rate for ``"max_sharpe"`` and the portfolio's Sharpe and Sortino.
        ann_factor: bars per year; default the first result's (or from the common index).
        init_cash: the portfolio's starting equity; default the first result's ``init_cash``
            (1.0 for Series components).
        normalize: scale fixed weights to sum 1 (False keeps them, e.g. 0.5 / 0.3 leaves 20 %
            in cash earning nothing).

    Raises:
        ValueError / TypeError naming the argument: fewer than 2 components or 3 shared bars,
        an unknown method, fixed weights that do not match the components.
    """
    names, equities = _components(results)
    joined = pd.concat(equities, axis=1, join="inner", keys=names)
    returns = joined.pct_change().iloc[1:]
    if len(returns) < 2:
        raise ValueError(f"results share {len(returns) + 1} bars; at least 3 are needed to combine them")
    if not np.isfinite(returns.to_numpy()).all():
        raise ValueError("an equity curve reaches 0 or holds NaN; its returns are undefined")
    first = next(iter(results.values())) if isinstance(results, Mapping) else results[0]
    if ann_factor is None:
        ann_factor = first.ann_factor if isinstance(first, BacktestResult) else metrics.bars_per_year(returns.index)
    if not (math.isfinite(ann_factor) and ann_factor > 0):
        raise ValueError(f"ann_factor must be a positive number of bars per year, got {ann_factor!r}")
    if init_cash is None:
        init_cash = first.settings.init_cash if isinstance(first, BacktestResult) else 1.0
    rf_bar = metrics.risk_free_per_bar(risk_free, ann_factor)
    mu, sigma = returns.mean().to_numpy(), returns.cov().to_numpy()
    method, w = _weights(weights, names, mu, sigma, rf_bar, long_only, risk_aversion, normalize)

    port = pd.Series(returns.to_numpy() @ w, index=returns.index, name="portfolio")
    growth = np.concatenate(([1.0], np.cumprod(1.0 + port.to_numpy())))
    equity = pd.Series(init_cash * growth, index=joined.index, name="portfolio")
    no_trades = np.zeros(0, dtype=trade_dt)
    # exposed where any component's equity moved (a flat component holds cash)
    exposure = np.concatenate(([False], (returns.to_numpy() != 0).any(axis=1)))
    stats = metrics.performance_stats(equity, no_trades, exposure, ann_factor, risk_free)
    for key in ("win_rate", "profit_factor", "expectancy", "total_trades", "avg_trade_duration",
                "largest_win", "largest_loss"):
        stats.pop(key)  # trades belong to the components
    return PortfolioResult(pd.Series(w, index=names, name="weight"), returns, port, equity, stats,
                           float(ann_factor), method)


# --- weights ----------------------------------------------------------------------------------


def min_variance_weights(sigma: np.ndarray, long_only: bool = True) -> np.ndarray:
    """Fully invested weights of least variance ``w' sigma w``."""
    n = len(sigma)
    return _solve(lambda w: w @ sigma @ w, lambda w: 2 * sigma @ w, n, long_only)


def max_sharpe_weights(mu: np.ndarray, sigma: np.ndarray, rf: float = 0.0, long_only: bool = True) -> np.ndarray:
    """Fully invested weights of the highest ``(w' mu - rf) / sqrt(w' sigma w)``."""
    if not (mu > rf).any():
        raise ValueError("max_sharpe needs a component whose mean return beats the risk-free rate; "
                         "none does (use min_variance or risk_parity)")
    excess = mu - rf
    # scale-free: maximise the Sharpe of the raw vector; the sum-1 constraint fixes the scale

    def neg_sharpe(w: np.ndarray) -> float:
        return -(w @ excess) / math.sqrt(w @ sigma @ w)

    def grad(w: np.ndarray) -> np.ndarray:
        var = w @ sigma @ w
        return -(excess * var - (w @ excess) * (sigma @ w)) / var ** 1.5

    return _solve(neg_sharpe, grad, len(mu), long_only)


def mean_variance_weights(mu: np.ndarray, sigma: np.ndarray, risk_aversion: float = 1.0,
                          long_only: bool = True) -> np.ndarray:
    """Fully invested weights maximising ``w' mu - risk_aversion / 2 * w' sigma w``."""
    if not (math.isfinite(risk_aversion) and risk_aversion > 0):
        raise ValueError(f"risk_aversion must be a number > 0, got {risk_aversion!r}")
    return _solve(lambda w: risk_aversion / 2 * (w @ sigma @ w) - w @ mu,
                  lambda w: risk_aversion * sigma @ w - mu, len(mu), long_only)


def risk_parity_weights(sigma: np.ndarray) -> np.ndarray:
    """Long-only weights with equal risk contributions ``w_i (sigma w)_i`` (Spinu's convex
    form: ``min 1/2 y' sigma y - 1/n sum log y``, ``w = y / sum y``)."""
    n = len(sigma)
    scale = np.sqrt(np.diag(sigma))
    if not (scale > 0).all():
        raise ValueError("risk_parity needs every component to have a varying return (a flat curve has no risk)")
    corr = sigma / np.outer(scale, scale)  # well scaled; y_i = x_i / scale_i
    res = optimize.minimize(lambda x: 0.5 * x @ corr @ x - np.log(x).sum() / n, np.full(n, 1.0),
                            jac=lambda x: corr @ x - 1.0 / (n * x), method="L-BFGS-B",
                            bounds=[(1e-12, None)] * n, options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000})
    if not res.success:
        raise RuntimeError(f"risk parity optimisation failed: {res.message}")
    y = res.x / scale
    return y / y.sum()


def _solve(objective, gradient, n: int, long_only: bool) -> np.ndarray:
    res = optimize.minimize(objective, np.full(n, 1.0 / n), jac=gradient, method="SLSQP",
                            bounds=[(0.0, 1.0)] * n if long_only else None,
                            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0,
                                          "jac": lambda w: np.ones_like(w)}],
                            options={"ftol": 1e-15, "maxiter": 1000})
    if not res.success:
        raise RuntimeError(f"weight optimisation failed: {res.message}")
    w = res.x
    return np.clip(w, 0.0, 1.0) / np.clip(w, 0.0, 1.0).sum() if long_only else w


def _weights(weights: WeightsInput, names: list[str], mu: np.ndarray, sigma: np.ndarray, rf: float,
             long_only: bool, risk_aversion: float, normalize: bool) -> tuple[str, np.ndarray]:
    n = len(names)
    if isinstance(weights, str):
        # per-bar moments are tiny (variances ~1e-4); one common scale leaves every optimum
        # where it is and keeps the solvers' tolerances meaningful
        c = 1.0 / np.mean(np.diag(sigma)) if np.mean(np.diag(sigma)) > 0 else 1.0
        mu, sigma, rf = mu * c, sigma * c, rf * c
        if weights == "equal":
            return weights, np.full(n, 1.0 / n)
        if weights == "min_variance":
            return weights, min_variance_weights(sigma, long_only)
        if weights == "max_sharpe":
            return weights, max_sharpe_weights(mu, sigma, rf, long_only)
        if weights == "mean_variance":
            return weights, mean_variance_weights(mu, sigma, risk_aversion, long_only)
        if weights == "risk_parity":
            return weights, risk_parity_weights(sigma)
        raise ValueError(f"weights must be one of {', '.join(map(repr, METHODS))}, a dict "
                         f"{{name: weight}} or a sequence of {n} numbers; got {weights!r}")
    if isinstance(weights, Mapping):
        missing, extra = set(names) - set(weights), set(weights) - set(names)
        if missing or extra:
            raise ValueError(f"weights must name every component ({', '.join(names)}): "
                             f"missing {sorted(missing)}, unknown {sorted(extra)}")
        w = np.array([weights[k] for k in names], dtype=np.float64)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n,):
            raise ValueError(f"weights must hold {n} numbers, one per component, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError(f"weights must be finite numbers, got {list(w)}")
    if normalize:
        if w.sum() == 0:
            raise ValueError("weights sum to 0; they cannot be normalised (normalize=False keeps them)")
        w = w / w.sum()
    return "fixed", w


# --- inputs -----------------------------------------------------------------------------------


def _components(results) -> tuple[list[str], list[pd.Series]]:
    if isinstance(results, Mapping):
        names, items = [str(k) for k in results], list(results.values())
    elif isinstance(results, Sequence) and not isinstance(results, str):
        items = list(results)
        names = []
        for item in items:
            base = repr(item.strategy) if isinstance(item, BacktestResult) else str(item.name or "component")
            name, k = base, 2
            while name in names:
                name, k = f"{base}#{k}", k + 1
            names.append(name)
    else:
        raise TypeError(f"results must be a dict {{name: BacktestResult}} or a list of them, got {type(results).__name__}")
    if len(items) < 2:
        raise ValueError(f"results must hold at least 2 components to combine, got {len(items)}")
    equities = []
    for name, item in zip(names, items, strict=True):
        if isinstance(item, BacktestResult):
            equities.append(item.equity)
        elif isinstance(item, pd.Series) and isinstance(item.index, pd.DatetimeIndex):
            equities.append(item.astype(np.float64))
        else:
            raise TypeError(f"results[{name!r}] must be a BacktestResult or an equity Series on a "
                            f"DatetimeIndex, got {type(item).__name__}")
    return names, equities
