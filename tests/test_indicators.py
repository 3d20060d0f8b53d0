"""Indicator kernels: replay parity, independent references, warm-up, edge cases, validation.

References are independent of the kernels: pandas rolling / ewm, vectorbt's numba functions
where their conventions match ours, naive O(n * window) NumPy loops, and hand-computed cases.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from numba import njit
from numpy.lib.stride_tricks import sliding_window_view

from framework import indicators as ind
from framework import indicators_nb as nb
from framework.synthetic import generate_ohlcv

N_BARS = 3000

# name -> (input fields, default params used across the generic tests)
SPECS: dict[str, tuple[tuple[str, ...], tuple]] = {
    "sma": (("close",), (20,)),
    "ema": (("close",), (20,)),
    "wma": (("close",), (20,)),
    "rsi": (("close",), (14,)),
    "macd": (("close",), (12, 26, 9)),
    "bbands": (("close",), (20, 2.0)),
    "zscore": (("close",), (20,)),
    "true_range": (("high", "low", "close"), ()),
    "atr": (("high", "low", "close"), (14,)),
    "realized_vol": (("close",), (30, 365.0)),
    "stoch": (("high", "low", "close"), (14, 3)),
    "adx": (("high", "low", "close"), (14,)),
    "donchian": (("high", "low"), (20,)),
    "support_resistance": (("high", "low"), (5, 3)),
    "obv": (("close", "volume"), ()),
    "vwap": (("high", "low", "close", "volume"), (20,)),
}

# documented number of leading NaNs of each output on clean data, from the parameters
WARMUP = {
    "sma": lambda w: (w - 1,),
    "ema": lambda w: (w - 1,),
    "wma": lambda w: (w - 1,),
    "rsi": lambda w: (w,),
    "macd": lambda f, s, g: (s - 1, s + g - 2, s + g - 2),
    "bbands": lambda w, k: (w - 1,) * 5,
    "zscore": lambda w: (w - 1,),
    "true_range": lambda: (1,),
    "atr": lambda w: (w,),
    "realized_vol": lambda w, a: (w,),
    "stoch": lambda k, d: (k - 1, k + d - 2),
    "adx": lambda w: (2 * w - 1, w, w),
    "donchian": lambda w: (w - 1,) * 3,
    "obv": lambda: (0,),
    "vwap": lambda w: (w - 1,),
}

RECURSIVE = ("ema", "macd", "rsi", "true_range", "atr", "adx", "obv")
# name -> number of bars a missing bar at i blanks, per output (i .. i + span - 1)
WINDOWED_SPAN = {
    "sma": lambda w: (w,),
    "wma": lambda w: (w,),
    "zscore": lambda w: (w,),
    "bbands": lambda w, k: (w,) * 5,
    "vwap": lambda w: (w,),
    "donchian": lambda w: (w,) * 3,
    "stoch": lambda k, d: (k, k + d - 1),
    "realized_vol": lambda w, a: (w + 1,),
}


# --- data ----------------------------------------------------------------------------------------


def make_ohlcv(seed: int, n: int = N_BARS, start: float = 100.0, tick: float | None = None) -> dict:
    """Random-walk OHLCV with fat-tailed returns; ``tick`` rounds prices (creates ties)."""
    rng = np.random.default_rng(seed)
    close = start * np.exp(np.cumsum(rng.standard_t(4, n) * 0.01))
    open_ = np.concatenate([[start], close[:-1]])
    wick = np.abs(rng.normal(0.0, 0.004, (2, n)))
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    if tick is not None:
        close = np.round(close / tick) * tick
        high = np.maximum(np.ceil(high / tick) * tick, close)
        low = np.minimum(np.floor(low / tick) * tick, close)
    volume = rng.lognormal(3.0, 1.0, n)
    return {"high": high, "low": low, "close": close, "volume": volume}


DATASETS = {
    "walk100": make_ohlcv(0),
    "walk30k": make_ohlcv(1, start=30_000.0),
    "ticks": make_ohlcv(2, tick=0.5),  # many equal highs / lows / closes
}


def with_missing(data: dict, seed: int = 7) -> dict:
    """Copy of ``data`` with ~1 % of single fields NaN, a few whole bars NaN and one inf."""
    rng = np.random.default_rng(seed)
    out = {k: v.copy() for k, v in data.items()}
    n = len(out["close"])
    for values in out.values():
        values[rng.choice(n, n // 100, replace=False)] = np.nan
    for i in rng.choice(n, 5, replace=False):
        for values in out.values():
            values[i] = np.nan
    out["high"][n // 2] = np.inf
    return out


def run_array(name: str, data: dict, params: tuple) -> tuple[np.ndarray, ...]:
    """Outputs of ``<name>_nb`` as a tuple of arrays."""
    fields, _ = SPECS[name]
    res = getattr(nb, f"{name}_nb")(*(data[f] for f in fields), *params)
    return res if isinstance(res, tuple) else (res,)


def run_steps(name: str, data: dict, params: tuple) -> tuple[np.ndarray, ...]:
    """Outputs of ``<name>_init_nb`` + ``<name>_update_nb`` called from Python bar by bar."""
    fields, _ = SPECS[name]
    init, update = getattr(nb, f"{name}_init_nb"), getattr(nb, f"{name}_update_nb")
    state = init(*params)
    columns = [data[f] for f in fields]
    rows = [update(state, *(float(c[i]) for c in columns)) for i in range(len(columns[0]))]
    arr = np.array(rows, dtype=np.float64).reshape(len(rows), -1)
    return tuple(arr[:, j] for j in range(arr.shape[1]))


def leading_nans(a: np.ndarray) -> int:
    finite = np.flatnonzero(~np.isnan(a))
    return int(finite[0]) if finite.size else len(a)


def assert_close(actual, expected, rtol: float = 1e-9, atol: float = 0.0) -> None:
    """Values within tolerance and NaN exactly where the reference has NaN."""
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


def seeded_ewm(x, n: int, alpha: float) -> np.ndarray:
    """Reference EMA / Wilder smoothing with pandas: drop NaNs, seed with the mean of the first
    n values, then pandas' recursive (adjust=False) ewm; NaN where x is NaN."""
    s = pd.Series(np.asarray(x, float))
    valid = s.dropna()
    out = pd.Series(np.nan, index=s.index)
    if len(valid) >= n:
        tail = valid.iloc[n - 1 :].copy()
        tail.iloc[0] = valid.iloc[:n].mean()
        out[tail.index] = tail.ewm(alpha=alpha, adjust=False).mean()
    return out.to_numpy()


