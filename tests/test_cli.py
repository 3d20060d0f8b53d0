"""The tradpal command line."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from framework.backtest import Backtest
from framework.cli import main
from framework.data import load_ohlcv
from framework.sweep import sweep
from strategies.sma_cross import SmaCross


def test_strategies_lists_names_and_parameters(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    for name in ("sma_cross", "rsi_reversion", "macd_trend", "bollinger_reversion", "donchian_breakout"):
        assert name in out
    assert "fast" in out and "integer in [1, 100000]" in out


def test_backtest_prints_stats_beside_buy_and_hold(capsys):
    code = main(["backtest", "sma_cross", "--data", "BTC_USDT-1d", "--param", "fast=5", "--param", "slow=20",
                 "--set", "fees=0.002", "--set", "sl_pct=0.1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "SmaCross(fast=5, slow=20)" in out and "Buy & Hold" in out and "Total return" in out


def test_bad_parameter_is_a_clear_error_and_exit_code_2(capsys):
    assert main(["backtest", "sma_cross", "--data", "BTC_USDT-1d", "--param", "fast=0"]) == 2
    assert "parameter 'fast' must be an integer in [1, 100000], got 0" in capsys.readouterr().err
    assert main(["backtest", "sma_cross", "--data", "BTC_USDT-1d", "--set", "fees=lots"]) == 2
    assert "setting 'fees' takes a number" in capsys.readouterr().err


def test_console_script_is_installed(tmp_path):
    """The ``tradpal`` entry point that ``pip install`` put beside the interpreter, not
    ``python -m``: run from an unrelated directory, it must find the package and its data."""
    script = Path(sys.executable).parent / "tradpal"
    assert script.is_file(), f"no console script at {script}: is the project installed in this venv?"
    out = subprocess.run([str(script), "strategies"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    for name in ("sma_cross", "rsi_reversion", "macd_trend", "bollinger_reversion", "donchian_breakout"):
        assert name in out.stdout
    assert "integer in [1, 100000]" in out.stdout

    out = subprocess.run([str(script), "backtest", "sma_cross", "--data", "BTC_USDT-1d", "--param", "fast=5",
                          "--param", "slow=20"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "SmaCross(fast=5, slow=20) on BTC_USDT-1d" in out.stdout
    assert "Buy & Hold" in out.stdout and "Total return" in out.stdout
    assert re.search(r"\n\d+ orders, \d+ fills, \d+ trades; ran in", out.stdout)

    # errors come back as one line on stderr and exit code 2, through the script as well
    out = subprocess.run([str(script), "backtest", "sma_cross", "--data", "BTC_USDT-1d", "--param", "fast=0"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 2
    assert "parameter 'fast' must be an integer in [1, 100000], got 0" in out.stderr


# --- the research loop on the command line: each option through the installed script ----------

TRADPAL = Path(sys.executable).parent / "tradpal"
SMA_SOURCE = Path(__file__).resolve().parent.parent / "strategies" / "sma_cross.py"


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """``tradpal ARGS`` as a user runs it (the console script), capturing its output."""
    return subprocess.run([str(TRADPAL), *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=600)


def user_strategy_file(folder: Path, class_name: str = "MyCross", name: str = "my_cross") -> Path:
    """The bundled SMA crossover, saved as a user's own strategy under another name."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    text = SMA_SOURCE.read_text().replace("class SmaCross(", f"class {class_name}(")
    path.write_text(text.replace('name = "sma_cross"', f'name = "{name}"'))
    return path


def assert_stats_equal(printed: dict, expected: dict) -> None:
    """JSON stats (ISO times and durations, null for NaN, "inf") equal the Python API's."""
    assert list(printed) == list(expected)
    for key, want in expected.items():
        got = printed[key]
        if isinstance(want, pd.Timestamp):
            assert pd.Timestamp(got) == want, key
        elif isinstance(want, pd.Timedelta):
            assert pd.Timedelta(got) == want, key
        elif isinstance(want, float) and np.isnan(want):
            assert got is None, key
        else:
            assert float(got) == want, key


