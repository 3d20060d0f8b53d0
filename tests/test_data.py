"""Loading, validation/repair, resampling and alignment of OHLCV data (framework.data)."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest

from framework import data_cli
from framework.data import (
    DataValidationError,
    align_ohlcv,
    bundled_datasets,
    load_ohlcv,
    resample_ohlcv,
    timeframe_to_ms,
    validate_ohlcv,
)


def walk(n: int, freq: str = "1h", start: str = "2024-01-01", seed: int = 0) -> pd.DataFrame:
    """A clean random-walk OHLCV frame."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.005, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.005, n))
    idx = pd.date_range(start, periods=n, freq=freq, tz="UTC", name="timestamp", unit="ns")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                         "volume": rng.uniform(1, 10, n)}, index=idx)


def write_csv(df: pd.DataFrame, path, **kw) -> None:
    out = df.copy()
    out.index = out.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.to_csv(path, index_label="timestamp", **kw)


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


# --- loading ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["BTC_USDT-1d", "GOOG-1d", "EURUSD-1h", "ETH_USDT-1h"])
def test_bundled_datasets_load_with_defaults(name):
    df = load_ohlcv(name)
    assert isinstance(df.index, pd.DatetimeIndex) and str(df.index.tz) == "UTC"
    assert df.index.name == "timestamp" and df.index.is_monotonic_increasing and df.index.is_unique
    assert list(df.columns[:4]) == ["open", "high", "low", "close"]
    assert all(df[c].dtype == np.float64 for c in df.columns)
    raw = pd.read_csv(f"data/{name}.csv")
    assert len(df) == len(raw)
    assert df["close"].iloc[0] == raw["close"].iloc[0]
    assert ("volume" in df) == ("volume" in raw)


def test_unknown_name_lists_bundled_datasets():
    with pytest.raises(FileNotFoundError) as err:
        load_ohlcv("NOPE_USDT-1d")
    for name in bundled_datasets():
        assert name in str(err.value)


def test_csv_columns_are_case_insensitive_and_times_utc(tmp_path):
    df = walk(30)
    path = tmp_path / "x.csv"
    out = df.rename(columns=str.upper)
    out.index = out.index.tz_convert("Europe/Berlin").strftime("%Y-%m-%dT%H:%M:%S%z")
    out.to_csv(path, index_label="Date")
    got = load_ohlcv(path)
    assert got.index.equals(df.index)
    np.testing.assert_allclose(got.to_numpy(), df.to_numpy(), rtol=1e-15)


def test_non_numeric_price_is_an_error_naming_the_row(tmp_path):
    df = walk(10)
    path = tmp_path / "bad.csv"
    write_csv(df, path)
    lines = path.read_text().splitlines()
    cells = lines[5].split(",")
    cells[4] = "n/a?"  # close of data row 4, file line 6
    lines[5] = ",".join(cells)
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"'close' row 4 \(line 6\).*'n/a\?'"):
        load_ohlcv(path)


def test_parquet_round_trip(tmp_path):
    df = walk(50)
    df.to_parquet(tmp_path / "x.parquet")
    pd.testing.assert_frame_equal(load_ohlcv(tmp_path / "x.parquet"), df, check_freq=False)


def test_missing_columns_raise_under_every_policy():
    df = walk(10).drop(columns=["low"])
    for policy in ("raise", "drop", "fill"):
        with pytest.raises(DataValidationError, match=r"missing column\(s\) \['low'\]"):
            validate_ohlcv(df, policy=policy)


# --- validation ---------------------------------------------------------------------------------

def broken_frame() -> tuple[pd.DataFrame, dict[str, list[int]]]:
    """A 24/7 hourly frame with one of each problem, and the rows where they are."""
    df = walk(60).reset_index()
    df.loc[3, "close"] = np.nan
    df.loc[7, ["open", "low"]] = [0.0, 0.0]
    df.loc[11, "high"] = df.loc[11, "low"] * 0.99  # high below low
    df.loc[15, "low"] = max(df.loc[15, "open"], df.loc[15, "close"]) * 1.001  # low above body
    dup = df.loc[[20]].copy()
    df = pd.concat([df.iloc[:22], dup, df.iloc[22:]], ignore_index=True)  # row 22 repeats row 20
    df.loc[[30, 31]] = df.loc[[31, 30]].to_numpy()  # row 31 is earlier than row 30
    df = df.drop(index=[40, 41]).reset_index(drop=True)  # two candles missing after new row 39
    return df.set_index("timestamp"), {"nan": [3], "non_positive": [7], "ohlc_inconsistent": [11, 15],
                                        "duplicate": [22], "out_of_order": [31], "gap": [39]}


def test_raise_names_the_first_rows_and_what_to_do():
    df, expected = broken_frame()
    with pytest.raises(DataValidationError) as err:
        validate_ohlcv(df)
    msg = str(err.value)
    assert "row 3" in msg and df.index[3].isoformat() in msg
    assert "policy='drop'" in msg and "policy='fill'" in msg
    report = err.value.report
    for kind, rows in expected.items():
        assert report.rows(kind) == rows, kind
    assert not report.ok and report.calendar == "24/7" and report.spacing == pd.Timedelta("1h")


