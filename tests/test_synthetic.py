"""Tests for framework.synthetic: shape, determinism, OHLC consistency and stylised facts.

Statistical checks use fixed seeds and sample sizes large enough that the tolerances are several
standard errors wide; they test the properties the generator promises, with estimators written
out here (not taken from the generator).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from framework.synthetic import generate_ohlcv, parse_freq

HOURS_PER_YEAR = 365 * 24


def log_returns(frame: pd.DataFrame) -> np.ndarray:
    return np.diff(np.log(frame["close"].to_numpy()))


def autocorr(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float(np.dot(x[:-lag], x[lag:]) / np.dot(x, x))


@pytest.fixture(scope="module")
def basket() -> dict[str, pd.DataFrame]:
    """Three correlated hourly assets, ~5.7 years."""
    return generate_ohlcv(50_000, 3, correlation=0.6, seed=7)


def test_single_asset_frame_layout():
    df = generate_ohlcv(100, freq="1h", start="2021-03-01")
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert (df.dtypes == np.float64).all()
    assert isinstance(df.index, pd.DatetimeIndex) and df.index.name == "timestamp"
    assert str(df.index.tz) == "UTC"
    assert df.index[0] == pd.Timestamp("2021-03-01", tz="UTC")
    assert (np.diff(df.index.asi8) == np.diff(df.index.asi8)[0]).all()
    assert df.index[1] - df.index[0] == pd.Timedelta(hours=1)
    assert df["open"].iloc[0] == 100.0


def test_several_assets_are_a_dict_on_one_index(basket):
    assert list(basket) == ["SYN0", "SYN1", "SYN2"]
    first = basket["SYN0"].index
    assert all(frame.index.equals(first) for frame in basket.values())
    named = generate_ohlcv(10, 2, names=["BTC", "ETH"], start_price=[30_000.0, 2_000.0])
    assert list(named) == ["BTC", "ETH"]
    assert named["BTC"]["open"].iloc[0] == 30_000.0 and named["ETH"]["open"].iloc[0] == 2_000.0


@pytest.mark.parametrize(
    ("freq", "expected"),
    [
        ("1m", pd.Timedelta(minutes=1)),
        ("15m", pd.Timedelta(minutes=15)),
        ("4h", pd.Timedelta(hours=4)),
        ("1d", pd.Timedelta(days=1)),
        ("1w", pd.Timedelta(weeks=1)),
        ("15min", pd.Timedelta(minutes=15)),
        (pd.Timedelta(hours=2), pd.Timedelta(hours=2)),
    ],
)
def test_freq_accepts_ccxt_timeframes_and_timedeltas(freq, expected):
    assert parse_freq(freq) == expected
    index = generate_ohlcv(3, freq=freq).index
    assert index[1] - index[0] == expected


def test_same_seed_same_bars_other_seed_other_bars():
    a = generate_ohlcv(2_000, 2, seed=42)
    b = generate_ohlcv(2_000, 2, seed=42)
    c = generate_ohlcv(2_000, 2, seed=43)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True)
        assert not np.allclose(a[name]["close"], c[name]["close"])


def test_ohlc_consistent_and_positive(basket):
    for frame in basket.values():
        o, h, l, c, v = (frame[k].to_numpy() for k in ["open", "high", "low", "close", "volume"])
        assert np.isfinite(frame.to_numpy()).all()
        assert (h >= np.maximum(o, c)).all()
        assert (l <= np.minimum(o, c)).all()
        assert (l > 0).all() and (v > 0).all()
        # the range is a real range, not collapsed onto open/close
        assert np.median(np.log(h / l)) > 0


def test_open_is_near_previous_close(basket):
    frame = basket["SYN1"]
    gap = np.log(frame["open"].to_numpy()[1:] / frame["close"].to_numpy()[:-1])
    move = log_returns(frame)
    # a gap is a small fraction of a bar's typical move
    assert np.median(np.abs(gap)) < 0.2 * np.median(np.abs(move))


def test_correlation_of_log_returns_near_target(basket):
    rets = np.column_stack([log_returns(f) for f in basket.values()])
    corr = np.corrcoef(rets, rowvar=False)
    off_diagonal = corr[np.triu_indices(3, k=1)]
    # standard error of a sample correlation at n=50k is ~(1 - 0.36) / sqrt(50k) = 0.003
    np.testing.assert_allclose(off_diagonal, 0.6, atol=0.03)


def test_negative_correlation_and_full_matrix():
    target = np.array([[1.0, -0.3, 0.2], [-0.3, 1.0, 0.5], [0.2, 0.5, 1.0]])
    assets = generate_ohlcv(40_000, 3, correlation=target, seed=3, jump_intensity=0.0)
    corr = np.corrcoef(np.column_stack([log_returns(f) for f in assets.values()]), rowvar=False)
    np.testing.assert_allclose(corr, target, atol=0.03)


def test_annualised_vol_in_sane_range(basket):
    for frame in basket.values():
        ann_vol = log_returns(frame).std(ddof=1) * np.sqrt(HOURS_PER_YEAR)
        assert 0.45 < ann_vol < 0.75  # target 0.6; GARCH regimes make the sample vol wander


def test_daily_bars_scale_vol_with_bar_length():
    frame = generate_ohlcv(20_000, freq="1d", annual_vol=0.3, garch_alpha=0.0, seed=1)
    ann_vol = log_returns(frame).std(ddof=1) * np.sqrt(365)
    assert abs(ann_vol - 0.3) < 0.02


def test_volatility_clusters_only_with_garch():
    clustered = log_returns(generate_ohlcv(40_000, seed=5))
    iid = log_returns(generate_ohlcv(40_000, seed=5, garch_alpha=0.0, jump_intensity=0.0))
    noise = 1 / np.sqrt(40_000)  # standard error of an autocorrelation under independence
    assert autocorr(clustered**2, 1) > 10 * noise
    assert np.mean([autocorr(np.abs(clustered), lag) for lag in (1, 5, 24)]) > 10 * noise
    assert abs(autocorr(iid**2, 1)) < 4 * noise


def test_jumps_fatten_the_tails():
    def excess_kurtosis(x: np.ndarray) -> float:
        z = (x - x.mean()) / x.std()
        return float(np.mean(z**4) - 3)

    normal = log_returns(generate_ohlcv(40_000, seed=2, garch_alpha=0.0, jump_intensity=0.0))
    jumpy = log_returns(generate_ohlcv(40_000, seed=2, garch_alpha=0.0, jump_intensity=50.0))
    assert abs(excess_kurtosis(normal)) < 0.15  # se of kurtosis ~ sqrt(24 / n) = 0.025
    assert excess_kurtosis(jumpy) > 2.0


def test_volume_higher_in_volatile_bars(basket):
    frame = basket["SYN0"]
    move = np.abs(log_returns(frame))
    volume = frame["volume"].to_numpy()[1:]
    assert np.corrcoef(move, volume)[0, 1] > 0.3
    quiet, wild = np.quantile(move, [0.2, 0.8])
    assert volume[move > wild].mean() > 1.5 * volume[move < quiet].mean()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_bars": 1}, "n_bars must be an integer >= 2"),
        ({"n_bars": 10.5}, "n_bars must be an integer >= 2"),
        ({"n_bars": 10, "n_assets": 0}, "n_assets must be an integer >= 1"),
        (
            {"n_bars": 10, "n_assets": 3, "correlation": -0.5},
            r"correlation must lie in \(-0.5, 1\)",
        ),
        ({"n_bars": 10, "n_assets": 2, "correlation": 1.0}, r"correlation must lie in \(-1, 1\)"),
        ({"n_bars": 10, "n_assets": 2, "correlation": np.eye(3)}, "shape"),
        ({"n_bars": 10, "n_assets": 2, "correlation": [[1, 2], [2, 1]]}, "positive definite"),
        ({"n_bars": 10, "annual_vol": 0.0}, "annual_vol must be a positive"),
        ({"n_bars": 10, "start_price": -1.0}, "start_price must be one positive"),
        ({"n_bars": 10, "n_assets": 2, "start_price": [1.0]}, "start_price"),
        ({"n_bars": 10, "garch_alpha": 0.5, "garch_beta": 0.5}, "garch_alpha \\+ garch_beta < 1"),
        ({"n_bars": 10, "jump_intensity": -1.0}, "jump_intensity >= 0"),
        ({"n_bars": 10, "annual_vol": 0.1, "jump_intensity": 100.0}, "jumps alone carry"),
        ({"n_bars": 10, "freq": "1M"}, "freq must be a positive fixed bar length"),
        ({"n_bars": 10, "freq": "soon"}, "freq must be a positive fixed bar length"),
        ({"n_bars": 10, "freq": "-1h"}, "freq must be a positive fixed bar length"),
        ({"n_bars": 10, "n_assets": 2, "names": ["A", "A"]}, "2 distinct names"),
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_ohlcv(**kwargs)
