"""Risk analytics: Value at Risk, Expected Shortfall, their backtest, Monte Carlo, and statistics
of a strategy against a benchmark.

Conventions (every function here follows them):

- Returns are simple fractional returns (0.01 = 1 %), one per bar (or per trade for the trade
  bootstrap), oldest first. A ``BacktestResult`` stands for its equity's per-bar returns
  (its trades' ``return`` column for the trade bootstrap). NaN or inf is rejected, never
  skipped.
- **VaR and ES are positive loss fractions**: a 95 % one-bar VaR of 0.03 means a 5 % chance of
  losing more than 3 % in a bar; ES is the average loss in that worst 5 %. ``confidence`` is
  the probability of not breaching (0.95, 0.99); the return quantile used is
  ``level = 1 - confidence``.
- Historical quantiles interpolate linearly between order statistics, exactly as
  ``np.quantile(r, level)`` (its default ``method="linear"``); historical ES is minus the mean
  of the returns at or below that quantile.
- Horizon ``h`` (bars): historical VaR uses the overlapping ``h``-bar compounded returns
  ``prod(1 + r[i:i+h]) - 1`` (every start bar, so ``n - h + 1`` of them, serially correlated
  but using all the data); parametric and Cornish-Fisher scale the per-bar mean by ``h`` and
  the standard deviation by ``sqrt(h)`` (i.i.d. bars; Cornish-Fisher also divides the skew by
  ``sqrt(h)`` and the excess kurtosis by ``h``, the moments of a sum of ``h`` i.i.d. bars);
  Monte Carlo compounds ``h`` simulated normal bars.
- Sample moments: standard deviation with ``ddof=1``; skew and excess kurtosis are the biased
  moment estimators of ``scipy.stats.skew`` / ``scipy.stats.kurtosis`` (their defaults).

The loops live in ``framework.risk_nb`` (numba); this module checks inputs and maps arrays onto
pandas objects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats

from framework import metrics
from framework import risk_nb as nb
from framework.backtest import BacktestResult

ReturnsInput = BacktestResult | pd.Series | np.ndarray | Sequence[float]

VAR_METHODS = ("historical", "parametric", "cornish_fisher", "monte_carlo")
ROLLING_METHODS = ("historical", "parametric", "cornish_fisher")
MC_METHODS = ("trades", "block", "timing")
# fewest observations (returns, or h-bar returns for "historical") each VaR method accepts
_MIN_OBS = {"historical": 2, "parametric": 2, "cornish_fisher": 4, "monte_carlo": 2}


# --- Value at Risk and Expected Shortfall -------------------------------------------------


def value_at_risk(
    returns: ReturnsInput,
    confidence: float = 0.95,
    horizon: int = 1,
    method: str = "historical",
    n_sims: int = 100_000,
    seed: int | None = None,
) -> float:
    """Value at Risk of ``returns``: the loss (positive fraction) not exceeded with probability
    ``confidence`` over ``horizon`` bars.

    Args:
        returns: per-bar simple returns (fractions), or a ``BacktestResult`` (its equity's).
        confidence: in (0, 1), e.g. 0.95 or 0.99.
        horizon: bars, >= 1 (see the module docstring for how each method scales).
        method: ``"historical"`` (empirical quantile), ``"parametric"`` (normal),
            ``"cornish_fisher"`` (normal quantile corrected for skew and excess kurtosis) or
            ``"monte_carlo"`` (``n_sims`` simulated normal paths of ``horizon`` bars).
        n_sims: Monte Carlo simulations (>= 2); other methods ignore it.
        seed: Monte Carlo seed (int >= 0); None draws one. Same seed, same result.

    Raises:
        ValueError: NaN in ``returns``, too few of them, or a keyword outside its range.
    """
    return _var_es(returns, confidence, horizon, method, n_sims, seed)[0]


def expected_shortfall(
    returns: ReturnsInput,
    confidence: float = 0.95,
    horizon: int = 1,
    method: str = "historical",
    n_sims: int = 100_000,
    seed: int | None = None,
) -> float:
    """Expected Shortfall (CVaR): the mean loss (positive fraction) in the worst
    ``1 - confidence`` share of outcomes over ``horizon`` bars. Arguments as ``value_at_risk``.

    Historical and Monte Carlo: minus the mean of the (simulated) returns at or below the VaR
    quantile. Normal: ``sigma * pdf(z) / level - mu``. Cornish-Fisher: minus the mean of the
    Cornish-Fisher quantile function over the tail levels (0, ``level``], in closed form from
    the truncated normal moments ``E[Z^k | Z < z]``.
    """
    return _var_es(returns, confidence, horizon, method, n_sims, seed)[1]


def var_es(
    returns: ReturnsInput,
    confidence: float = 0.95,
    horizon: int = 1,
    method: str = "historical",
    n_sims: int = 100_000,
    seed: int | None = None,
) -> tuple[float, float]:
    """``(value_at_risk, expected_shortfall)`` from one pass over ``returns`` (positive loss
    fractions); arguments as ``value_at_risk``."""
    return _var_es(returns, confidence, horizon, method, n_sims, seed)


def rolling_var_es(
    returns: ReturnsInput,
    window: int,
    confidence: float = 0.95,
    horizon: int = 1,
    method: str = "historical",
) -> pd.DataFrame:
    """VaR and ES over a rolling window of ``window`` bars: columns ``var`` and ``es``
    (positive loss fractions), one row per return.

    The row at bar ``t`` uses the returns of bars ``t - window + 1 .. t`` (inclusive): it is the
    estimate known at ``t``'s close, to compare with bar ``t + 1``'s return (``var_backtest``
    shifts it so). Rows before the first full window are NaN. With ``horizon > 1`` the
    historical method uses the ``window - horizon + 1`` overlapping ``horizon``-bar returns
    that lie inside the window. Monte Carlo has no rolling version (``n_sims`` draws per bar).

    Raises:
        ValueError: NaN in ``returns``, a ``window`` too short for the method or longer than
            ``returns``, or a keyword outside its range.
    """
    r, index = _returns_array(returns, "returns")
    level = 1.0 - _check_confidence(confidence)
    horizon = _check_int(horizon, "horizon", 1, "bars")
    method = _check_choice(method, "method", ROLLING_METHODS)
    window = _check_int(window, "window", 1, "bars")
    if window > len(r):
        raise ValueError(f"window ({window} bars) is longer than returns ({len(r)} values)")
    if method == "historical":
        need = _MIN_OBS[method] + horizon - 1
        if window < need:
            raise ValueError(
                f"window must be at least {need} bars for method='historical' with "
                f"horizon={horizon} (2 overlapping {horizon}-bar returns), got {window}"
            )
        out = np.full((len(r), 2), np.nan)
        out[horizon - 1 :] = nb.rolling_var_es_nb(
            nb.compound_returns_nb(r, horizon), window - horizon + 1, level
        )
        var, es = out[:, 0], out[:, 1]
    else:
        if window < _MIN_OBS[method]:
            raise ValueError(
                f"window must be at least {_MIN_OBS[method]} bars for method={method!r}, "
                f"got {window}"
            )
        moments = nb.rolling_moments_nb(r, window)
        var, es = _parametric_var_es(moments, level, horizon, method == "cornish_fisher")
    return pd.DataFrame({"var": var, "es": es}, index=index)


def _var_es(
    returns: ReturnsInput,
    confidence: float,
    horizon: int,
    method: str,
    n_sims: int,
    seed: int | None,
) -> tuple[float, float]:
    """(VaR, ES) of ``returns``; the checks and dispatch shared by the two public functions."""
    r, _ = _returns_array(returns, "returns")
    level = 1.0 - _check_confidence(confidence)
    horizon = _check_int(horizon, "horizon", 1, "bars")
    method = _check_choice(method, "method", VAR_METHODS)
    n_obs = len(r) - horizon + 1 if method == "historical" else len(r)
    if n_obs < _MIN_OBS[method]:
        what = f"{horizon}-bar returns" if method == "historical" else "returns"
        raise ValueError(
            f"returns gives {max(n_obs, 0)} {what}; method={method!r} needs at least "
            f"{_MIN_OBS[method]}"
        )
    if method == "historical":
        var, es = nb.var_es_nb(nb.compound_returns_nb(r, horizon), level)
        return float(var), float(es)
    moments = nb.moments_nb(r)
    if method == "monte_carlo":
        n_sims = _check_int(n_sims, "n_sims", 2, "simulations")
        sims = nb.normal_horizon_returns_nb(
            moments[nb.M_MEAN], moments[nb.M_STD], horizon, n_sims, np.uint64(_check_seed(seed))
        )
        var, es = nb.var_es_nb(sims, level)
        return float(var), float(es)
    var, es = _parametric_var_es(moments, level, horizon, method == "cornish_fisher")
    return float(var[0]), float(es[0])


def _parametric_var_es(
    moments: np.ndarray, level: float, horizon: int, cornish_fisher: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Normal or Cornish-Fisher (VaR, ES) arrays from rows of ``M_*`` moments."""
    z = float(stats.norm.ppf(level))
    out = nb.parametric_var_es_nb(np.atleast_2d(moments), z, float(stats.norm.pdf(z)), level,
                                  horizon, cornish_fisher)
    return out[:, 0], out[:, 1]


# --- VaR backtest -------------------------------------------------------------------------


def kupiec_pof(breaches: int, observations: int, confidence: float) -> tuple[float, float]:
    """Kupiec's proportion-of-failures test: (likelihood-ratio statistic, p-value).

    ``LR = -2 ln[(1 - p)^(n - x) p^x / ((1 - x/n)^(n - x) (x/n)^x)]`` with ``p = 1 -
    confidence``, ``x`` breaches in ``n`` observations (``0 ln 0 = 0``); under the null that the
    breach probability is ``p``, LR is chi-squared with 1 degree of freedom, and the p-value is
    its upper tail. A small p-value (< 0.05) rejects the VaR model.
    """
    n = _check_int(observations, "observations", 1, "forecasts")
    if isinstance(breaches, bool) or not isinstance(breaches, (int, np.integer)) or not (
        0 <= breaches <= n
    ):
        raise ValueError(f"breaches must be an integer in 0..observations ({n}), got {breaches!r}")
    p = 1.0 - _check_confidence(confidence)
    x = int(breaches)
    p_hat = x / n
    log_null = special.xlogy(n - x, 1.0 - p) + special.xlogy(x, p)
    log_alt = special.xlogy(n - x, 1.0 - p_hat) + special.xlogy(x, p_hat)
    lr = max(-2.0 * (log_null - log_alt), 0.0)  # >= 0 in exact arithmetic
    return float(lr), float(stats.chi2.sf(lr, 1))


@dataclass(frozen=True)
class VarBacktest:
    """Outcome of ``var_backtest``. Counts are bars; rates are fractions."""

    observations: int  # bars with a VaR forecast
    breaches: int  # bars whose loss exceeded the forecast
    expected_breaches: float  # observations * (1 - confidence)
    breach_rate: float  # breaches / observations
    lr_stat: float  # Kupiec's POF likelihood ratio
    p_value: float  # chi-squared (1 dof) upper tail of lr_stat
    forecast: pd.Series  # the VaR forecast for each bar (NaN where none)
    breach: pd.Series  # True where -return > forecast


def var_backtest(
    returns: ReturnsInput,
    confidence: float = 0.99,
    window: int = 250,
    method: str = "historical",
    var: pd.Series | np.ndarray | None = None,
) -> VarBacktest:
    """Count VaR breaches and run Kupiec's proportion-of-failures test.

    The one-bar VaR forecast for bar ``t`` is ``rolling_var_es(returns, window, confidence,
    method=method)["var"]`` at ``t - 1`` (only returns up to the previous close), unless
    ``var`` gives the forecasts directly, aligned with ``returns`` (the forecast for that bar,
    positive loss fractions, NaN where there is none). A breach is a loss strictly beyond the
    forecast, ``-return > var``. Only bars with a forecast count.

    Raises:
        ValueError: as ``rolling_var_es``; ``var`` of another length; no bar with a forecast.
    """
    r, index = _returns_array(returns, "returns")
    confidence = _check_confidence(confidence)
    if var is None:
        forecast = rolling_var_es(r, window, confidence, 1, method)["var"].to_numpy()
        forecast = np.concatenate(([np.nan], forecast[:-1]))
    else:
        forecast = np.asarray(var, dtype=np.float64)
        if forecast.shape != r.shape:
            raise ValueError(
                f"var must hold one forecast per return ({len(r)}), got shape {forecast.shape}"
            )
    has = np.isfinite(forecast)
    if not has.any():
        raise ValueError("no bar has a VaR forecast: returns is shorter than window + 1")
    breach = np.zeros(len(r), dtype=bool)
    breach[has] = -r[has] > forecast[has]
    n, x = int(has.sum()), int(breach.sum())
    lr, p_value = kupiec_pof(x, n, confidence)
    return VarBacktest(
        observations=n,
        breaches=x,
        expected_breaches=n * (1.0 - confidence),
        breach_rate=x / n,
        lr_stat=lr,
        p_value=p_value,
        forecast=pd.Series(forecast, index=index, name="var"),
        breach=pd.Series(breach, index=index, name="breach"),
    )


# --- Monte Carlo --------------------------------------------------------------------------


@dataclass(frozen=True)
class MonteCarloResult:
    """Monte Carlo paths and their statistics.

    ``paths`` has one row per path: ``final_return`` (equity at the end - 1), ``cagr`` (only
    when steps per year are known: ``(1 + final_return) ** (periods_per_year / n_steps) - 1``),
    ``max_drawdown`` (most negative equity / running peak - 1, <= 0) and ``min_return`` (lowest
    equity, the start included, - 1: the deepest loss below the starting capital, <= 0).
    ``equity`` is the (paths, steps) equity matrix (start 1.0) when ``keep_paths`` was set.
    """

    paths: pd.DataFrame
    method: str
    n_steps: int
    seed: int
    periods_per_year: float | None
    equity: np.ndarray | None = None

    def prob_loss(self, x: float = 0.0) -> float:
        """Share of paths ending with a loss beyond ``x`` (fraction): ``final_return < -x``."""
        return float((self.paths["final_return"] < -x).mean())

    def prob_ruin(self, level: float = 0.5) -> float:
        """Share of paths whose equity at some step fell to ``1 - level`` of the start or below
        (``min_return <= -level``); ``level`` in (0, 1], 1.0 meaning wiped out."""
        if not (0.0 < level <= 1.0):
            raise ValueError(f"level must be a loss fraction in (0, 1], got {level}")
        return float((self.paths["min_return"] <= -level).mean())

    def summary(
        self, confidence: float = 0.90, loss: float = 0.0, ruin: float = 0.5
    ) -> pd.DataFrame:
        """Medians and bands, one row per statistic; columns ``estimate``, ``lower``, ``upper``.

        Distribution rows (``final_return``, ``cagr``, ``max_drawdown``, ``min_return``): the
        median of the paths and the central ``confidence`` percentile band (linear quantiles).
        Probability rows (``prob_loss``: ``final_return < -loss``; ``prob_ruin``:
        ``min_return <= -ruin``): the share of paths and its Wilson score interval at
        ``confidence`` (the Monte Carlo sampling error of that share).
        """
        tail = (1.0 - _check_confidence(confidence)) / 2.0
        rows = {}
        for col in self.paths.columns:
            values = self.paths[col].to_numpy()
            lower, median, upper = np.quantile(values, [tail, 0.5, 1.0 - tail])
            rows[col] = (median, lower, upper)
        n = len(self.paths)
        z = stats.norm.ppf(1.0 - tail)
        shares = {"prob_loss": self.prob_loss(loss), "prob_ruin": self.prob_ruin(ruin)}
        for name, share in shares.items():
            rows[name] = (share, *_wilson(share, n, z))
        return pd.DataFrame.from_dict(rows, orient="index", columns=["estimate", "lower", "upper"])

    def equity_bands(self, confidence: float = 0.90) -> pd.DataFrame:
        """Per step, the ``lower``, ``median`` and ``upper`` equity (start 1.0) across paths:
        a fan chart. Needs ``keep_paths=True``."""
        if self.equity is None:
            raise ValueError("equity_bands needs the paths: call monte_carlo(..., keep_paths=True)")
        tail = (1.0 - _check_confidence(confidence)) / 2.0
        q = np.quantile(self.equity, [tail, 0.5, 1.0 - tail], axis=0)
        return pd.DataFrame({"lower": q[0], "median": q[1], "upper": q[2]},
                            index=pd.RangeIndex(1, self.n_steps + 1, name="step"))


def monte_carlo(
    source: ReturnsInput | pd.DataFrame,
    method: str = "trades",
    n_paths: int = 10_000,
    n_steps: int | None = None,
    block: float = 20.0,
    seed: int | None = None,
    periods_per_year: float | None = None,
    durations: np.ndarray | Sequence[int] | None = None,
    directions: np.ndarray | Sequence[int] | None = None,
    cost: float | None = None,
    keep_paths: bool = False,
) -> MonteCarloResult:
    """Simulate ``n_paths`` equity paths (start 1.0) by resampling a strategy's history.

    Methods:

    - ``"trades"``: bootstrap of trades. Each path compounds ``n_steps`` (default: as many as
      given) trade returns drawn with replacement: each trade's return applies to the whole
      equity, as with all-in sizing. ``source``: trade returns, ``result.trades`` (its
      ``return`` column) or a ``BacktestResult``.
    - ``"block"``: stationary block bootstrap (Politis & Romano) of bar returns: blocks of
      consecutive bars with geometric lengths of mean ``block`` bars, at uniformly random
      starts, wrapping around the end; keeps short-range dependence (volatility clusters).
      ``source``: bar returns or a ``BacktestResult`` (its equity's). ``n_steps`` defaults to
      the number of returns.
    - ``"timing"``: randomised entry timing. The same trades (``durations`` in bars and
      ``directions`` +1 long / -1 short, in order) enter at uniformly random, non-overlapping
      bars of the instrument: trade return ``direction * (close[exit] / close[entry] - 1) -
      cost``. Against the strategy's own result this asks whether its timing beats chance.
      ``source``: the instrument's bar returns, or a one-instrument ``BacktestResult`` (its
      close; its trades' durations and directions; ``cost`` defaults to the round trip's
      fees and slippage, ``2 * (fees + slippage)``). One step per trade.

    Args:
        n_paths: paths, >= 1.
        n_steps: steps per path, >= 1 (not for ``"timing"``).
        block: mean block length in bars, >= 1 (``"block"`` only).
        seed: int >= 0; None draws one (stored in the result). The same seed gives the same
            paths, whatever the number of threads.
        periods_per_year: steps per year for the CAGR. From a ``BacktestResult``: bars per year
            (block), trades per year of the backtest (trades, timing); from returns with a
            DatetimeIndex: bars per year (block) or trades per year over their span (timing).
            Otherwise no ``cagr`` column.
        cost: per-trade cost (fraction) subtracted from each trade return (``"timing"``).
        keep_paths: keep the (paths, steps) equity matrix for ``equity_bands``.

    Raises:
        ValueError: NaN in the input, too few values, or a keyword outside its range.
    """
    method = _check_choice(method, "method", MC_METHODS)
    n_paths = _check_int(n_paths, "n_paths", 1, "paths")
    seed = _check_seed(seed)
    if method == "timing":
        if n_steps is not None:
            raise ValueError("n_steps does not apply to method='timing' (one step per trade)")
        values, growth_steps, auto_ppy, cost = _timing_inputs(source, durations, directions, cost)
    else:
        for name, value in (("durations", durations), ("directions", directions), ("cost", cost)):
            if value is not None:
                raise ValueError(f"{name} applies to method='timing' only, not {method!r}")
        if method == "trades":
            values, auto_ppy = _trade_returns(source)
        else:
            values, index = _returns_array(source, "source")
            auto_ppy = _ann_factor_of(source, index)
        if len(values) < 1:
            raise ValueError(f"source holds no {'trades' if method == 'trades' else 'returns'}")
        n_steps = len(values) if n_steps is None else _check_int(n_steps, "n_steps", 1, "steps")
    ppy = auto_ppy if periods_per_year is None else _check_positive(periods_per_year,
                                                                     "periods_per_year")
    steps = growth_steps if method == "timing" else n_steps
    equity = np.empty((n_paths, steps) if keep_paths else (0, 0))
    s64 = np.uint64(seed)
    if method == "trades":
        out = nb.mc_trades_nb(values, n_paths, n_steps, s64, equity)
    elif method == "block":
        block = float(block)
        if not (math.isfinite(block) and block >= 1.0):
            raise ValueError(f"block must be a mean block length in bars, >= 1, got {block}")
        out = nb.mc_block_nb(values, n_paths, n_steps, block, s64, equity)
    else:
        growth, dur, dirs = values
        out = nb.mc_timing_nb(growth, dur, dirs, cost, n_paths, s64, equity)
    cols = {"final_return": out[:, nb.P_FINAL_RETURN]}
    if ppy is not None:
        cols["cagr"] = np.power(1.0 + out[:, nb.P_FINAL_RETURN], ppy / steps) - 1.0
    cols["max_drawdown"] = out[:, nb.P_MAX_DRAWDOWN]
    cols["min_return"] = out[:, nb.P_MIN_RETURN]
    return MonteCarloResult(
        paths=pd.DataFrame(cols, index=pd.RangeIndex(n_paths, name="path")),
        method=method,
        n_steps=steps,
        seed=seed,
        periods_per_year=ppy,
        equity=equity if keep_paths else None,
    )


def _trade_returns(source: ReturnsInput | pd.DataFrame) -> tuple[np.ndarray, float | None]:
    """Trade returns and trades per year (when a backtest gives the time span)."""
    if isinstance(source, BacktestResult):
        values = np.ascontiguousarray(source.trade_records["ret"], dtype=np.float64)
        _check_finite(values, "source", None)
        return values, _per_year(len(values), source.index)
    if isinstance(source, pd.DataFrame):
        if "return" not in source:
            raise ValueError("source DataFrame must be a trades frame with a 'return' column")
        source = source["return"]
    values, _ = _returns_array(source, "source")
    return values, None


def _timing_inputs(
    source: ReturnsInput,
    durations: np.ndarray | Sequence[int] | None,
    directions: np.ndarray | Sequence[int] | None,
    cost: float | None,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], int, float | None, float]:
    """(price path, durations, directions), trade count, trades per year and cost for timing."""
    if isinstance(source, BacktestResult):
        if len(source.columns) != 1:
            raise ValueError(
                f"method='timing' needs a one-instrument backtest, got {len(source.columns)} "
                "instruments; pass one instrument's returns with durations= instead"
            )
        recs = source.trade_records
        if durations is None:
            durations = recs["exit_bar"] - recs["entry_bar"]
        if directions is None:
            directions = recs["direction"]
        if cost is None:
            cost = 2.0 * (source.settings.fees + source.settings.slippage)
        close = source.close[:, 0]
        growth = close / close[0]
        index = source.index
    else:
        r, index = _returns_array(source, "source")
        growth = np.concatenate(([1.0], np.cumprod(1.0 + r)))
        index = index if isinstance(index, pd.DatetimeIndex) else None
    if durations is None:
        raise ValueError("method='timing' needs durations= (bars each trade is held)")
    dur = np.asarray(durations)
    if dur.ndim != 1 or len(dur) < 1 or not np.issubdtype(dur.dtype, np.integer) or (dur < 0).any():
        raise ValueError("durations must be a non-empty 1-D sequence of integers >= 0 (bars held)")
    n_bars = len(growth) - 1
    if dur.sum() > n_bars:
        raise ValueError(
            f"durations add up to {int(dur.sum())} bars, more than the {n_bars} returns given"
        )
    dirs = np.ones(len(dur)) if directions is None else np.asarray(directions, dtype=np.float64)
    if dirs.shape != dur.shape or not np.isin(dirs, (-1.0, 1.0)).all():
        raise ValueError(
            f"directions must hold +1 (long) or -1 (short) for each of the {len(dur)} trades"
        )
    cost = 0.0 if cost is None else float(cost)
    if not math.isfinite(cost):
        raise ValueError(f"cost must be a finite per-trade cost fraction, got {cost}")
    ppy = None
    if index is not None:
        ppy = _per_year(len(dur), index) if isinstance(source, BacktestResult) else (
            len(dur) / (n_bars / metrics.bars_per_year(index)) if len(index) >= 2 else None)
    arrays = (np.ascontiguousarray(growth, dtype=np.float64), dur.astype(np.int64),
              np.ascontiguousarray(dirs))
    return arrays, len(dur), ppy, cost