def test_drop_policy_returns_clean_sorted_data():
    df, expected = broken_frame()
    out, report = validate_ohlcv(df, policy="drop")
    bad = {df.index[r] for k in ("nan", "non_positive", "ohlc_inconsistent") for r in expected[k]}
    assert out.index.is_monotonic_increasing and out.index.is_unique
    assert len(out) == len(df) - len(bad) - 1  # the duplicate goes too
    assert not (bad & set(out.index))
    assert any("dropped" in a for a in report.actions)
    _, again = validate_ohlcv(out, policy="raise", calendar="sessions")  # only gaps remained
    assert again.ok


def test_fill_policy_fills_missing_and_bad_candles_flat():
    df, expected = broken_frame()
    out, report = validate_ohlcv(df, policy="fill")
    full = pd.date_range(df.index.min(), df.index.max(), freq="1h")
    assert out.index.equals(pd.DatetimeIndex(full, name="timestamp"))
    t_nan = df.index[expected["nan"][0]]
    prev_close = out["close"].shift(1).loc[t_nan]
    assert (out.loc[t_nan, ["open", "high", "low", "close"]] == prev_close).all()
    assert out.loc[t_nan, "volume"] == 0
    validate_ohlcv(out)  # the repaired frame passes


def test_sessions_series_tolerate_closures_but_report_long_outages():
    weekdays = walk(24 * 40)
    weekdays = weekdays[weekdays.index.dayofweek < 5]
    out, report = validate_ohlcv(weekdays)
    assert report.calendar == "sessions" and report.ok and not report.warnings
    holed = weekdays.drop(weekdays.loc["2024-01-15":"2024-01-22"].index)
    _, report = validate_ohlcv(holed)
    assert report.ok and [i.kind for i in report.warnings] == ["gap"]
    with pytest.raises(DataValidationError, match="gap"):
        validate_ohlcv(holed, strict=True)
    with pytest.raises(DataValidationError, match="gap"):
        validate_ohlcv(weekdays, calendar="24/7")  # every weekend is a gap in a 24/7 market


def test_outlier_spike_is_a_warning_or_an_error_when_strict():
    df = walk(500)
    df.iloc[250, df.columns.get_loc("close")] *= 3  # a bad tick: up x3 and straight back
    df.iloc[250, df.columns.get_loc("high")] = df["close"].iloc[250]
    df.iloc[400, df.columns.get_loc("low")] = df["low"].iloc[400] * 0.3  # a wick to -70%
    _, report = validate_ohlcv(df)
    assert report.ok and report.rows("spike") == [250, 400]
    with pytest.raises(DataValidationError, match="spike"):
        validate_ohlcv(df, strict=True)
    out, _ = validate_ohlcv(df, strict=True, policy="drop")
    assert len(out) == len(df) - 2


def test_naive_index_is_read_as_utc():
    df = walk(30)
    naive = df.tz_localize(None)
    out, _ = validate_ohlcv(naive)
    assert out.index.equals(df.index)


def test_check_cli_reports_problems_and_exit_code(tmp_path, capsys):
    df, expected = broken_frame()
    bad = tmp_path / "bad.csv"
    write_csv(df, bad)
    assert run_cli("data", "check", str(bad)) == 1
    text = capsys.readouterr().out
    for kind in expected:
        assert kind in text
    assert f"row {expected['duplicate'][0]}" in text
    good = tmp_path / "good.csv"
    write_csv(walk(100), good)
    assert run_cli("data", "check", str(good)) == 0
    assert "OK" in capsys.readouterr().out
    assert run_cli("data", "check", "GOOG-1d") == 0


# --- reshaping ---------------------------------------------------------------------------------

def test_timeframe_to_ms():
    assert timeframe_to_ms("1m") == 60_000 and timeframe_to_ms("4h") == 4 * 3_600_000
    assert timeframe_to_ms("1w") == 7 * 86_400_000
    with pytest.raises(ValueError, match="unknown timeframe"):
        timeframe_to_ms("1x")


def test_resample_aggregates_ohlcv():
    df = walk(24 * 10, start="2024-01-03 05:00")  # starts mid-day on a Wednesday
    out = resample_ohlcv(df, "4h")
    for t, row in out.iterrows():
        part = df[(df.index >= t) & (df.index < t + pd.Timedelta("4h"))]
        assert row["open"] == part["open"].iloc[0] and row["close"] == part["close"].iloc[-1]
        assert row["high"] == part["high"].max() and row["low"] == part["low"].min()
        assert row["volume"] == pytest.approx(part["volume"].sum(), rel=1e-12)
    assert out.index[0] == pd.Timestamp("2024-01-03 04:00", tz="UTC")  # epoch-aligned bins
    weekly = resample_ohlcv(df, "1w")
    assert (weekly.index.dayofweek == 0).all()  # weeks open on Monday, as on Binance
    daily = resample_ohlcv(df, "1d", drop_partial_last=True)
    assert daily.index[-1] + pd.Timedelta("1d") <= df.index[-1] + pd.Timedelta("1h")


def test_align_inner_and_outer():
    a, b = walk(10), walk(10, start="2024-01-01 03:00", seed=1)
    inner = align_ohlcv({"A": a, "B": b})
    assert list(inner["close"].columns) == ["A", "B"]
    assert inner.index.equals(a.index.intersection(b.index)) and len(inner) == 7
    assert (inner["close"]["B"] == b["close"].iloc[:7].to_numpy()).all()
    outer = align_ohlcv({"A": a, "B": b}, how="outer")
    assert len(outer) == 13 and outer["close"]["A"].isna().sum() == 3