def pd_true_range(h, lo, c) -> pd.Series:
    h, lo, c = pd.Series(h), pd.Series(lo), pd.Series(c)
    pc = c.shift()
    return pd.concat([h - lo, (h - pc).abs(), (lo - pc).abs()], axis=1).max(axis=1, skipna=False)


@pytest.fixture(scope="module")
def vbt_nb():
    """vectorbt's own numba functions (generic rolling stats, true range, OBV)."""
    from vectorbt.generic import nb as generic_nb
    from vectorbt.indicators import nb as indicators_nb

    return generic_nb, indicators_nb


# --- replay parity and no look-ahead ---------------------------------------------------------


def test_array_form_equals_steps_called_from_python():
    # A smoke test only: every array form is a loop over its update step (there is no second
    # implementation to disagree), so one multi-output indicator on data with gaps suffices to
    # show that a step called from Python, as the live runner does, sees the same state.
    data = with_missing(DATASETS["walk100"])
    for a, s in zip(run_array("adx", data, (14,)), run_steps("adx", data, (14,)), strict=True):
        np.testing.assert_array_equal(a, s)


@pytest.mark.parametrize("name", list(SPECS))
def test_no_look_ahead(name):
    """Values up to bar t do not change when later bars are cut off or scrambled."""
    data = with_missing(DATASETS["ticks"])
    params = SPECS[name][1]
    full = run_array(name, data, params)
    rng = np.random.default_rng(3)
    for t in (0, 17, 1234):
        cut = {k: v[: t + 1] for k, v in data.items()}
        scrambled = {
            k: np.concatenate([v[: t + 1], rng.permutation(v[t + 1 :])]) for k, v in data.items()
        }
        for f, c, s in zip(
            full, run_array(name, cut, params), run_array(name, scrambled, params), strict=True
        ):
            np.testing.assert_array_equal(c, f[: t + 1])
            np.testing.assert_array_equal(s[: t + 1], f[: t + 1])


def test_kernels_run_inside_njit():
    """States are allocatable and updatable from other numba code (as the simulator does)."""

    @njit
    def drive(c, h, lo):
        ms = nb.macd_init_nb(3, 7, 2)
        ss = nb.stoch_init_nb(5, 3)
        ps = nb.support_resistance_init_nb(2, 2)
        out = np.empty((c.shape[0], 3))
        for i in range(c.shape[0]):
            out[i, 0] = nb.macd_update_nb(ms, c[i])[2]
            out[i, 1] = nb.stoch_update_nb(ss, h[i], lo[i], c[i])[1]
            out[i, 2] = nb.support_resistance_update_nb(ps, h[i], lo[i])[1]
        return out

    d = DATASETS["walk100"]
    out = drive(d["close"][:300], d["high"][:300], d["low"][:300])
    np.testing.assert_array_equal(out[:, 0], nb.macd_nb(d["close"][:300], 3, 7, 2)[2])
    np.testing.assert_array_equal(
        out[:, 1], nb.stoch_nb(d["high"][:300], d["low"][:300], d["close"][:300], 5, 3)[1]
    )
    np.testing.assert_array_equal(
        out[:, 2], nb.support_resistance_nb(d["high"][:300], d["low"][:300], 2, 2)[1]
    )


