"""Hostile inputs to the data layer (issue 6, items 10-17), each a scripted probe that failed
before its fix: epoch units, infinities, candle gaps in downloads, unwritable caches, misaligned
bars, messages in the words of the interface used, a read-only home, closed pipes, empty files,
huge settings, too many synthetic bars, and data of the wrong type."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from framework import _kernel_cache, data_cli, data_nb, enums
from framework.backtest import Backtest
from framework.cli import main
from framework.data import DataValidationError, check_bar, read_ohlcv_file, validate_ohlcv
from framework.download import RetryPolicy, download_ohlcv, read_cache
from framework.settings import SimSettings
from framework.synthetic import generate_ohlcv
from tests.exchange_fixtures import BTC, START, client, exchange, ms  # noqa: F401
from tests.test_data import walk, write_csv

ROOT = Path(__file__).resolve().parents[1]
KLINES = "/api/v3/klines"


def run_data_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def set_cell(df: pd.DataFrame, row: int, column: str, value: float) -> pd.DataFrame:
    out = df.copy()
    out.iloc[row, out.columns.get_loc(column)] = value
    return out


# --- 10: epoch seconds (and µs, ns) are not read as milliseconds ---------------------------------

@pytest.mark.parametrize("unit, per_second", [("s", 1), ("ms", 10**3), ("us", 10**6), ("ns", 10**9)])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_epoch_times_load_in_their_own_unit(tmp_path, unit, per_second, fmt):
    df = walk(48)
    out = df.reset_index()
    out["timestamp"] = df.index.asi8 // (10**9 // per_second)  # int64 epoch numbers in `unit`
    path = tmp_path / f"x.{fmt}"
    out.to_csv(path, index=False) if fmt == "csv" else out.to_parquet(path)
    got = read_ohlcv_file(path)
    assert got.index.equals(df.index), (unit, got.index[:2])
    assert got.index[0] == pd.Timestamp("2024-01-01", tz="UTC")


def test_data_check_of_epoch_seconds_reports_the_real_dates(tmp_path, capsys):
    df = walk(48)
    out = df.reset_index()
    out["timestamp"] = df.index.asi8 // 10**9
    out.to_csv(tmp_path / "sec.csv", index=False)
    assert run_data_cli("data", "check", str(tmp_path / "sec.csv")) == 0
    assert "48 rows, spacing 1h" in capsys.readouterr().out
    assert validate_ohlcv(read_ohlcv_file(tmp_path / "sec.csv"))[0].index[-1].year == 2024


def test_numbers_that_are_no_epoch_time_or_mix_units_are_refused(tmp_path):
    df = walk(10).reset_index()
    rows = df.assign(timestamp=np.arange(10))  # row numbers, not times
    rows.to_parquet(tmp_path / "rows.parquet")
    with pytest.raises(ValueError, match=r"time 0 at row 0 is not an epoch time.*ISO 8601"):
        read_ohlcv_file(tmp_path / "rows.parquet")
    mixed = df.assign(timestamp=df["timestamp"].astype("int64") // 10**6)  # ms ...
    mixed.loc[4, "timestamp"] //= 1000  # ... and one in seconds
    mixed.to_csv(tmp_path / "mixed.csv", index=False)
    with pytest.raises(ValueError, match=r"mixes epoch units.*milliseconds.*row 4 \(line 6\) as seconds"):
        read_ohlcv_file(tmp_path / "mixed.csv")


def test_epoch_text_with_a_missing_time_is_a_missing_timestamp(tmp_path):
    df = walk(10).reset_index()
    df["timestamp"] = (df["timestamp"].astype("int64") // 10**6).astype(str)
    df.loc[3, "timestamp"] = ""
    df.to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(DataValidationError) as err:
        validate_ohlcv(read_ohlcv_file(tmp_path / "x.csv"))
    assert err.value.report.rows("missing_timestamp") == [3]


# --- 11: +-inf is an error like NaN --------------------------------------------------------------

@pytest.mark.parametrize("column, value", [("high", np.inf), ("low", -np.inf), ("close", np.inf),
                                           ("open", np.inf), ("volume", np.inf)])
def test_infinite_values_are_errors_naming_the_row(column, value):
    df = set_cell(walk(100), 40, column, value)
    with pytest.raises(DataValidationError) as err:
        validate_ohlcv(df)
    report = err.value.report
    assert report.rows("infinite") == [40] and len(report.errors) == 1
    assert f"{column}={value}" in str(err.value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy divide-by-zero on the way
        out, report = validate_ohlcv(df, policy="drop")
    assert len(out) == 99 and np.isfinite(out.to_numpy()).all()
    assert not report.warnings  # not also a "spike"


@pytest.mark.parametrize("column", ["open", "high", "low", "close", "volume"])
@pytest.mark.parametrize("check_spikes", [True, False])  # False: < 20 rows or spike_threshold=inf
def test_fast_pass_never_certifies_infinite_values(column, check_spikes):
    df = set_cell(walk(100), 40, column, np.inf)
    arrays = [df[c].to_numpy() for c in ("open", "high", "low", "close", "volume")]
    args = (True, check_spikes, 25.0 if check_spikes else 0.0)
    assert data_nb.clean_scan_nb(df.index.asi8, *arrays, *args)[0] == data_nb.DETAILED
    clean = [walk(100)[c].to_numpy() for c in ("open", "high", "low", "close", "volume")]
    # the same data without the infinity is certified
    assert data_nb.clean_scan_nb(df.index.asi8, *clean, *args)[0] == data_nb.CLEAN


def test_check_bar_rejects_infinite_prices_and_volume():
    bar = [np.array([x]) for x in (10.0, 11.0, 9.0, 10.5, 3.0)]
    assert check_bar(*bar) is None
    for i, what in [(1, "a price is infinite"), (3, "a price is infinite"), (4, "infinite volume")]:
        hostile = [b.copy() for b in bar]
        hostile[i][0] = np.inf
        assert check_bar(*hostile).startswith(what)
    no_volume = [b.copy() for b in bar]
    no_volume[4][0] = np.nan
    assert check_bar(*no_volume) is None  # NaN volume still means "no volume"


def test_backtest_with_an_infinite_close_stops_before_running():
    df = set_cell(walk(100), 60, "close", np.inf)
    with pytest.raises(DataValidationError, match=r"infinite \(row 60.*close=inf"):
        Backtest("sma_cross", df)


# --- 12: a temporary candle gap is asked for again ---------------------------------------------

def test_candle_gap_is_not_cached_as_covered_and_a_rerun_fills_it(exchange, tmp_path):  # noqa: F811
    gap_from, gap_to = START + pd.Timedelta(minutes=150), START + pd.Timedelta(minutes=160)
    exchange.faults.candle_gap(ms(gap_from), ms(gap_to))
    kw = dict(cache_dir=tmp_path, progress=False, page_limit=100,
              retry=RetryPolicy(max_retries=2, base_delay_s=0.01))
    until = START + pd.Timedelta(minutes=400)
    first = download_ohlcv(client(exchange), "BTC/USDT", "1m", START, until, **kw)
    assert first.fetched == 390 and first.holes == [(ms(gap_from), ms(gap_to))]
    _, coverage = read_cache(first.path)
    assert coverage == [(ms(START), ms(gap_from)), (ms(gap_to), ms(until))]
    exchange.faults.clear()
    exchange.clear_requests()
    second = download_ohlcv(client(exchange), "BTC/USDT", "1m", START, until, **kw)
    assert second.fetched == 10 and second.holes == [] and second.report.ok
    assert [int(r.params["startTime"]) for r in exchange.requests(KLINES)] == [ms(gap_from)]
    pd.testing.assert_frame_equal(second.data, BTC.iloc[:400], check_freq=False)
    assert read_cache(second.path)[1] == [(ms(START), ms(until))]


def test_fetch_cli_says_which_candles_the_exchange_left_out(exchange, tmp_path, capsys):  # noqa: F811
    exchange.faults.candle_gap(ms(START + pd.Timedelta(minutes=150)), ms(START + pd.Timedelta(minutes=160)))
    argv = ["data", "fetch", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m",
            "--since", "2024-01-01", "--until", "2024-01-01T06:40", "--exchange-url", exchange.url,
            "--cache-dir", str(tmp_path), "--no-progress"]
    assert run_data_cli(*argv) == 0
    out = capsys.readouterr().out
    assert "no candle for 10 candle time(s) in 1 range(s) (2024-01-01T02:30:00+00:00 to " \
           "2024-01-01T02:40:00+00:00)" in out and "asks for them again" in out


# --- 13: an unwritable cache folder is found before downloading ---------------------------------

def test_fetch_into_an_unwritable_cache_dir_fails_first_naming_the_option(exchange, tmp_path, capsys):  # noqa: F811
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # a folder below a file cannot be created, even by root
    argv = ["data", "fetch", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m",
            "--since", "2024-01-01", "--exchange-url", exchange.url,
            "--cache-dir", str(blocker / "sub"), "--no-progress"]
    assert run_data_cli(*argv) == 1
    err = capsys.readouterr().err
    assert f"cannot write to the cache folder {blocker / 'sub' / 'binance'}" in err
    assert "--cache-dir" in err and "Traceback" not in err
    assert exchange.requests(KLINES) == []  # nothing downloaded only to be lost


# --- 14: misaligned bars, what data check did, CLI words, percentages ----------------------------

def shifted() -> pd.DataFrame:
    df = walk(100)
    times = df.index.to_series()
    times.iloc[60] += pd.Timedelta(minutes=30)  # 11:30 between 11:00 and 13:00 (12:00 gone)
    return df.set_axis(pd.DatetimeIndex(times, name="timestamp"))


def test_a_bar_off_the_grid_is_misaligned_not_a_gap_of_zero_candles():
    with pytest.raises(DataValidationError) as err:
        validate_ohlcv(shifted())
    report = err.value.report
    assert report.rows("misaligned") == [60] and "by 30m" in report.errors[0].detail + str(err.value)
    gaps = [i for i in report.issues if i.kind == "gap"]
    assert [g.row for g in gaps] == [59] and "1 candle(s) missing" in gaps[0].detail
    assert "0 candle(s)" not in str(err.value)
    filled, _ = validate_ohlcv(shifted(), policy="fill")
    assert filled.index.equals(walk(100).index)  # back on the hourly grid


def test_data_check_does_not_claim_to_have_changed_the_file(tmp_path, capsys):
    df = set_cell(set_cell(walk(100), 10, "close", np.nan), 20, "low", 0.0)
    path = tmp_path / "bad.csv"
    write_csv(df, path)
    before = path.read_bytes()
    assert run_data_cli("data", "check", str(path)) == 1
    out = capsys.readouterr().out
    assert "action" not in out and "dropped" not in out
    assert "--policy drop" in out and "policy=" not in out
    assert run_data_cli("data", "check", str(path), "--policy", "drop") == 1
    out = capsys.readouterr().out
    assert ("what loading with --policy drop changes in memory (the file is left as it is): "
            "dropped 2 row(s)") in out
    assert path.read_bytes() == before


def test_backtest_cli_advice_names_options_that_exist(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    write_csv(set_cell(walk(200), 10, "close", np.nan), path)
    assert main(["backtest", "sma_cross", "--data", str(path)]) == 2
    err = capsys.readouterr().err
    assert "nan (row 10" in err and "--policy drop" in err and f"tradpal data check {path}" in err
    assert "policy='" not in err and ".report" not in err
    assert main(["backtest", "sma_cross", "--data", str(path), "--policy", "drop"]) == 0
    assert "199 bars" in capsys.readouterr().out
    assert main(["backtest", "sma_cross", "--data", str(path), "--policy", "fill"]) == 0
    assert "200 bars" in capsys.readouterr().out


def test_spike_messages_give_simple_percentage_changes():
    df = walk(100)
    c = df.columns.get_loc
    df.iloc[50, [c("open"), c("high"), c("low"), c("close")]] = df.iloc[50, c("close")] * 0.3
    df.iloc[50, c("open")] = df.iloc[49, c("close")]  # a bar falling to 30 % and back
    df.iloc[50, c("high")] = df.iloc[50, c("open")]
    _, report = validate_ohlcv(df)
    close = df["close"].to_numpy()
    down, up = close[50] / close[49] - 1, close[51] / close[50] - 1
    spike = [i.detail for i in report.warnings if i.kind == "spike"]
    assert spike == [f"close jumps {down:+.1%} then {up:+.1%} (|z| > 25)"]


# --- 15: read-only home, closed pipe, header-only file ---------------------------------------

def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "TRADPAL_CACHE_HOME")}
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **extra}


def test_import_with_an_unwritable_home_falls_back_to_a_temporary_cache(tmp_path):
    (tmp_path / "a-file").write_text("")
    (tmp_path / "tmp").mkdir()
    env = _env(HOME=str(tmp_path / "a-file" / "home"), TMPDIR=str(tmp_path / "tmp"))
    code = ("import framework; from framework import runner, sim_nb; "
            "print(sim_nb.fill_nb._cache.cache_path); print(runner.kernel_cache_dir())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "cannot write TradPal's kernel cache" in out.stderr and "TRADPAL_CACHE_HOME" in out.stderr
    numba_dir, drivers_dir = out.stdout.split()
    assert Path(numba_dir).is_relative_to(tmp_path / "tmp")  # the compiled kernels ...
    assert Path(drivers_dir).is_relative_to(tmp_path / "tmp")  # ... and the strategy drivers


def test_a_shared_temporary_cache_folder_is_not_used(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("TRADPAL_CACHE_HOME", str(tmp_path / "a-file" / "cache"))
    monkeypatch.setattr(_kernel_cache, "_fallbacks", {})
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    shared = tmp_path / f"tradpal-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could plant modules here: generated drivers are imported
    with pytest.warns(RuntimeWarning, match="cannot write TradPal's kernel cache"):
        root = _kernel_cache.tradpal_cache_root()
    assert root.parent == tmp_path and root != shared and root.stat().st_mode & 0o077 == 0
    assert _kernel_cache.tradpal_cache_root() == root  # the same folder for the whole process


def test_output_into_a_closed_pipe_ends_quietly():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written (`| head -1` finished)
    try:
        out = subprocess.run([sys.executable, "-m", "framework.cli", "data", "check", "BTC_USDT-1h"],
                             stdout=write_end, stderr=subprocess.PIPE, text=True, env=_env(),
                             cwd=ROOT, timeout=300)
    finally:
        os.close(write_end)
    assert out.returncode == 141 and "Traceback" not in out.stderr, out.stderr


def test_a_header_only_file_has_no_rows_for_check_and_backtest(tmp_path, capsys):
    path = tmp_path / "empty.csv"
    path.write_text("timestamp,open,high,low,close,volume\n")
    assert run_data_cli("data", "check", str(path)) == 1
    captured = capsys.readouterr()
    assert "no rows" in captured.err and "OK" not in captured.out
    assert main(["backtest", "sma_cross", "--data", str(path), "--policy", "drop"]) == 2
    assert "no rows" in capsys.readouterr().err


# --- 16: huge numbers in settings and synthetic lengths ------------------------------------------

def test_huge_settings_are_accepted_or_refused_with_their_name():
    assert SimSettings(init_cash=10**30).vector(1.0)[enums.P_INIT_CASH] == 1e30
    with pytest.raises(ValueError, match=r"max_position_notional must be a finite number > 0, "
                                         r"got an integer of 401 digits"):
        SimSettings(max_position_notional=10**400)
    with pytest.raises(ValueError, match=r"fees must be in \[0, 0.1\].*got an integer of 400"):
        SimSettings(fees=10**399)


def test_cli_names_the_range_of_a_huge_window(capsys):
    argv = ["backtest", "sma_cross", "--data", "BTC_USDT-1d", "--set", "atr_window=99999999999999999999"]
    assert main(argv) == 2
    assert ("atr_window must be an integer in [1, 1000000], got 99999999999999999999"
            in capsys.readouterr().err)


def test_synthetic_bars_beyond_pandas_time_range_say_the_limit():
    start = pd.Timestamp("2020-01-01", tz="UTC")
    room = (pd.Timestamp.max.tz_localize("UTC") - start) // pd.Timedelta("1d") + 1
    assert len(generate_ohlcv(room, freq="1d")) == room
    with pytest.raises(ValueError, match=rf"at most {room} bars fit from this start") as err:
        generate_ohlcv(room + 1000, freq="1d")
    later = re.search(r"start no later than (\d{4}-\d\d-\d\d)", str(err.value)).group(1)
    assert len(generate_ohlcv(room + 1000, freq="1d", start=later)) == room + 1000
    with pytest.raises(ValueError, match="2262-04-11"):
        generate_ohlcv(5_000_000, freq="1h")


# --- 17: data of the wrong type -----------------------------------------------------------------

@pytest.mark.parametrize("data", [walk(50)["close"], walk(50).to_numpy(), None])
def test_backtest_says_what_data_accepts(data):
    with pytest.raises(TypeError, match=r"data must be an OHLCV DataFrame .* a path .* bundled "
                                        r"dataset name .* mapping"):
        Backtest("sma_cross", data)
    with pytest.raises(TypeError, match=r"data\['B'\] must be an OHLCV DataFrame"):
        Backtest("sma_cross", {"A": walk(50), "B": data})