def error_line(out: subprocess.CompletedProcess) -> str:
    """The one line a usage error prints (exit code 2, nothing on stdout)."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def error_line_in_process(args: tuple[str, ...], capsys) -> str:
    """As :func:`error_line`, through ``main`` in this process (no interpreter start-up per
    case; the script itself is exercised by the tests above)."""
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    out = capsys.readouterr()
    return error_line(subprocess.CompletedProcess(args, code, out.out, out.err))


def test_a_research_command_loads_no_live_or_plotting_library():
    """``tradpal backtest`` parses with its own group of commands: starting it does not import
    ccxt, redis, PyJWT, FastAPI or plotly (about a second of every research run), while
    ``tradpal --help`` still lists every command."""
    code = ("import sys\n"
            "from framework.cli import build_parser\n"
            "build_parser('backtest').parse_args(['backtest', 'sma_cross', '--data', 'BTC_USDT-1d'])\n"
            "heavy = ('ccxt', 'redis', 'jwt', 'fastapi', 'plotly', 'live.feed')\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    listed = subprocess.run([sys.executable, "-m", "framework.cli", "--help"], capture_output=True,
                            text=True, timeout=300)
    for command in ("backtest", "sweep", "paper", "live", "runner", "data", "exchange", "report",
                    "api", "audit", "events"):
        assert command in listed.stdout


def test_user_strategy_file_backtests_and_a_second_process_reuses_its_compiled_kernels(tmp_path):
    from framework._kernel_cache import numba_cache_root

    path = user_strategy_file(tmp_path / "mine")
    kernels = tmp_path / "kernels"  # a fresh driver folder: the first run must compile
    env = {"TRADPAL_KERNEL_CACHE": str(kernels)}
    args = ("backtest", "--strategy", f"{path}:MyCross", "--data", "BTC_USDT-1d", "--param", "fast=5",
            "--param", "slow=20", "--set", "fees=0.001", "--json")
    first = run_cli(*args, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    expected = Backtest(SmaCross(fast=5, slow=20), "BTC_USDT-1d", fees=0.001).run()
    printed = json.loads(first.stdout)  # stdout is the JSON object and nothing else
    assert list(printed) == ["strategy", "benchmark", "relative"]
    assert_stats_equal(printed["strategy"], expected.stats)
    assert_stats_equal(printed["benchmark"], expected.benchmark_stats)
    assert_stats_equal(printed["relative"], expected.relative_stats)

    # the strategy's kernel module was written to disk and numba cached its machine code under
    # a name of the class (stable across processes)
    assert len(list(kernels.glob("tradpal_kernels_*.py"))) == 1
    cached = [p for p in numba_cache_root().rglob("tradpal_kernels_mycross_*") if p.suffix in (".nbi", ".nbc")]
    assert any(p.suffix == ".nbc" for p in cached), "the strategy's compiled code is not cached"
    before = {p: p.stat().st_mtime_ns for p in [*kernels.rglob("*"), *cached]}

    second = run_cli(*args, cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == printed
    after = {p: p.stat().st_mtime_ns for p in [*kernels.rglob("*"), *numba_cache_root().rglob("tradpal_kernels_mycross_*")]
             if p in before or p.suffix != ".pyc"}
    assert after == before, "the second process compiled again instead of loading the cache"

    # the same file as the positional STRATEGY, and by name through $TRADPAL_STRATEGY_PATH
    env["TRADPAL_STRATEGY_PATH"] = os.pathsep.join([str(tmp_path / "empty"), str(path.parent)])
    (tmp_path / "empty").mkdir()
    listed = run_cli("strategies", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert f"my_cross: Trend following with two simple moving averages of the close. [{path}]" in listed.stdout
    assert "sma_cross: " in listed.stdout
    by_name = run_cli("backtest", "my_cross", *args[3:], cwd=tmp_path, env=env)
    assert by_name.returncode == 0, by_name.stderr
    assert json.loads(by_name.stdout) == printed


def test_copies_of_one_strategy_file_get_their_own_drivers(tmp_path):
    """The strategy's kernels are cached under a name of its class: two copies of a file (two
    module names, same source) must not share a cache entry written for the other."""
    from framework import runner
    from strategies import load_strategy_file

    a = load_strategy_file(f"{user_strategy_file(tmp_path / 'a')}:MyCross")
    b = load_strategy_file(f"{user_strategy_file(tmp_path / 'b')}:MyCross")
    assert a is not b and a.__module__ != b.__module__
    assert runner._module_name(a) != runner._module_name(b)
    assert runner.drivers(a).module._strategy is a and runner.drivers(b).module._strategy is b
    # and loading a file twice gives the same class (one module per file and process)
    assert load_strategy_file(f"{tmp_path / 'a' / 'my_cross.py'}:MyCross") is a


def test_strategy_errors_name_the_option(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = user_strategy_file(tmp_path)
    (tmp_path / "broken.py").write_text("import no_such_module_here\n")
    data = ("--data", "BTC_USDT-1d")
    cases = {
        ("backtest", "--strategy", f"{tmp_path / 'nope.py'}:MyCross", *data): "--strategy: no strategy file",
        ("backtest", "--strategy", f"{path}:Nope", *data): "defines no 'Nope'; Strategy subclasses in it: MyCross",
        ("backtest", "--strategy", f"{path}:FAST", *data): "is not a Strategy subclass",
        ("backtest", f"{tmp_path / 'broken.py'}:X", *data): "STRATEGY: strategy file",
        ("backtest", "sma_cross", "--strategy", f"{path}:MyCross", *data): "give STRATEGY or --strategy, not both",
        ("backtest", "nope", *data): "unknown strategy 'nope'; available: bollinger_reversion",
    }
    for i, (args, message) in enumerate(cases.items()):
        line = error_line(run_cli(*args, cwd=tmp_path)) if i == 0 else error_line_in_process(args, capsys)
        assert message in line, args
    clash = tmp_path / "clash"
    user_strategy_file(clash, "Clash", "sma_cross")
    out = run_cli("strategies", env={"TRADPAL_STRATEGY_PATH": str(clash)})
    assert "strategy name 'sma_cross' is defined twice" in error_line(out)


def test_several_instruments_and_a_date_range(tmp_path):
    out = run_cli("backtest", "sma_cross", "--data", "BTC_USDT-1d", "--data", "ETH_USDT-1d",
                  "--set", "cash_sharing=true", "--start", "2021-01-01", "--end", "2021-12-31",
                  "--out", str(tmp_path / "run.parquet"))
    assert out.returncode == 0, out.stderr
    assert "on BTC_USDT-1d, ETH_USDT-1d (365 bars, 2021-01-01 00:00 to 2021-12-31 00:00 UTC)" in out.stdout
    frames = {name: load_ohlcv(name).loc["2021-01-01":"2021-12-31"] for name in ("BTC_USDT-1d", "ETH_USDT-1d")}
    expected = Backtest(SmaCross(), frames, cash_sharing=True).run()
    assert set(expected.trades["instrument"]) == {"BTC_USDT-1d", "ETH_USDT-1d"}
    check_tables(tmp_path / "run.parquet", expected, pd.read_parquet)

    # a time with an offset is converted to UTC: 02:00+02:00 is midnight UTC
    out = run_cli("backtest", "sma_cross", "--data", "BTC_USDT-1d", "--start", "2021-01-01T02:00+02:00",
                  "--end", "2021-03-01", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["strategy"]["end"] == "2021-03-01T00:00:00+00:00"  # included
    assert json.loads(out.stdout)["strategy"]["start"] == "2021-01-01T00:00:00+00:00"


def check_tables(out: Path, expected, read) -> None:
    """The five files of ``--out NAME.csv|.parquet`` hold the Python API's tables."""
    stem, suffix = out.with_suffix(""), out.suffix
    stats = read(f"{stem}.stats{suffix}")
    assert list(stats["run"]) == ["strategy", "benchmark"]
    for row, want in zip(stats.to_dict("records"), (expected.stats, expected.benchmark_stats)):
        for key, value in want.items():
            if isinstance(value, pd.Timestamp):
                assert pd.Timestamp(row[key]) == value, key
            elif isinstance(value, pd.Timedelta):
                assert pd.Timedelta(row[key]) == value, key
            else:
                np.testing.assert_equal(row[key], value, err_msg=key)
    for name, frame in (("trades", expected.trades), ("orders", expected.orders), ("fills", expected.fills)):
        got = read(f"{stem}.{name}{suffix}")
        assert list(got.columns) == list(frame.columns) and len(got) == len(frame) > 0
        for col in frame:
            if pd.api.types.is_datetime64_any_dtype(frame[col]):
                assert (pd.to_datetime(got[col], utc=True) == frame[col]).all(), col
            elif pd.api.types.is_timedelta64_dtype(frame[col]):
                assert (pd.to_timedelta(got[col]) == frame[col]).all(), col
            elif pd.api.types.is_string_dtype(frame[col]) or frame[col].dtype == object:  # CSV: "" reads as NaN
                np.testing.assert_array_equal(got[col].fillna("").to_numpy(), frame[col].to_numpy(), err_msg=col)
            else:
                np.testing.assert_array_equal(got[col].to_numpy(), frame[col].to_numpy(), err_msg=col)
    equity = read(f"{stem}.equity{suffix}")
    assert (pd.to_datetime(equity["time"], utc=True) == expected.equity.index).all()
    np.testing.assert_array_equal(equity["equity"].to_numpy(), expected.equity.to_numpy())