# --- values against independent references -------------------------------------------------------


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_moving_averages(dataset, vbt_nb):
    c = DATASETS[dataset]["close"]
    generic_nb, _ = vbt_nb
    for w in (1, 2, 20, 200):
        expected = pd.Series(c).rolling(w).mean().to_numpy()
        assert_close(nb.sma_nb(c, w), expected)
        assert_close(nb.sma_nb(c, w), generic_nb.rolling_mean_nb(c[:, None], w)[:, 0])

        weights = np.arange(1, w + 1, dtype=float)
        naive = np.full(len(c), np.nan)
        naive[w - 1 :] = sliding_window_view(c, w) @ weights / weights.sum()
        assert_close(nb.wma_nb(c, w), naive)

        assert_close(nb.ema_nb(c, w), seeded_ewm(c, w, 2.0 / (w + 1)))


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_rsi(dataset):
    c = DATASETS[dataset]["close"]
    for w in (2, 14, 50):
        d = pd.Series(c).diff()
        gain = seeded_ewm(d.clip(lower=0), w, 1.0 / w)
        loss = seeded_ewm((-d).clip(lower=0), w, 1.0 / w)
        with np.errstate(divide="ignore"):  # loss 0: rs = inf, RSI 100
            expected = 100 - 100 / (1 + gain / loss)
        assert_close(nb.rsi_nb(c, w), expected, atol=1e-9)


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_macd(dataset):
    c = DATASETS[dataset]["close"]
    scale = np.nanmean(c)
    for fast, slow, sig in ((12, 26, 9), (3, 4, 1), (5, 50, 20)):
        line = seeded_ewm(c, fast, 2 / (fast + 1)) - seeded_ewm(c, slow, 2 / (slow + 1))
        signal = seeded_ewm(line, sig, 2 / (sig + 1))
        got = nb.macd_nb(c, fast, slow, sig)
        for g, e in zip(got, (line, signal, line - signal), strict=True):
            assert_close(g, e, atol=1e-12 * scale)


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_bbands_and_zscore(dataset):
    c = DATASETS[dataset]["close"]
    for w, k in ((20, 2.0), (2, 1.0), (5, 1.5), (100, 3.0)):
        windows = sliding_window_view(c, w)
        mean, std = np.full(len(c), np.nan), np.full(len(c), np.nan)
        mean[w - 1 :], std[w - 1 :] = windows.mean(axis=1), windows.std(axis=1)  # two-pass, ddof=0
        upper, lower = mean + k * std, mean - k * std
        with np.errstate(invalid="ignore"):  # flat windows (tick data): 0 / 0
            expected = (mean, upper, lower, (c - lower) / (upper - lower), (upper - lower) / mean)
            zscore = (c - mean) / std
        scale = np.nanmedian(std)
        got = nb.bbands_nb(c, w, k)
        assert_close((got[1] - got[2]) / (2 * k), std, atol=1e-9 * scale)  # the bands' own std
        for g, e in zip(got[:3], expected[:3], strict=True):
            assert_close(g, e, atol=1e-9 * scale)
        # percent_b and zscore divide by the std: hold them to 1e-9 of the typical std
        rel = 1e-9 * scale / np.where(std > 0, std, np.inf)
        for g, e in ((got[3], expected[3]), (nb.zscore_nb(c, w), zscore)):
            np.testing.assert_array_equal(np.isnan(g), np.isnan(e))
            ok = np.isnan(e) | (np.abs(g - e) <= 1e-9 + rel * np.maximum(1.0, np.abs(e)))
            assert ok.all(), np.flatnonzero(~ok)[:5]
        assert_close(got[4], expected[4], atol=1e-9 * scale / np.nanmedian(mean))


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_true_range_and_atr(dataset, vbt_nb):
    d = DATASETS[dataset]
    h, lo, c = d["high"], d["low"], d["close"]
    _, vbt_ind = vbt_nb
    tr = pd_true_range(h, lo, c).to_numpy()
    assert_close(nb.true_range_nb(h, lo, c), tr)
    # vectorbt's TR uses high - low on bar 0, where there is no previous close
    np.testing.assert_allclose(
        nb.true_range_nb(h, lo, c)[1:],
        vbt_ind.true_range_nb(h[:, None], lo[:, None], c[:, None])[1:, 0],
        rtol=1e-12,
    )
    for w in (1, 14, 100):
        assert_close(nb.atr_nb(h, lo, c, w), seeded_ewm(tr, w, 1.0 / w))


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_realized_vol(dataset):
    c = DATASETS[dataset]["close"]
    r = np.log(c[1:] / c[:-1])
    for w, ann in ((2, 365.0), (3, 365.0), (30, 365.0), (24, 8760.0)):
        naive = np.full(len(c), np.nan)  # two-pass std of every window
        naive[w:] = sliding_window_view(r, w).std(axis=1, ddof=1) * math.sqrt(ann)
        # (pandas' rolling std is no reference here: it returns ~1e-8 for flat tick windows.)
        assert_close(nb.realized_vol_nb(c, w, ann), naive, rtol=1e-12, atol=1e-12 * np.nanmedian(naive))


# --- precision of the rolling standard deviation -------------------------------------------------


@njit(cache=True)
def window_std(x, w, ddof):
    """The rolling std that bbands, zscore and realized_vol are built from, straight from the
    kernel's variance window (the bands round it again at the price level)."""
    s = np.empty(nb._win_size(w))
    nb._win_init(s, 0, w)
    out = np.full(x.shape[0], np.nan)
    for i in range(x.shape[0]):
        nb._vwin_push(s, 0, x[i])
        if nb._win_ready(s, 0):
            out[i] = math.sqrt(nb._vwin_var(s, 0, ddof))
    return out


def two_pass_std(x, w: int, ddof: int = 0) -> np.ndarray:
    """Reference std of every window (NaN before the first full one), exact to a few eps of its
    own value: the corrected two-pass algorithm, sum(d^2) - sum(d)^2 / n with d = x - mean, whose
    second term removes the error of the rounded mean (plain np.std keeps it: 1e-9 of the std on
    two closes 2.5e-7 apart at 45,908)."""
    windows = sliding_window_view(np.asarray(x, float), w)
    d = windows - windows.mean(axis=1, keepdims=True)
    m2 = (d * d).sum(axis=1) - d.sum(axis=1) ** 2 / w
    out = np.full(len(x), np.nan)
    out[w - 1 :] = np.sqrt(np.maximum(m2, 0.0) / (w - ddof))
    return out