# --- strategy against a benchmark ---------------------------------------------------------


def benchmark_comparison(
    strategy: ReturnsInput,
    benchmark: ReturnsInput | None = None,
    ann_factor: float | None = None,
    risk_free: float = 0.0,
) -> dict[str, float]:
    """Statistics of strategy returns against benchmark returns, bar by bar.

    Args:
        strategy: per-bar returns, or a ``BacktestResult`` (its equity's returns).
        benchmark: per-bar returns; None with a ``BacktestResult`` means its benchmark
            (``result.benchmark``: buy-and-hold unless ``Backtest(benchmark=)`` chose another).
            Two Series are aligned on their common index; arrays must have equal length.
        ann_factor: bars per year; defaults to the result's, or ``bars_per_year`` of a
            DatetimeIndex.
        risk_free: annual rate (fraction) for alpha and beta, per bar
            ``(1 + risk_free) ** (1 / ann_factor) - 1`` as in ``framework.metrics``.

    Returns:
        ``alpha``, ``beta``, ``correlation``, ``tracking_error``, ``information_ratio``,
        ``up_capture``, ``down_capture`` and ``observations``, as defined in
        :func:`framework.metrics.relative_stats`.
    """
    s_raw, s_index = _returns_array(strategy, "strategy")
    if benchmark is None:
        if not isinstance(strategy, BacktestResult):
            raise ValueError("benchmark is needed unless strategy is a BacktestResult")
        bench_equity = strategy.benchmark[0]
        benchmark = bench_equity.pct_change().iloc[1:]
    b_raw, b_index = _returns_array(benchmark, "benchmark")
    s_ser, b_ser = pd.Series(s_raw, index=s_index), pd.Series(b_raw, index=b_index)
    if _has_index(strategy) and _has_index(benchmark):
        s_ser, b_ser = s_ser.align(b_ser, join="inner")
    elif len(s_raw) != len(b_raw):
        raise ValueError(
            f"strategy and benchmark must have the same length, got {len(s_raw)} and {len(b_raw)}"
        )
    s, b = s_ser.to_numpy(), b_ser.to_numpy()
    if len(s) < 2:
        raise ValueError(f"strategy and benchmark share {len(s)} bars; at least 2 are needed")
    if ann_factor is None:
        ann_factor = _ann_factor_of(strategy, s_ser.index) or _ann_factor_of(benchmark, b_ser.index)
        if ann_factor is None:
            raise ValueError("ann_factor (bars per year) is needed: the inputs carry no timestamps")
    ann_factor = _check_positive(ann_factor, "ann_factor")
    if not (math.isfinite(risk_free) and risk_free > -1):
        raise ValueError(f"risk_free must be an annual rate (fraction) above -1, got {risk_free}")
    return metrics.relative_stats(s, b, ann_factor, risk_free)