def test_out_writes_csv_files_and_one_json_document(tmp_path):
    args = ("backtest", "rsi_reversion", "--data", "ETH_USDT-1d", "--set", "fees=0.001")
    expected = Backtest("rsi_reversion", "ETH_USDT-1d", fees=0.001).run()
    out = run_cli(*args, "--out", str(tmp_path / "res" / "run.csv"))
    assert out.returncode == 0, out.stderr
    assert f"wrote {tmp_path / 'res' / 'run.trades.csv'}" in out.stdout
    check_tables(tmp_path / "res" / "run.csv", expected, pd.read_csv)

    out = run_cli(*args, "--out", str(tmp_path / "run.json"))
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "run.json").read_text())
    assert list(doc) == ["stats", "trades", "orders", "fills", "equity"]
    assert_stats_equal(doc["stats"]["strategy"], expected.stats)
    assert_stats_equal(doc["stats"]["benchmark"], expected.benchmark_stats)
    trades = pd.DataFrame(doc["trades"])
    assert len(trades) == len(expected.trades) > 0
    np.testing.assert_array_equal(trades["pnl"], expected.trades["pnl"])
    assert (pd.to_datetime(trades["exit_time"]) == expected.trades["exit_time"]).all()
    assert (pd.to_timedelta(trades["duration"]) == expected.trades["duration"]).all()
    fills = pd.DataFrame(doc["fills"])
    np.testing.assert_array_equal(fills["price"], expected.fills["price"])
    assert list(fills["side"]) == list(expected.fills["side"])
    orders = pd.DataFrame(doc["orders"])
    assert list(orders["client_order_id"]) == list(expected.orders["client_order_id"])
    assert list(orders["status"]) == list(expected.orders["status"])
    equity = pd.DataFrame(doc["equity"])
    np.testing.assert_array_equal(equity["equity"], expected.equity.to_numpy())
    assert (pd.to_datetime(equity["time"]) == expected.equity.index).all()