@pytest.fixture(scope="module")
def std_series() -> dict[str, np.ndarray]:
    from framework.data import load_ohlcv

    btc = load_ohlcv("BTC_USDT-1h")["close"].to_numpy()
    rng = np.random.default_rng(1)
    return {
        "btc_1h": btc,  # 35,480 hourly closes, 2020-2024
        # the case: a calm stretch at a high price level after a long volatile one
        "level_3e6": 3e6 + np.r_[rng.normal(0, 300, 20000), rng.normal(0, 3, 10)],
        "calm_after_volatile": np.r_[btc[:20000], btc[19999] + np.cumsum(rng.normal(0, 1e-3, 3000))],
        "long_1e6": 1e6 * np.exp(np.cumsum(rng.normal(0, 0.01, 300_000))),
    }


@pytest.mark.parametrize("series", ["btc_1h", "level_3e6", "calm_after_volatile", "long_1e6"])
def test_rolling_std_error_is_bounded(series, std_series):
    """The streaming std stays within 1e-12 of the typical std (and of its own value) whatever
    the history length and price level; the Welford-style M2 it replaced reached 2e-9 of its
    own value on BTC 1h and 4e-8 on the calm tail of the 3e6 series."""
    x = std_series[series]
    for w in (2, 10, 20, 200):
        ref = two_pass_std(x, w)
        got = window_std(x, w, 0)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        err = np.abs(got - ref)
        typical = np.nanmedian(ref)
        assert np.nanmax(err) <= 1e-12 * typical, (w, np.nanmax(err) / typical)
        own = err[ref > 0] / ref[ref > 0]
        assert own.max() <= 1e-12, (w, own.max())
        # the public bands: (upper - lower) / 2k is that std, give or take the rounding of the
        # bands themselves at the price level
        k = 1.5
        _, upper, lower, _, _ = nb.bbands_nb(x, w, k)
        tol = 1e-12 * typical + np.spacing(np.abs(upper)) / k
        ok = np.isnan(ref) | (np.abs((upper - lower) / (2 * k) - ref) <= tol)
        assert ok.all(), (w, np.flatnonzero(~ok)[:5])


def test_realized_vol_and_zscore_precision(std_series):
    """realized_vol (sample std of log returns) and zscore carry the same bound on BTC 1h."""
    c = std_series["btc_1h"]
    r = np.log(c[1:] / c[:-1])
    for w in (2, 30, 720):
        ref = np.full(len(c), np.nan)
        ref[1:] = two_pass_std(r, w, ddof=1)
        got = nb.realized_vol_nb(c, w, 1.0)
        assert np.nanmax(np.abs(got - ref)) <= 1e-12 * np.nanmedian(ref)
        assert np.nanmax(np.abs(got - ref) / ref) <= 1e-12
    for w in (10, 200):
        windows = sliding_window_view(c, w)
        mean = np.full(len(c), np.nan)
        mean[w - 1 :] = windows.mean(axis=1)
        sd = two_pass_std(c, w)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (c - mean) / sd
        got = nb.zscore_nb(c, w)
        # the numerator's own rounding (c - mean at the price level) bounds what any std can give
        ok = np.isnan(z) | (np.abs(got - z) <= 1e-12 * np.maximum(1.0, np.abs(z)) + 4 * np.spacing(c) / sd)
        assert ok.all(), np.flatnonzero(~ok)[:5]


def test_realized_vol_annualises_by_the_bar_spacing():
    close = generate_ohlcv(500, freq="1h", seed=3)["close"]
    hourly = ind.realized_vol(close, 24)
    np.testing.assert_array_equal(hourly.to_numpy(), nb.realized_vol_nb(close.to_numpy(), 24, 8760.0))
    daily = close.iloc[::24]
    np.testing.assert_array_equal(
        ind.realized_vol(daily, 5).to_numpy(), nb.realized_vol_nb(daily.to_numpy(), 5, 365.0)
    )
    np.testing.assert_array_equal(  # an explicit factor wins (252 trading days)
        ind.realized_vol(daily, 5, 252.0).to_numpy(), nb.realized_vol_nb(daily.to_numpy(), 5, 252.0)
    )
    with pytest.raises(ValueError, match="ann_factor .bars per year. is needed when close has no DatetimeIndex"):
        ind.realized_vol(close.to_numpy(), 24)


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_stoch_and_donchian(dataset, vbt_nb):
    d = DATASETS[dataset]
    h, lo, c = d["high"], d["low"], d["close"]
    generic_nb, _ = vbt_nb
    for k, dw in ((14, 3), (1, 1), (50, 10)):
        hh = pd.Series(h).rolling(k).max()
        ll = pd.Series(lo).rolling(k).min()
        pct_k = 100 * (c - ll) / (hh - ll)
        got_k, got_d = nb.stoch_nb(h, lo, c, k, dw)
        assert_close(got_k, pct_k, atol=1e-9)
        assert_close(got_d, pct_k.rolling(dw).mean(), atol=1e-9)

        upper, lower, mid = nb.donchian_nb(h, lo, k)
        np.testing.assert_array_equal(upper, hh)  # max/min are exact: no tolerance
        np.testing.assert_array_equal(lower, ll)
        np.testing.assert_array_equal(upper, generic_nb.rolling_max_nb(h[:, None], k)[:, 0])
        np.testing.assert_array_equal(lower, generic_nb.rolling_min_nb(lo[:, None], k)[:, 0])
        np.testing.assert_array_equal(mid, (hh + ll) / 2)


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_adx(dataset):
    d = DATASETS[dataset]
    h, lo, c = (pd.Series(d[f]) for f in ("high", "low", "close"))
    for w in (1, 14, 30):
        up, down = h.diff(), -lo.diff()
        plus_dm = np.where((up > down) & (up > 0), up, 0.0)
        minus_dm = np.where((down > up) & (down > 0), down, 0.0)
        plus_dm[0] = minus_dm[0] = np.nan
        tr = pd_true_range(h, lo, c)
        s_tr = seeded_ewm(tr, w, 1.0 / w)
        pdi = 100 * seeded_ewm(plus_dm, w, 1.0 / w) / s_tr
        mdi = 100 * seeded_ewm(minus_dm, w, 1.0 / w) / s_tr
        with np.errstate(invalid="ignore"):  # documented: DX = 0 when both DIs are 0
            dx = np.where(pdi + mdi > 0, 100 * np.abs(pdi - mdi) / (pdi + mdi), 0.0)
        dx[np.isnan(pdi)] = np.nan
        adx = seeded_ewm(dx, w, 1.0 / w)
        for g, e in zip(
            nb.adx_nb(h.to_numpy(), lo.to_numpy(), c.to_numpy(), w), (adx, pdi, mdi), strict=True
        ):
            assert_close(g, e, atol=1e-9)


