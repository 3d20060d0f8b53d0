"""Synthetic OHLCV bars: seeded, realistic enough to exercise strategies, any length.

Model, per bar of length ``dt`` (in years of 365 days) and per asset:

- Close-to-close log return ``r = mu + eps + J``.
- ``eps[t] = sqrt(h[t]) * z[t]`` with a GARCH(1,1) variance
  ``h[t] = omega + alpha * h[t-1] * m[t-1]**2 + beta * h[t-1]``; ``omega`` is set so the
  long-run variance of ``eps`` plus the jump variance equals ``annual_vol**2 * dt``. This gives
  volatility clustering. For one asset ``m = z`` (the textbook GARCH); several assets share one
  volatility regime driven by the equal-weighted market innovation ``m`` (the mean of ``z``
  across assets, rescaled to unit variance), as crypto volatility moves together. A shared
  regime also keeps the correlation of returns at the target instead of diluting it.
- The innovations ``z`` are standard normal, correlated across assets through the Cholesky
  factor of the correlation matrix (constant off-diagonal ``correlation``, or a full matrix).
- ``J`` is a compound Poisson jump: market-wide jump times (one Poisson count per bar shared by
  all assets, ``jump_intensity`` jumps per year on average) and normal jump sizes
  (``jump_mean``, ``jump_std`` in log-return) correlated like ``z``. Shared jump times keep the
  correlation of returns close to the target.
- ``mu = drift * dt - jump_intensity * dt * jump_mean``, so ``drift`` is the expected log return
  per year including jumps.
- Open: the previous close times ``exp(g)``, a small gap ``g ~ N(0, (0.1 * sqrt(h))**2)``; the
  first open is ``start_price``. High and low are drawn from the exact distribution of the
  maximum / minimum of a Brownian bridge from the open to the close with the bar's variance
  ``h``, so ``high >= max(open, close)`` and ``low <= min(open, close)`` by construction.
- Volume: ``base_volume * (0.5 + |r - mu| / sigma_bar) * lognormal noise`` (mean-one noise,
  log-sd 0.3), with ``sigma_bar`` the long-run per-bar volatility: volatile bars trade more.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from framework.synthetic_nb import garch_variance_1d_nb

YEAR = pd.Timedelta(days=365)
GAP_FRACTION = 0.1  # sd of the open's gap from the previous close, relative to the bar's vol
VOLUME_NOISE = 0.3  # log-sd of volume's lognormal noise

# ccxt-style timeframes ("1m", "15m", "4h", "1d", "1w"); "M" (month) is not a fixed length.
_TIMEFRAME = re.compile(r"^\s*(\d+)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_TIMEFRAME_UNIT = {"s": "s", "m": "min", "min": "min", "h": "h", "d": "D", "w": "W"}


def generate_ohlcv(
    n_bars: int,
    n_assets: int = 1,
    *,
    freq: str | pd.Timedelta = "1h",
    start: str | pd.Timestamp = "2020-01-01",
    seed: int = 0,
    start_price: float | Sequence[float] = 100.0,
    annual_vol: float = 0.6,
    correlation: float | np.ndarray = 0.5,
    drift: float = 0.0,
    garch_alpha: float = 0.1,
    garch_beta: float = 0.89,
    jump_intensity: float = 10.0,
    jump_mean: float = -0.01,
    jump_std: float = 0.04,
    base_volume: float = 1_000.0,
    names: Sequence[str] | None = None,
) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """Generate synthetic OHLCV bars (model in the module docstring).

    Args:
        n_bars: bars per asset, >= 2; the last bar must open by 2262-04-11, the end of pandas'
            time range (from the default start 2020-01-01 that is about 2.1 million hourly bars,
            127 million minute bars; an earlier ``start`` fits more).
        n_assets: number of assets, >= 1.
        freq: bar length, a ccxt timeframe (``"1m"``, ``"15m"``, ``"1h"``, ``"4h"``, ``"1d"``,
            ``"1w"``) or anything ``pd.Timedelta`` accepts (``"15min"``, ``"1D"``).
        start: timestamp of the first bar (bar open time); naive means UTC.
        seed: seed of NumPy's default generator; the same arguments give the same bars.
        start_price: first open, one value or one per asset (> 0).
        annual_vol: long-run volatility of log returns per 365-day year (fraction, 0.6 = 60 %),
            jumps included.
        correlation: correlation of the assets' innovations, either one value for every pair
            (valid in ``(-1/(n_assets-1), 1)``) or an ``(n_assets, n_assets)`` positive
            definite correlation matrix. Ignored for one asset.
        drift: expected log return per year (fraction).
        garch_alpha, garch_beta: GARCH(1,1) reaction and persistence per bar, >= 0 with
            ``garch_alpha + garch_beta < 1``; ``garch_alpha=0`` gives constant volatility. The
            defaults (with the jump defaults) roughly match the clustering of BTC/USDT hourly
            returns 2020-2023 (autocorrelation of |r| ~0.25 at lag 1, ~0.2 at lag 24); they act
            per bar, so the same values cluster over days at 1d bars.
        jump_intensity: expected number of jumps per year (0 disables jumps).
        jump_mean, jump_std: mean and standard deviation of a jump's log return.
        base_volume: volume scale per bar in asset units (a calm bar trades about half of it).
        names: asset names (default ``SYN0``, ``SYN1``, ...).

    Returns:
        One asset: a DataFrame with a UTC DatetimeIndex named ``timestamp`` and float64
        columns ``open, high, low, close, volume``. Several assets: a dict mapping each name
        to such a DataFrame, all on the same index, in ``names`` order.

    Raises:
        ValueError: an argument is out of range (the message names it and the valid range).
    """
    n_bars = _check_count("n_bars", n_bars, minimum=2)
    n_assets = _check_count("n_assets", n_assets, minimum=1)
    bar = parse_freq(freq)
    index = _bar_index(_utc_timestamp(start), n_bars, bar, freq)
    names = _check_names(names, n_assets)
    p0 = np.asarray(start_price, dtype=np.float64)
    if p0.ndim == 0:
        p0 = np.full(n_assets, float(p0))
    if p0.shape != (n_assets,) or not (np.isfinite(p0).all() and (p0 > 0).all()):
        raise ValueError(
            f"start_price must be one positive number or {n_assets} of them, got {start_price!r}"
        )
    corr = correlation_matrix(correlation, n_assets)
    chol = np.linalg.cholesky(corr)
    _check_positive("annual_vol", annual_vol)
    _check_positive("base_volume", base_volume)
    if not (garch_alpha >= 0 and garch_beta >= 0 and garch_alpha + garch_beta < 1):
        raise ValueError(
            "GARCH parameters need garch_alpha >= 0, garch_beta >= 0 and "
            f"garch_alpha + garch_beta < 1, got {garch_alpha} and {garch_beta}"
        )
    if not math.isfinite(drift):
        raise ValueError(f"drift must be a finite annual log return, got {drift!r}")
    if not (jump_intensity >= 0 and jump_std >= 0 and math.isfinite(jump_mean)):
        raise ValueError(
            "jumps need jump_intensity >= 0 (per year), jump_std >= 0 and a finite jump_mean, "
            f"got {jump_intensity}, {jump_std} and {jump_mean}"
        )

    dt = bar / YEAR
    var_bar = annual_vol**2 * dt  # long-run total variance of a bar's log return
    lam = jump_intensity * dt  # expected jumps per bar
    var_jump = lam * (jump_mean**2 + jump_std**2)
    var_diff = var_bar - var_jump
    if var_diff <= 0:
        raise ValueError(
            f"jumps alone carry {math.sqrt(var_jump / dt):.3f} annual vol, more than "
            f"annual_vol={annual_vol}; lower jump_intensity / jump_std or raise annual_vol"
        )
    mu = drift * dt - lam * jump_mean

    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_bars, n_assets)) @ chol.T
    # The shared volatility regime reacts to the equal-weighted market shock, rescaled to unit
    # variance (the variance of a mean of z is the mean of the correlation matrix).
    market = z.mean(axis=1) / math.sqrt(corr.mean())
    omega = var_diff * (1.0 - garch_alpha - garch_beta)
    h = garch_variance_1d_nb(market, omega, garch_alpha, garch_beta, var_diff)[:, None]
    ret = mu + np.sqrt(h) * z
    if lam > 0:
        counts = rng.poisson(lam, size=n_bars)
        hit = np.flatnonzero(counts)
        k = counts[hit, None].astype(np.float64)
        sizes = rng.standard_normal((len(hit), n_assets)) @ chol.T
        ret[hit] += k * jump_mean + np.sqrt(k) * jump_std * sizes

    log_close = np.log(p0) + np.cumsum(ret, axis=0)
    gap = GAP_FRACTION * np.sqrt(h) * rng.standard_normal((n_bars, n_assets))
    gap[0] = 0.0
    log_open = log_close - ret + gap
    body = ret - gap
    # Max / min of a Brownian bridge from 0 to `body` with variance h: inverse-CDF sampling of
    # P(max > m) = exp(-2 m (m - body) / h).
    spread_hi = np.sqrt(body**2 - 2.0 * h * np.log1p(-rng.random((n_bars, n_assets))))
    spread_lo = np.sqrt(body**2 - 2.0 * h * np.log1p(-rng.random((n_bars, n_assets))))
    open_ = np.exp(log_open)
    open_[0] = p0  # exactly, not exp(log(p0))
    close = np.exp(log_close)
    high = np.maximum(np.exp(log_open + 0.5 * (body + spread_hi)), np.maximum(open_, close))
    low = np.minimum(np.exp(log_open + 0.5 * (body - spread_lo)), np.minimum(open_, close))
    noise = np.exp(VOLUME_NOISE * rng.standard_normal((n_bars, n_assets)) - 0.5 * VOLUME_NOISE**2)
    volume = base_volume * (0.5 + np.abs(ret - mu) / math.sqrt(var_bar)) * noise

    frames = {
        name: pd.DataFrame(
            {
                "open": open_[:, j],
                "high": high[:, j],
                "low": low[:, j],
                "close": close[:, j],
                "volume": volume[:, j],
            },
            index=index,
        )
        for j, name in enumerate(names)
    }
    return frames[names[0]] if n_assets == 1 else frames


def parse_freq(freq: str | pd.Timedelta) -> pd.Timedelta:
    """Bar length of a ccxt timeframe (``"15m"``, ``"1h"``, ``"1d"``) or a pandas Timedelta string.

    ``m`` means minutes (as in ccxt); months are rejected because they have no fixed length.
    """
    if isinstance(freq, str):
        match = _TIMEFRAME.match(freq)
        if match and match.group(2) != "M":
            freq = pd.Timedelta(int(match.group(1)), unit=_TIMEFRAME_UNIT[match.group(2).lower()])
    try:
        bar = pd.Timedelta(freq)
    except (ValueError, TypeError):
        bar = pd.NaT
    if bar is pd.NaT or bar <= pd.Timedelta(0):
        raise ValueError(
            f"freq must be a positive fixed bar length such as '1m', '15m', '1h', '4h', '1d' "
            f"or '1w', got {freq!r}"
        )
    return bar


def correlation_matrix(correlation: float | np.ndarray, n_assets: int) -> np.ndarray:
    """The (n_assets, n_assets) correlation matrix for a constant pairwise value or a matrix.

    Raises ValueError unless the result is a symmetric positive definite matrix with a unit
    diagonal; for a constant it names the valid interval ``(-1/(n_assets-1), 1)``.
    """
    if np.ndim(correlation) == 0:
        rho = float(correlation)
        if n_assets == 1:
            return np.ones((1, 1))
        lower = -1.0 / (n_assets - 1)
        if not lower < rho < 1.0:
            raise ValueError(
                f"correlation must lie in ({lower:g}, 1) for {n_assets} assets "
                f"(a constant correlation matrix is positive definite only there), got {rho}"
            )
        return np.full((n_assets, n_assets), rho) + (1.0 - rho) * np.eye(n_assets)
    corr = np.asarray(correlation, dtype=np.float64)
    if corr.shape != (n_assets, n_assets):
        raise ValueError(
            f"a correlation matrix must have shape ({n_assets}, {n_assets}), got {corr.shape}"
        )
    if not (np.allclose(corr, corr.T) and np.allclose(np.diag(corr), 1.0)):
        raise ValueError("a correlation matrix must be symmetric with ones on the diagonal")
    if np.linalg.eigvalsh(corr).min() <= 0:
        raise ValueError("the correlation matrix is not positive definite")
    return corr


def _check_count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _check_names(names: Sequence[str] | None, n_assets: int) -> list[str]:
    if names is None:
        return [f"SYN{j}" for j in range(n_assets)]
    names = list(names)
    if len(names) != n_assets or len(set(names)) != n_assets:
        raise ValueError(f"names must hold {n_assets} distinct names, got {names!r}")
    return names


def _bar_index(start: pd.Timestamp, n_bars: int, bar: pd.Timedelta,
               freq: str | pd.Timedelta) -> pd.DatetimeIndex:
    """``n_bars`` bar open times from ``start``; a ValueError naming the limit when the last
    would fall after 2262-04-11, the end of pandas' nanosecond time range."""
    room = (pd.Timestamp.max.tz_localize("UTC") - start) // bar + 1  # bars that fit from start
    if n_bars > room:
        latest_ns = pd.Timestamp.max.value - (n_bars - 1) * bar.value  # Python ints: no overflow
        day_ns = pd.Timedelta(days=1).value
        latest_day_ns = latest_ns // day_ns * day_ns
        fix = (f"start no later than {pd.Timestamp(latest_day_ns).date()}"
               if latest_day_ns >= pd.Timestamp.min.value else "fewer bars or a shorter freq")
        raise ValueError(
            f"n_bars={n_bars} bars of freq={freq!r} from {start.date()} end after "
            f"{pd.Timestamp.max.date()}, the last time pandas can represent; at most {room} "
            f"bars fit from this start. Pass {fix}."
        )
    return pd.date_range(start, periods=n_bars, freq=bar, name="timestamp", unit="ns")


def _utc_timestamp(start: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(start)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