def test_sweep_sorts_by_a_metric_and_saves_the_best(tmp_path):
    out = run_cli("sweep", "sma_cross", "--data", "BTC_USDT-1d", "--grid", "fast=5:15:5",
                  "--grid", "slow=20,40", "--set", "fees=0.001", "--sort", "sharpe", "--top", "4",
                  "--out", str(tmp_path / "best.csv"))
    assert out.returncode == 0, out.stderr
    # the stop of a range is included: fast 5, 10, 15
    table = sweep("sma_cross", "BTC_USDT-1d", {"fast": [5, 10, 15], "slow": [20, 40]}, fees=0.001)
    assert len(table) == 6
    best = table.sort_values("sharpe", ascending=False).head(4).reset_index(drop=True)
    saved = pd.read_csv(tmp_path / "best.csv")
    assert list(saved.columns) == list(best.columns)
    assert saved[["fast", "slow"]].values.tolist() == best[["fast", "slow"]].values.tolist()
    np.testing.assert_array_equal(saved["sharpe"], best["sharpe"])
    assert (pd.to_timedelta(saved["max_drawdown_duration"]) == best["max_drawdown_duration"]).all()
    assert "sma_cross on BTC_USDT-1d: the best 4 of 6 combination(s) by sharpe, best first" in out.stdout
    # lower is better for volatility: the calmest first; --param fixes a parameter
    out = run_cli("sweep", "sma_cross", "--data", "BTC_USDT-1d", "--grid", "fast=5,10", "--param", "slow=40",
                  "--sort", "ann_volatility", "--out", str(tmp_path / "vol.json"))
    assert out.returncode == 0, out.stderr
    saved = pd.DataFrame(json.loads((tmp_path / "vol.json").read_text()))
    want = sweep("sma_cross", "BTC_USDT-1d", {"fast": [5, 10], "slow": [40]}).sort_values("ann_volatility")
    assert saved[["fast", "slow"]].values.tolist() == want[["fast", "slow"]].values.tolist()
    np.testing.assert_array_equal(saved["ann_volatility"], want["ann_volatility"])