def naive_support_resistance(high, low, left, right):
    """O(n * (left + right)) reference: at each bar t, the last pivot confirmed by t."""
    n = len(high)
    sup, res = np.full(n, np.nan), np.full(n, np.nan)
    last_s = last_r = np.nan
    for t in range(n):
        i = t - right
        if i - left >= 0:
            # np.max of a window holding NaN is NaN and every comparison with it is False
            if high[i] > np.max(high[i - left : i]) and high[i] >= np.max(high[i + 1 : t + 1]):
                last_r = high[i]
            if low[i] < np.min(low[i - left : i]) and low[i] <= np.min(low[i + 1 : t + 1]):
                last_s = low[i]
        if not (np.isfinite(high[t]) and np.isfinite(low[t])):
            sup[t] = res[t] = np.nan
        else:
            sup[t], res[t] = last_s, last_r
    return sup, res


@pytest.mark.parametrize("dataset", ["walk100", "ticks", "missing"])
def test_support_resistance(dataset):
    d = with_missing(DATASETS["ticks"]) if dataset == "missing" else DATASETS[dataset]
    h, lo = d["high"], d["low"]
    if dataset == "missing":  # a bar with one field missing is missing as a whole
        bad = ~(np.isfinite(h) & np.isfinite(lo))
        h, lo = np.where(bad, np.nan, h), np.where(bad, np.nan, lo)
    for left, right in ((5, 3), (1, 1), (10, 20)):
        sup, res = nb.support_resistance_nb(h, lo, left, right)
        e_sup, e_res = naive_support_resistance(h, lo, left, right)
        np.testing.assert_array_equal(sup, e_sup)
        np.testing.assert_array_equal(res, e_res)
        assert leading_nans(res) >= left + right and leading_nans(sup) >= left + right


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_obv_and_vwap(dataset, vbt_nb):
    d = DATASETS[dataset]
    h, lo, c, v = d["high"], d["low"], d["close"], d["volume"]
    _, vbt_ind = vbt_nb
    expected = vbt_ind.obv_custom_nb(c[:, None], v[:, None])[:, 0]
    assert_close(nb.obv_nb(c, v), expected, atol=1e-9 * np.sum(v))
    for w in (1, 20, 300):
        tp = pd.Series((h + lo + c) / 3)
        vs = pd.Series(v)
        assert_close(nb.vwap_nb(h, lo, c, v, w), (tp * vs).rolling(w).sum() / vs.rolling(w).sum())


