"""Loading, validation/repair, resampling and alignment of OHLCV data (framework.data)."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest

from framework import data as data_module
from framework import data_cli, data_nb
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
    df, expected_rows = broken_frame()
    out, report = validate_ohlcv(df, policy="fill")
    # what broken_frame started from, with every bad candle (NaN, non-positive, inconsistent)
    # and both missing hours repaired by hand, in time order: a flat candle at the close before
    # it (a repaired one's, for the second of two missing hours) with zero volume
    expected = walk(60)
    kinds = ("nan", "non_positive", "ohlc_inconsistent")
    bad = {df.index[r] for k in kinds for r in expected_rows[k]}
    missing = set(expected.index.difference(df.index))
    assert len(bad) == 4 and len(missing) == 2
    for i, t in enumerate(expected.index):
        if t in bad | missing:
            expected.iloc[i, :4] = expected["close"].iloc[i - 1]
            expected.iloc[i, 4] = 0.0
    pd.testing.assert_frame_equal(out, expected, check_freq=False)
    assert "filled 6 candle(s) with the previous close" in report.actions
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


# --- the compiled fast path of validation ---------------------------------------------------------
# validate_ohlcv first runs one compiled pass (framework.data_nb) that can only certify "nothing to
# report"; anything else goes to the detailed checks. These tests compare both paths on the same
# input: the detailed path alone is obtained by switching the fast path off.

def _detailed_only(monkeypatch):
    monkeypatch.setattr(data_module, "_fast_validate", lambda *a, **k: None)


def _outcome(df, **kw):
    """What validate_ohlcv does with ``df``: ('raised', type, message, report issues) or
    ('ok', frame, report fields)."""
    try:
        out, report = validate_ohlcv(df, **kw)
    except (DataValidationError, ValueError) as e:
        issues = getattr(e, "report", None)
        return ("raised", type(e), str(e), None if issues is None else issues.issues)
    return ("ok", out, (report.n_rows, report.spacing, report.calendar, report.policy,
                        report.issues, report.actions, report.name))


def _assert_same(fast, slow):
    assert fast[0] == slow[0], (fast, slow)
    if fast[0] == "raised":
        assert fast[1:] == slow[1:]
    else:
        pd.testing.assert_frame_equal(fast[1], slow[1], check_freq=True)
        assert fast[1].index.freq == slow[1].index.freq
        assert fast[2] == slow[2]


def _variants():
    base = walk(300)
    col = base.columns.get_loc

    def edit(f):
        df = base.copy()
        f(df)
        return df

    yield "clean", base, {}
    yield "clean, uppercase and extra columns", base.rename(columns=str.upper).assign(x=1), {}
    yield "clean, no volume", base.drop(columns="volume"), {}
    yield "clean, naive index", base.tz_localize(None), {}
    yield "clean, other time zone", base.tz_convert("America/New_York"), {}
    yield "clean, microsecond index", base.set_axis(base.index.as_unit("us")), {}
    yield "clean, float32 prices", base.astype("float32"), {}
    yield "clean, daily", walk(400, freq="1D"), {}
    yield "clean, 7-minute spacing", walk(3000, freq="7min"), {}
    yield "clean, before 1970", walk(300, start="1969-12-20"), {}
    yield "clean, short (19 rows)", walk(19), {}
    yield "clean, 2 rows", walk(2), {}
    yield "one row", walk(1), {}
    yield "no rows", walk(0), {}
    yield "clean, calendar sessions", base, {"calendar": "sessions"}
    yield "clean, strict", base, {"strict": True}
    yield "clean, spikes off", base, {"spike_threshold": float("inf")}
    yield "clean, threshold 3", base, {"spike_threshold": 3.0}
    yield "clean, threshold 0", base, {"spike_threshold": 0.0}
    yield "constant prices", base.assign(open=50.0, high=50.0, low=50.0, close=50.0), {}
    yield "high below body by float noise", edit(lambda d: d.iloc.__setitem__(
        (7, col("high")), max(d.iloc[7, col("open")], d.iloc[7, col("close")]) * (1 - 1e-12))), {}
    yield "high below body", edit(lambda d: d.iloc.__setitem__(
        (7, col("high")), max(d.iloc[7, col("open")], d.iloc[7, col("close")]) * (1 - 1e-6))), {}
    yield "low above body", edit(lambda d: d.iloc.__setitem__(
        (9, col("low")), min(d.iloc[9, col("open")], d.iloc[9, col("close")]) * (1 + 1e-6))), {}
    for c in ("open", "high", "low", "close", "volume"):
        yield f"NaN {c}", edit(lambda d, c=c: d.iloc.__setitem__((5, col(c)), np.nan)), {"policy": "drop"}
    for c in ("open", "high", "low", "close", "volume"):
        yield f"inf {c}", edit(lambda d, c=c: d.iloc.__setitem__((5, col(c)), np.inf)), {"policy": "drop"}
        yield f"inf {c}, short", edit(lambda d, c=c: d.iloc.__setitem__((5, col(c)), np.inf)).iloc[:15], {}
    yield "-inf low", edit(lambda d: d.iloc.__setitem__((5, col("low")), -np.inf)), {}
    yield "misaligned", base.set_axis(base.index.where(
        np.arange(300) != 50, base.index[50] + pd.Timedelta(minutes=20))), {"policy": "fill"}
    yield "zero low", edit(lambda d: d.iloc.__setitem__((4, col("low")), 0.0)), {}
    yield "negative volume", edit(lambda d: d.iloc.__setitem__((4, col("volume")), -1.0)), {}
    yield "duplicate time", base.set_axis(base.index.where(np.arange(300) != 6, base.index[5])), {}
    yield "out of order", base.iloc[[*range(10), 11, 10, *range(12, 300)]], {"policy": "drop"}
    yield "NaT", base.set_axis(base.index.where(np.arange(300) != 6, pd.NaT)), {"policy": "fill"}
    yield "gap", base.drop(base.index[100:103]), {}
    yield "gap, filled", base.drop(base.index[100:103]), {"policy": "fill"}
    yield "close spike", edit(lambda d: d.iloc.__setitem__((150, col("close")), d.iloc[150, col("close")] * 2)), {}
    yield "high wick", edit(lambda d: d.iloc.__setitem__((150, col("high")), d.iloc[150, col("high")] * 1.5)), {}
    yield "low wick", edit(lambda d: d.iloc.__setitem__((150, col("low")), d.iloc[150, col("low")] * 0.6)), {}
    yield "spike, strict", edit(lambda d: d.iloc.__setitem__((150, col("high")), d.iloc[150, col("high")] * 1.5)), \
        {"strict": True}
    weekdays = walk(24 * 40)
    yield "sessions", weekdays[weekdays.index.dayofweek < 5], {}


@pytest.mark.parametrize("case", [c for c, _, _ in _variants()])
def test_fast_path_gives_the_detailed_result(case, monkeypatch):
    _, df, kw = next(v for v in _variants() if v[0] == case)
    monkeypatch.setattr(data_module, "COMPILED_MIN_ROWS", 0)  # the compiled pass for any size
    fast = _outcome(df, **kw)
    _detailed_only(monkeypatch)
    _assert_same(fast, _outcome(df, **kw))


def test_fast_path_certifies_clean_data_only():
    """The fast path answers for clean data (else there is no speed-up) and never for data
    the detailed checks find something in (checked on frames with spikes of random size,
    many of them near the threshold)."""
    clean = walk(300)
    assert data_module._fast_validate(clean, calendar="auto", spike_threshold=25.0, policy="raise",
                                      name="x") is not None
    rng = np.random.default_rng(7)
    answered = 0
    for _ in range(300):
        df = walk(int(rng.integers(20, 400)), seed=int(rng.integers(1 << 30)))
        r = int(rng.integers(1, len(df) - 1))
        factor = float(np.exp(rng.choice([-1, 1]) * rng.uniform(0.0, 0.4)))
        field = rng.choice(["close", "high", "low"])
        if field == "close":
            df.iloc[r, df.columns.get_loc("close")] *= factor
            df.iloc[r, df.columns.get_loc("high")] = df.iloc[r, :4].max()
            df.iloc[r, df.columns.get_loc("low")] = df.iloc[r, :4].min()
        elif field == "high":
            df.iloc[r, df.columns.get_loc("high")] *= max(factor, 1 / factor)
        else:
            df.iloc[r, df.columns.get_loc("low")] *= min(factor, 1 / factor)
        fast = data_module._fast_validate(df, calendar="auto", spike_threshold=25.0, policy="raise",
                                          name="x")
        _, detailed = validate_ohlcv(df.rename(columns=str.upper).assign(pad=0), policy="drop")
        if fast is not None:
            answered += 1
            assert detailed.issues == [] and detailed.actions == []
            assert (fast.spacing, fast.calendar) == (detailed.spacing, detailed.calendar)
    assert 30 < answered < 270  # both outcomes were exercised


def test_fast_path_result_is_independent_of_the_input(monkeypatch):
    monkeypatch.setattr(data_module, "COMPILED_MIN_ROWS", 0)
    df = walk(100)
    before = df.copy()
    out, _ = validate_ohlcv(df)
    out.iloc[0, 0] = -1.0
    df.iloc[1, 1] = -2.0
    pd.testing.assert_frame_equal(df.iloc[2:], before.iloc[2:])
    assert out.iloc[1, 1] == before.iloc[1, 1] and df.iloc[0, 0] == before.iloc[0, 0]


def test_fast_path_only_for_large_frames(monkeypatch):
    """Below COMPILED_MIN_ROWS the detailed checks run alone (no compile for small data)."""
    calls = []
    monkeypatch.setattr(data_module, "_fast_validate", lambda frame, **k: calls.append(len(frame)))
    monkeypatch.setattr(data_module, "COMPILED_MIN_ROWS", 50)
    for n in (49, 50, 51):
        validate_ohlcv(walk(n))
    assert calls == [50, 51]


@pytest.mark.parametrize("start, spacing, n", [
    ("2024-01-01", "1h", 10_000), ("2024-01-03 17:00", "7min", 5_000), ("1969-12-01", "1D", 400),
    ("2024-01-01", "1W", 60), ("2024-01-05", "5D", 300), ("2024-01-06 23:59:59", "1s", 90_000),
])
def test_saturday_count(start, spacing, n):
    idx = pd.date_range(start, periods=n, freq=spacing, tz="UTC", unit="ns")
    expected = int((idx.dayofweek == 5).sum())
    got = data_nb.saturday_count_nb(int(idx.asi8[0]), int(pd.Timedelta(spacing).value), n)
    assert got == expected


def test_resample_to_calendar_months():
    df = walk(24 * 100, start="2024-01-20")  # 20 Jan to 28 Apr 2024, hourly
    out = resample_ohlcv(df, "1M")
    starts = ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"]
    assert list(out.index) == [pd.Timestamp(s, tz="UTC") for s in starts]
    for t, row in out.iterrows():
        part = df[(df.index.year == t.year) & (df.index.month == t.month)]
        assert row["open"] == part["open"].iloc[0] and row["close"] == part["close"].iloc[-1]
        assert row["high"] == part["high"].max() and row["low"] == part["low"].min()
    assert len(resample_ohlcv(df, "1M", drop_partial_last=True)) == 3  # April is unfinished