def test_sweep_takes_several_data_and_shows_the_trade_statistics(tmp_path):
    out = run_cli("sweep", "sma_cross", "--data", "BTC_USDT-1d", "--data", "ETH_USDT-1d", "--grid", "fast=5,10",
                  "--param", "slow=40", "--sort", "profit_factor", "--out", str(tmp_path / "both.csv"))
    assert out.returncode == 0, out.stderr
    assert "sma_cross on BTC_USDT-1d, ETH_USDT-1d: 4 combination(s) by profit_factor" in out.stdout
    header = out.stdout.splitlines()[1].split()
    assert header[:3] == ["instrument", "fast", "slow"] and {"win_rate", "profit_factor", "total_trades"} <= set(header)
    want = sweep("sma_cross", ["BTC_USDT-1d", "ETH_USDT-1d"], {"fast": [5, 10], "slow": [40]})
    want = want.sort_values("profit_factor", ascending=False, kind="stable").reset_index(drop=True)
    saved = pd.read_csv(tmp_path / "both.csv")
    assert saved[["instrument", "fast"]].values.tolist() == want[["instrument", "fast"]].values.tolist()
    for key in ("win_rate", "profit_factor", "total_trades"):
        np.testing.assert_array_equal(saved[key], want[key])


def test_grid_values():
    from framework.cli import _grid_values
    from strategies.bollinger_reversion import BollingerReversion

    assert _grid_values(SmaCross, "fast=5:50:5") == ("fast", list(range(5, 55, 5)))
    assert _grid_values(SmaCross, "fast=5:52:5") == ("fast", list(range(5, 55, 5)))  # stop not on a step
    assert _grid_values(SmaCross, "slow=7") == ("slow", [7])
    assert _grid_values(BollingerReversion, "k=0.1:0.5:0.1") == ("k", [0.1, 0.2, 0.3, 0.4, 0.5])
    assert _grid_values(BollingerReversion, "k=1,2.5") == ("k", [1.0, 2.5])