def test_hand_computed_cases():
    nan = np.nan
    x = np.array([1.0, 2.0, 3.0, 10.0, 0.0])
    assert_close(nb.sma_nb(x, 3), [nan, nan, 2.0, 5.0, 13.0 / 3])
    assert_close(nb.wma_nb(x, 3), [nan, nan, 14.0 / 6, 38.0 / 6, 23.0 / 6])
    assert_close(nb.ema_nb(x, 3), [nan, nan, 2.0, 6.0, 3.0])  # alpha 0.5, seeded with the mean
    assert_close(nb.rsi_nb(np.array([1.0, 2.0, 1.0, 2.0, 3.0]), 2), [nan, nan, 50.0, 75.0, 87.5])
    h, lo, c = np.array([10.0, 15.0, 11.0]), np.array([8.0, 14.0, 7.0]), np.array([9.0, 14.5, 8.0])
    assert_close(nb.true_range_nb(h, lo, c), [nan, 6.0, 7.5])
    assert_close(nb.atr_nb(h, lo, c, 2), [nan, nan, 6.75])
    assert_close(
        nb.obv_nb(np.array([1.0, 2.0, 2.0, 1.0]), np.array([10.0, 20.0, 30.0, 40.0])),
        [10.0, 30.0, 30.0, -10.0],
    )
    upper, lower, _ = nb.donchian_nb(
        np.array([1.0, 3.0, 2.0, 5.0, 4.0]), np.array([0.0, 1.0, 1.0, 2.0, 3.0]), 2
    )
    assert_close(upper, [nan, 3, 3, 5, 5])
    assert_close(lower, [nan, 0, 1, 1, 2])
    k, d = nb.stoch_nb(
        np.array([2.0, 4.0, 3.0]), np.array([1.0, 2.0, 1.0]), np.array([1.5, 3.0, 2.0]), 2, 2
    )
    assert_close(k, [nan, 100 * 2 / 3, 100 / 3])
    assert_close(d, [nan, nan, 50.0])
    vw = nb.vwap_nb(
        np.array([3.0, 6.0]), np.array([0.0, 3.0]), np.array([3.0, 3.0]), np.array([1.0, 3.0]), 2
    )
    assert_close(vw, [nan, (2.0 * 1 + 4.0 * 3) / 4])

    high = np.array([1.0, 2, 5, 3, 2, 4, 6, 5, 4, 3])
    sup, res = nb.support_resistance_nb(high, high - 1, 2, 2)
    assert_close(res, [nan] * 4 + [5.0] * 4 + [6.0] * 2)  # pivot at 2 known at 4, at 6 known at 8
    assert_close(sup, [nan] * 6 + [1.0] * 4)  # the pivot low at bar 4 is known at bar 6
    # a flat top is one pivot (its first bar), confirmed once the bar after it is seen
    _, res = nb.support_resistance_nb(np.array([1.0, 2, 3, 3, 2, 1]), np.zeros(6), 1, 1)
    assert_close(res, [nan, nan, nan, 3.0, 3.0, 3.0])


# --- warm-up -----------------------------------------------------------------------------------


SMALL_PARAMS = {
    "sma": (1,),
    "ema": (1,),
    "wma": (1,),
    "rsi": (1,),
    "macd": (1, 2, 1),
    "bbands": (2, 1.0),
    "zscore": (2,),
    "atr": (1,),
    "realized_vol": (2, 1.0),
    "stoch": (1, 1),
    "adx": (1,),
    "donchian": (1,),
    "vwap": (1,),
    "true_range": (),
    "obv": (),
}


@pytest.mark.parametrize("size", ["default", "small", "large"])
@pytest.mark.parametrize("name", list(WARMUP))
def test_warmup_length(name, size):
    params = {"default": SPECS[name][1], "small": SMALL_PARAMS[name]}.get(size)
    if size == "large":
        params = tuple(p * 7 if isinstance(p, int) else p for p in SPECS[name][1])
    data = DATASETS["walk100"]
    got = tuple(leading_nans(a) for a in run_array(name, data, params))
    assert got == WARMUP[name](*params)
    for a, lead in zip(run_array(name, data, params), got, strict=True):
        assert np.isfinite(a[lead:]).all()  # and no NaN after the warm-up on clean data


# --- missing data ------------------------------------------------------------------------------


def delete_bar(data: dict, i: int) -> dict:
    return {k: np.delete(v, i) for k, v in data.items()}


@pytest.mark.parametrize(
    "name, field",
    [
        (n, f)
        for n in RECURSIVE
        for f in (*SPECS[n][0], "all")
        if len(SPECS[n][0]) > 1 or f != "all"
    ],
)
def test_recursive_skip_missing_bar(name, field):
    """A missing bar (any one field, or all) yields NaN and is otherwise as if it were absent."""
    fields, params = SPECS[name]
    data = DATASETS["walk100"]
    for i in (0, 3, 500):
        holed = {k: v.copy() for k, v in data.items()}
        for f in fields if field == "all" else (field,):
            holed[f][i] = np.nan if i != 3 else np.inf  # +-inf counts as missing too
        for got, short in zip(
            run_array(name, holed, params),
            run_array(name, delete_bar(data, i), params),
            strict=True,
        ):
            np.testing.assert_array_equal(got, np.insert(short, i, np.nan))


