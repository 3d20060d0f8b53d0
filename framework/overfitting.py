"""Overfitting guards for parameter searches.

- :func:`deflated_sharpe_ratio`: the probability that a strategy's true Sharpe ratio is above
  the best one expected from ``n_trials`` unskilled trials (Bailey and López de Prado, "The
  Deflated Sharpe Ratio: Correcting for Selection Bias, Backtest Overfitting and Non-Normality",
  Journal of Portfolio Management 40(5), 2014).
- :func:`probability_of_backtest_overfitting`: how often the in-sample best of a set of
  strategies ranks below the median out of sample, by combinatorially symmetric
  cross-validation (Bailey, Borwein, López de Prado and Zhu, "The Probability of Backtest
  Overfitting", Journal of Computational Finance 20(4), 2017; SSRN 2326253).

Sharpe ratios here are per observation (not annualised), as the formulas require.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: the Euler-Mascheroni constant
EULER_GAMMA = 0.5772156649015329


def _positive(value: float, keyword: str, minimum: float = 0.0, strict: bool = True) -> float:
    v = float(value)
    if not math.isfinite(v) or (v <= minimum if strict else v < minimum):
        raise ValueError(f"{keyword} must be a finite number {'>' if strict else '>='} {minimum}, got {value!r}")
    return v


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """Expected maximum Sharpe ratio of ``n_trials`` independent trials whose true Sharpe is 0
    and whose estimated Sharpe ratios have variance ``sharpe_variance`` (the false strategy
    theorem, with the Euler-Mascheroni approximation of the maximum of normals):
    ``sqrt(V) * ((1 - g) * Z(1 - 1/N) + g * Z(1 - 1/(N e)))``, ``Z`` the standard normal
    quantile, ``g`` the Euler-Mascheroni constant. 0 for a single trial."""
    if isinstance(n_trials, bool) or not isinstance(n_trials, (int, np.integer)) or n_trials < 1:
        raise ValueError(f"n_trials must be a whole number >= 1, got {n_trials!r}")
    variance = _positive(sharpe_variance, "sharpe_variance", strict=False)
    if n_trials == 1:
        return 0.0
    z = stats.norm.ppf
    return math.sqrt(variance) * ((1 - EULER_GAMMA) * z(1 - 1 / n_trials)
                                  + EULER_GAMMA * z(1 - 1 / (n_trials * math.e)))


def probabilistic_sharpe_ratio(sharpe: float, benchmark: float, n_obs: int, skew: float = 0.0,
                               kurtosis: float = 3.0) -> float:
    """Probability that the true Sharpe ratio exceeds ``benchmark``, given ``sharpe`` estimated
    from ``n_obs`` returns with ``skew`` and (non-excess) ``kurtosis`` (Bailey and López de
    Prado 2012): ``Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - skew SR + (kurtosis - 1) / 4 SR^2))``."""
    if isinstance(n_obs, bool) or not isinstance(n_obs, (int, np.integer)) or n_obs < 2:
        raise ValueError(f"n_obs must be a whole number of returns >= 2, got {n_obs!r}")
    sr = float(sharpe)
    if not (math.isfinite(sr) and math.isfinite(benchmark) and math.isfinite(skew)):
        raise ValueError(f"sharpe, benchmark and skew must be finite, got {sharpe!r}, {benchmark!r}, {skew!r}")
    kurt = _positive(kurtosis, "kurtosis (non-excess: 3 for normal returns)", minimum=1.0, strict=False)
    denominator = 1 - skew * sr + (kurt - 1) / 4 * sr ** 2
    if denominator <= 0:
        raise ValueError(
            f"skew={skew} and kurtosis={kurtosis} with sharpe={sharpe} give a negative variance of "
            "the Sharpe estimate; kurtosis is the non-excess one (3 for normal returns)"
        )
    return float(stats.norm.cdf((sr - benchmark) * math.sqrt(n_obs - 1) / math.sqrt(denominator)))


def deflated_sharpe_ratio(sharpe: float, *, n_trials: int, sharpe_variance: float, n_obs: int,
                          skew: float = 0.0, kurtosis: float = 3.0) -> float:
    """The deflated Sharpe ratio: the probabilistic Sharpe ratio against the Sharpe ratio the
    best of ``n_trials`` unskilled trials is expected to reach (Bailey and López de Prado 2014).

    Args:
        sharpe: the selected strategy's Sharpe ratio, per observation (an annualised Sharpe
            divided by ``sqrt(bars per year)``).
        n_trials: how many independent trials (parameter combinations) were tried.
        sharpe_variance: variance of the trials' (per-observation) Sharpe ratios, e.g.
            ``np.var(table["sharpe"] / np.sqrt(ann_factor), ddof=1)`` over a sweep.
        n_obs: number of returns the Sharpe ratio was estimated from.
        skew, kurtosis: skewness and (non-excess) kurtosis of the selected strategy's returns.

    Returns:
        A probability in [0, 1]; above 0.95, the Sharpe ratio is significant at 5 % after
        accounting for the number of trials and the non-normality of the returns.
    """
    return probabilistic_sharpe_ratio(sharpe, expected_max_sharpe(n_trials, sharpe_variance), n_obs,
                                      skew, kurtosis)


def sharpe(returns: np.ndarray) -> np.ndarray:
    """Per-observation Sharpe ratio of each column: mean / std (ddof=1); NaN for a flat column."""
    sd = returns.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, returns.mean(axis=0) / np.where(sd > 0, sd, 1.0), np.nan)


@dataclass
class PBOResult:
    """Outcome of :func:`probability_of_backtest_overfitting`.

    Attributes:
        pbo: share of the splits whose in-sample best has a logit <= 0 out of sample (ranks at
            or below the median).
        logits: ``log(w / (1 - w))`` per split, ``w = rank / (N + 1)`` the out-of-sample
            relative rank (1..N, ascending, ties averaged) of the in-sample best.
        best: column index of the in-sample best per split.
        is_performance, oos_performance: the metric of the in-sample best, in and out of
            sample, per split (for the performance-degradation regression of the paper).
    """

    pbo: float
    logits: np.ndarray
    best: np.ndarray
    is_performance: np.ndarray
    oos_performance: np.ndarray


def probability_of_backtest_overfitting(
    returns: np.ndarray,
    n_splits: int = 16,
    metric: Callable[[np.ndarray], np.ndarray] = sharpe,
) -> PBOResult:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation.

    The T x N matrix (one column of per-bar returns per trial) is cut into ``n_splits``
    consecutive row blocks (``numpy.array_split``: sizes differ by at most one row). For each of
    the ``C(S, S/2)`` ways to pick half of the blocks as in-sample (the rest, in order, is
    out-of-sample), the column with the best in-sample ``metric`` is found (first on ties) and
    its out-of-sample rank among all columns gives a logit; PBO is the share of logits <= 0.

    Args:
        returns: array-like of shape (T, N), N >= 2 trials, no NaN.
        n_splits: S, an even number >= 2 and at most T.
        metric: maps a (rows, N) array to N scores, higher better (default: :func:`sharpe`);
            NaN scores rank lowest.
    """
    m = np.asarray(returns, dtype=float)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError(f"returns must be a 2-d array (observations x trials) with >= 2 trials, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("returns must be finite (no NaN or inf); drop or fill the missing observations")
    if (isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or n_splits < 2
            or n_splits % 2 or n_splits > m.shape[0]):
        raise ValueError(
            f"n_splits must be an even whole number from 2 to the number of observations ({m.shape[0]}), "
            f"got {n_splits!r}"
        )
    blocks = np.array_split(np.arange(m.shape[0]), n_splits)
    n = m.shape[1]
    logits, best, is_perf, oos_perf = [], [], [], []
    for chosen in itertools.combinations(range(n_splits), n_splits // 2):
        inside = set(chosen)
        is_rows = np.concatenate([blocks[i] for i in chosen])
        oos_rows = np.concatenate([blocks[i] for i in range(n_splits) if i not in inside])
        is_score = np.nan_to_num(np.asarray(metric(m[is_rows]), dtype=float), nan=-np.inf)
        oos_score = np.nan_to_num(np.asarray(metric(m[oos_rows]), dtype=float), nan=-np.inf)
        star = int(np.argmax(is_score))
        w = stats.rankdata(oos_score)[star] / (n + 1)
        logits.append(math.log(w / (1 - w)))
        best.append(star)
        is_perf.append(is_score[star])
        oos_perf.append(oos_score[star])
    logits_arr = np.array(logits)
    return PBOResult(pbo=float(np.mean(logits_arr <= 0)), logits=logits_arr, best=np.array(best),
                     is_performance=np.array(is_perf), oos_performance=np.array(oos_perf))