def test_bad_input_is_one_line_naming_the_option(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # --out files, if any were written, land here
    bt = ("backtest", "sma_cross", "--data", "BTC_USDT-1d")
    sw = ("sweep", "sma_cross", "--data", "BTC_USDT-1d", "--grid", "fast=5,10")
    cases = {
        # repeated options never silently drop a value
        (*bt, "--policy", "drop", "--policy", "fill"): "argument --policy: given twice ('drop' and 'fill')",
        (*bt, "--param", "fast=5", "--param", "fast=6"): "--param fast given twice",
        (*bt, "--set", "fees=0.1", "--set", "fees=0.2"): "--set fees given twice",
        (*bt, "--out", "a.csv", "--out", "b.csv"): "argument --out: given twice",
        (*bt, "--data", "data/BTC_USDT-1d.csv"): "--data: two sources for instrument 'BTC_USDT-1d'",
        (*sw, "--grid", "fast=20"): "--grid fast given twice",
        (*sw, "--sort", "sharp"): "--sort 'sharp' is not a statistic of a sweep; valid: total_return, cagr",
        # dates
        (*bt, "--start", "yesterday-ish"): "--start 'yesterday-ish' is not a date/time",
        (*bt, "--end", "2021-13-01"): "--end '2021-13-01' is not a date/time",
        (*bt, "--start", "2022-01-01", "--end", "2021-01-01"): "--start 2022-01-01 is not before --end",
        (*bt, "--start", "2030-01-01"): "--start/--end: 0 bar(s) of BTC_USDT-1d",
        # formats and grids
        (*bt, "--out", "run.xlsx"): "--out run.xlsx: the file name must end in .csv, .json, .parquet",
        (*sw, "--out", "run"): "--out run: the file name must end in",
        ("sweep", "sma_cross", "--data", "BTC_USDT-1d", "--grid", "fast=50:5:5"): "need step > 0 and start <= stop",
        ("sweep", "sma_cross", "--data", "BTC_USDT-1d", "--grid", "fastest=1,2"): "has no parameter 'fastest'",
        (*sw, "--param", "fast=7"): "fast given in both --param and --grid",
        (*sw, "--top", "0"): "--top must be at least 1, got 0",
        (*bt, "--data", "ETH_USDT-1h"): "--data BTC_USDT-1d and --data ETH_USDT-1h have different timestamps",
        # --symbols, --ann-factor, --risk-free
        ("backtest", "sma_cross", "--symbols", "BTC_USDT-1d,,ETH_USDT-1d"): "--symbols 'BTC_USDT-1d,,ETH_USDT-1d': an empty name",
        (*bt, "--symbols", "BTC_USDT-1d"): "--data: two sources for instrument 'BTC_USDT-1d'",
        ("backtest", "sma_cross"): "no data: give --data PATH_OR_NAME (repeatable) or --symbols A,B",
        (*bt, "--ann-factor", "0"): "--ann-factor must be a finite number > 0",
        (*bt, "--ann-factor", "252", "--ann-factor", "365"): "argument --ann-factor: given twice (252.0 and 365.0)",
        (*sw, "--risk-free", "-2"): "--risk-free must be a finite annual rate",
        ("exchange", "serve", "--data", "BTC_USDT-1d", "--balance", "USDT=1", "--balance", "usdt=2"):
            "--balance USDT given twice",
    }
    through_script = {0, 6, 7}  # an argparse error, a --sort error, a date error
    for i, (args, message) in enumerate(cases.items()):
        line = error_line(run_cli(*args, cwd=tmp_path)) if i in through_script else error_line_in_process(args, capsys)
        assert message in line, args


def test_symbols_is_data_several_times_and_json_holds_the_relative_stats(capsys):
    """``--symbols A,B`` (or repeated, or beside ``--data``) is ``--data A --data B``;
    ``--ann-factor`` / ``--risk-free`` reach the statistics; ``--json`` holds alpha, beta, ..."""
    common = ("--set", "cash_sharing=true", "--ann-factor", "252", "--risk-free", "0.04", "--json")
    outputs = []
    for data in (("--data", "BTC_USDT-1d", "--data", "ETH_USDT-1d"), ("--symbols", "BTC_USDT-1d,ETH_USDT-1d"),
                 ("--symbols", "BTC_USDT-1d", "--symbols", "ETH_USDT-1d"), ("--data", "BTC_USDT-1d", "--symbols", "ETH_USDT-1d")):
        assert main(["backtest", "sma_cross", *data, *common]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert all(o == outputs[0] for o in outputs)
    both = {"BTC_USDT-1d": "BTC_USDT-1d", "ETH_USDT-1d": "ETH_USDT-1d"}
    expected = Backtest(SmaCross(), both, cash_sharing=True, ann_factor=252, risk_free=0.04).run()
    assert_stats_equal(outputs[0]["strategy"], expected.stats)
    assert_stats_equal(outputs[0]["relative"], expected.relative_stats)
    assert list(outputs[0]["relative"])[:2] == ["alpha", "beta"]
    default = Backtest(SmaCross(), both, cash_sharing=True).run()
    assert outputs[0]["strategy"]["sharpe"] != default.stats["sharpe"]  # the options changed something


def test_out_holds_the_relative_stats_and_sweep_takes_the_ann_factor(tmp_path, capsys):
    bt = ("backtest", "sma_cross", "--data", "BTC_USDT-1d", "--benchmark", "ETH_USDT-1d", "--risk-free", "0.02")
    expected = Backtest(SmaCross(), "BTC_USDT-1d", benchmark="ETH_USDT-1d", risk_free=0.02).run()
    assert main([*bt, "--out", str(tmp_path / "run.json")]) == 0
    doc = json.loads((tmp_path / "run.json").read_text())
    assert_stats_equal(doc["stats"]["relative"], expected.relative_stats)
    assert main([*bt, "--out", str(tmp_path / "run.csv")]) == 0
    stats = pd.read_csv(tmp_path / "run.stats.csv")
    for key, value in expected.relative_stats.items():
        assert stats.at[0, key] == value and np.isnan(stats.at[1, key]), key  # the strategy's row only
    capsys.readouterr()
    assert main(["sweep", "sma_cross", "--data", "BTC_USDT-1d", "--grid", "fast=5,10", "--ann-factor", "252",
                 "--risk-free", "0.03", "--out", str(tmp_path / "sw.csv")]) == 0
    want = sweep("sma_cross", "BTC_USDT-1d", {"fast": [5, 10]}, ann_factor=252, risk_free=0.03)
    saved = pd.read_csv(tmp_path / "sw.csv").sort_values("fast")
    np.testing.assert_array_equal(saved["sharpe"], want.sort_values("fast")["sharpe"])


def test_fills_csv_names_the_unified_symbol_a_dataset_name_encodes(tmp_path, capsys):
    frame = load_ohlcv("BTC_USDT-1d").iloc[:300]
    frame.to_csv(tmp_path / "mine.csv", index_label="timestamp")
    frame.to_csv(tmp_path / "BTC_USDT_USDT-1d.csv", index_label="timestamp")
    for data, symbol in (("BTC_USDT-1d", "BTC/USDT"), (str(tmp_path / "mine.csv"), "mine"),
                         (str(tmp_path / "BTC_USDT_USDT-1d.csv"), "BTC/USDT:USDT")):
        assert main(["backtest", "sma_cross", "--data", data, "--end", str(frame.index[-1]),
                     "--fills-out", str(tmp_path / "f.csv")]) == 0
        fills = pd.read_csv(tmp_path / "f.csv")
        assert len(fills) > 0 and set(fills["symbol"]) == {symbol}, data


def test_a_bundled_dataset_loads_without_a_warning_and_a_copy_of_it_warns(tmp_path):
    """BTC_USDT-1h has three reviewed, real spikes (data/README.md): loading the bundled file
    prints nothing; the same rows from another file are reported as the validator finds them."""
    out = run_cli("backtest", "sma_cross", "--data", "BTC_USDT-1h", "--end", "2021-01-01", "--json")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    (tmp_path / "BTC_USDT-1h.csv").write_bytes((Path(__file__).resolve().parents[1] / "data" / "BTC_USDT-1h.csv").read_bytes())
    out = run_cli("backtest", "sma_cross", "--data", str(tmp_path / "BTC_USDT-1h.csv"), "--end", "2021-01-01", "--json")
    assert out.returncode == 0 and "3 warning(s)" in out.stderr and "spike" in out.stderr