@pytest.mark.parametrize("name", list(WINDOWED_SPAN))
def test_windowed_missing_bar(name):
    """A missing bar blanks exactly the bars whose window holds it; the values recover after."""
    fields, params = SPECS[name]
    data = DATASETS["walk100"]
    clean = run_array(name, data, params)
    i = 500
    for f in fields:
        holed = {k: v.copy() for k, v in data.items()}
        holed[f][i] = np.nan
        for got, ref, span in zip(
            run_array(name, holed, params), clean, WINDOWED_SPAN[name](*params), strict=True
        ):
            assert np.isnan(got[i : i + span]).all()
            np.testing.assert_array_equal(got[:i], ref[:i])
            np.testing.assert_allclose(got[i + span :], ref[i + span :], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", list(SPECS))
def test_leading_missing_delays_warmup(name):
    params = SPECS[name][1]
    data = DATASETS["walk100"]
    padded = {k: np.concatenate([np.full(10, np.nan), v]) for k, v in data.items()}
    for got, ref in zip(
        run_array(name, padded, params), run_array(name, data, params), strict=True
    ):
        assert np.isnan(got[:10]).all()
        np.testing.assert_allclose(got[10:], ref, rtol=1e-9, atol=1e-9)


def test_realized_vol_non_positive_close_is_missing():
    c = DATASETS["walk100"]["close"].copy()
    ref = nb.realized_vol_nb(np.where(np.arange(len(c)) == 300, np.nan, c), 30, 365.0)
    for bad in (0.0, -5.0):
        c[300] = bad
        np.testing.assert_array_equal(nb.realized_vol_nb(c, 30, 365.0), ref)


# --- flat and monotone input ---------------------------------------------------------------------


def test_constant_input():
    n, v = 200, 0.1  # 0.1 is not exact in binary: a plain running mean would wobble
    c = np.full(n, v)
    vol = np.full(n, 5.0)
    assert (nb.sma_nb(c, 20)[19:] == v).all()
    assert (nb.ema_nb(c, 20)[19:] == v).all()
    assert (nb.wma_nb(c, 20)[19:] == v).all()
    assert (nb.rsi_nb(c, 14)[14:] == 50.0).all()  # no change at all: neutral
    mid, upper, lower, pb, bw = nb.bbands_nb(c, 20, 2.0)
    assert (mid[19:] == v).all() and (upper[19:] == v).all() and (lower[19:] == v).all()
    assert (bw[19:] == 0.0).all() and np.isnan(pb).all()
    assert np.isnan(nb.zscore_nb(c, 20)).all()  # std 0: undefined
    assert (nb.realized_vol_nb(c, 30, 365.0)[30:] == 0.0).all()
    assert (nb.atr_nb(c, c, c, 14)[14:] == 0.0).all()
    adx, pdi, mdi = nb.adx_nb(c, c, c, 14)
    assert (adx[27:] == 0.0).all() and (pdi[14:] == 0.0).all() and (mdi[14:] == 0.0).all()
    k, d = nb.stoch_nb(c, c, c, 14, 3)
    assert np.isnan(k).all() and np.isnan(d).all()  # no range: undefined
    assert (nb.obv_nb(c, vol) == 5.0).all()
    np.testing.assert_allclose(nb.vwap_nb(c, c, c, vol, 20)[19:], v, rtol=1e-15)
    upper, lower, _ = nb.donchian_nb(c, c, 20)
    assert (upper[19:] == v).all() and (lower[19:] == v).all()
    # after a varying stretch the flat part is still exactly flat
    x = np.concatenate([DATASETS["walk100"]["close"][:300], np.full(100, 123.4)])
    assert (nb.sma_nb(x, 20)[320:] == 123.4).all()
    assert (nb.bbands_nb(x, 20, 2.0)[4][320:] == 0.0).all()


def test_monotone_input():
    up = np.linspace(100.0, 200.0, 300)
    assert (nb.rsi_nb(up, 14)[14:] == 100.0).all()
    assert (nb.rsi_nb(up[::-1].copy(), 14)[14:] == 0.0).all()
    k, d = nb.stoch_nb(up, up - 1.0, up, 14, 3)  # close at the high of a rising market
    assert (k[13:] == 100.0).all() and (d[15:] == 100.0).all()
    adx, _, mdi = nb.adx_nb(up + 1.0, up - 1.0, up, 14)
    np.testing.assert_allclose(adx[27:], 100.0)
    assert (mdi[14:] == 0.0).all()
    assert np.isnan(nb.support_resistance_nb(up + 1.0, up - 1.0, 3, 3)[1]).all()  # no pivot high
    obv = nb.obv_nb(up, np.ones(300))
    np.testing.assert_array_equal(obv, np.arange(1.0, 301.0))


# --- pandas wrappers -----------------------------------------------------------------------------


def frame(data: dict, field: str, cols=("BTC", "ETH")) -> pd.DataFrame:
    idx = pd.date_range("2020-01-01", periods=len(data[field]), freq="h", tz="UTC")
    other = DATASETS["walk30k"][field]
    return pd.DataFrame({cols[0]: data[field], cols[1]: other}, index=idx)


@pytest.mark.parametrize("name", list(SPECS))
def test_wrappers_follow_the_input(name):
    fields, params = SPECS[name]
    data = DATASETS["walk100"]
    fn = getattr(ind, name)
    frames = [frame(data, f) for f in fields]
    out = fn(*frames, *params)
    outputs = out if isinstance(out, tuple) else (out,)
    for col, source in (("BTC", data), ("ETH", DATASETS["walk30k"])):
        expected = run_array(name, source, params)
        for o, e in zip(outputs, expected, strict=True):
            assert isinstance(o, pd.DataFrame) and o.index.equals(frames[0].index)
            assert list(o.columns) == ["BTC", "ETH"]
            np.testing.assert_array_equal(o[col].to_numpy(), e)
    series = fn(*(f["BTC"] for f in frames), *params)
    for o in series if isinstance(series, tuple) else (series,):
        assert isinstance(o, pd.Series) and o.index.equals(frames[0].index)
    arrays = fn(*(data[f] for f in fields), *params)
    for o, e in zip(
        arrays if isinstance(arrays, tuple) else (arrays,),
        run_array(name, data, params),
        strict=True,
    ):
        assert isinstance(o.index, pd.RangeIndex)
        np.testing.assert_array_equal(o.to_numpy(), e)


def test_wrapper_named_outputs_and_inputs():
    c = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0], name="close")
    m = ind.macd(c, 2, 3, 2)
    assert isinstance(m, ind.MACDResult) and m.hist.name == "hist"
    assert ind.sma([1, 2, 3], 2).tolist()[1:] == [1.5, 2.5]
    assert ind.sma(pd.Series([1.0, None, 3.0], dtype="Float64"), 1).isna().tolist() == [
        False,
        True,
        False,
    ]
    assert len(ind.ema(np.empty(0), 3)) == 0
    b = ind.bbands(frame(DATASETS["walk100"], "close"))
    assert b.bandwidth.shape == (N_BARS, 2)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda c: ind.sma(c, 0), "sma: window must be an integer >= 1, got 0"),
        (lambda c: ind.sma(c, 2.5), "sma: window must be an integer >= 1, got 2.5"),
        (lambda c: ind.ema(c, 20.0), "ema: window must be an integer >= 1, got 20.0"),
        (lambda c: ind.wma(c, True), "wma: window must be an integer >= 1, got True"),
        (lambda c: ind.rsi(c, -3), "rsi: window must be an integer >= 1, got -3"),
        (lambda c: ind.atr(c, c, c, "14"), "atr: window must be an integer >= 1, got '14'"),
        (
            lambda c: ind.macd(c, 26, 12),
            "macd: fast must be smaller than slow, got fast=26, slow=12",
        ),
        (lambda c: ind.macd(c, 12, 12), "macd: fast must be smaller than slow"),
        (lambda c: ind.macd(c, 12, 26, 0), "macd: signal must be an integer >= 1, got 0"),
        (lambda c: ind.bbands(c, 20, 0.0), "bbands: k must be a finite number > 0, got 0.0"),
        (lambda c: ind.bbands(c, 20, np.nan), "bbands: k must be a finite number > 0"),
        (lambda c: ind.bbands(c, 1), "bbands: window must be an integer >= 2, got 1"),
        (lambda c: ind.zscore(c, 1), "zscore: window must be an integer >= 2, got 1"),
        (lambda c: ind.realized_vol(c, 1), "realized_vol: window must be an integer >= 2, got 1"),
        (
            lambda c: ind.realized_vol(c, 30, 0),
            "realized_vol: ann_factor must be a finite number > 0",
        ),
        (lambda c: ind.stoch(c, c, c, 14, 0), "stoch: d_window must be an integer >= 1, got 0"),
        (lambda c: ind.donchian(c, c, None), "donchian: window must be an integer >= 1, got None"),
        (
            lambda c: ind.support_resistance(c, c, 0, 3),
            "support_resistance: left must be an integer",
        ),
        (lambda c: ind.atr(c, c.iloc[:-1], c), "atr: high, low, close must have the same shape"),
        (
            lambda c: ind.atr(c, c.reset_index(drop=True), c),
            "atr: high, low, close must share one index",
        ),
        (lambda c: ind.sma(np.zeros((3, 2, 2)), 2), "sma: x must be 1-D or 2-D"),
        (lambda c: ind.sma(["a", "b"], 2), "sma: x must be numeric, got list"),
        (lambda c: ind.sma(pd.Series(["a", "b"]), 2), "sma: x must be numeric, got Series"),
    ],
)
def test_wrapper_validation(call, message):
    c = pd.Series(
        DATASETS["walk100"]["close"][:50], index=pd.date_range("2021-01-01", periods=50, freq="D")
    )
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        call(c)