# --- input checks -------------------------------------------------------------------------


def _returns_array(data: ReturnsInput, name: str) -> tuple[np.ndarray, pd.Index]:
    """Finite float64 returns and their index (a RangeIndex for plain sequences)."""
    if isinstance(data, BacktestResult):
        series = data.equity.pct_change().iloc[1:]
    elif isinstance(data, pd.Series):
        series = data
    elif isinstance(data, pd.DataFrame):
        raise TypeError(f"{name} must be one series of returns, got a DataFrame; pick a column")
    else:
        values = np.asarray(data, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one return per bar), got shape {values.shape}")
        series = pd.Series(values)
    values = np.ascontiguousarray(series.to_numpy(dtype=np.float64))
    _check_finite(values, name, series.index)
    return values, series.index


def _check_finite(values: np.ndarray, name: str, index: pd.Index | None) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        labelled = index is not None and not isinstance(index, pd.RangeIndex)
        where = f" ({index[i]})" if labelled else ""
        raise ValueError(
            f"{name} contains {bad.sum()} NaN or inf values, the first at position {i}{where}; "
            "drop or fill them first (e.g. returns.dropna())"
        )


def _has_index(data: object) -> bool:
    return isinstance(data, (pd.Series, BacktestResult))


def _ann_factor_of(data: object, index: pd.Index) -> float | None:
    """Bars per year of a backtest, or of a DatetimeIndex with at least 2 bars, else None."""
    if isinstance(data, BacktestResult):
        return float(data.ann_factor)
    if isinstance(index, pd.DatetimeIndex) and len(index) >= 2:
        return metrics.bars_per_year(index)
    return None


def _per_year(count: int, index: pd.DatetimeIndex) -> float | None:
    """``count`` events per year over the calendar span of ``index`` (None for a zero span)."""
    years = (index[-1] - index[0]) / metrics.YEAR
    return count / years if years > 0 else None


def _check_confidence(confidence: float) -> float:
    c = float(confidence)
    if not (0.0 < c < 1.0):
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95 or 0.99, got {confidence}")
    return c


def _check_int(value: int, name: str, minimum: int, unit: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} ({unit}), got {value!r}")
    return int(value)


def _check_positive(value: float, name: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return v


def _check_choice(value: str, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def _check_seed(seed: int | None) -> int:
    if seed is None:
        return int(np.random.default_rng().integers(0, 2**63))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (
        0 <= seed < 2**64
    ):
        raise ValueError(f"seed must be an integer in [0, 2**64) or None, got {seed!r}")
    return int(seed)


def _wilson(share: float, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a share observed in ``n`` independent trials."""
    denom = 1.0 + z * z / n
    centre = (share + z * z / (2 * n)) / denom
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half