def test_kernel_init_rejects_bad_windows():
    """The kernels guard themselves too: a bad window must never size a state array."""
    for call in (
        lambda: nb.sma_init_nb(0),
        lambda: nb.atr_init_nb(2.5),
        lambda: nb.zscore_init_nb(1),
        lambda: nb.macd_init_nb(26, 12, 9),
        lambda: nb.realized_vol_init_nb(30, 0.0),
        lambda: nb.support_resistance_init_nb(3, 0),
    ):
        with pytest.raises(ValueError):
            call()
    assert nb.atr_init_nb(14.0).shape == nb.atr_init_nb(14).shape  # whole floats are fine


@njit
def _win_push_by_steps(s, o, x):
    """The mean-only window's push as the generic ring and window steps compose it (the
    variance window's path): the reference for ``_win_push``, which writes them out over locals."""
    r = o + nb._W_HDR
    full = nb._ring_full(s, r)
    old = nb._ring_push(s, r, x)
    if full and nb._win_untrack(s, o, old):
        nb._nsum_add(s, o + nb._W_SUM, -old)
    if nb._win_track(s, o, x):
        nb._nsum_add(s, o + nb._W_SUM, x)


@njit
def _win_push(s, o, x):
    """``_win_push`` is compiled for calls from kernels only (``njit(internal=True)``)."""
    nb._win_push(s, o, x)


@pytest.mark.parametrize("window", [1, 2, 3, 7, 50])
def test_mean_window_push_equals_generic_steps(window):
    """Every slot of the state (ring, counts, compensated sum, run) equals, bit for bit after
    every value, the state the generic steps build: missing values entering and leaving, a
    window emptied by them (sums restart from zero), flat runs, signs and scales mixed."""
    rng = np.random.default_rng(window)
    x = np.cumsum(rng.normal(size=4000)) * rng.choice([1.0, -1.0, 1e6, 1e-6], size=4000)
    x[rng.integers(0, x.size, 200)] = np.nan
    x[1000:1000 + 2 * window + 3] = np.nan  # the window empties
    x[2000:2000 + 3 * window] = 7.25  # a flat run
    x[rng.integers(0, x.size, 20)] = np.inf
    got, ref = nb.sma_init_nb(window), nb.sma_init_nb(window)
    for v in x:
        _win_push(got, 0, v)
        _win_push_by_steps(ref, 0, v)
        np.testing.assert_array_equal(got, ref)
