"""The tradpal command line."""

import re
import subprocess
import sys
from pathlib import Path

from framework.cli import main


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
    assert re.search(r"\n\d+ fills, \d+ trades; ran in", out.stdout)

    # errors come back as one line on stderr and exit code 2, through the script as well
    out = subprocess.run([str(script), "backtest", "sma_cross", "--data", "BTC_USDT-1d", "--param", "fast=0"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 2
    assert "parameter 'fast' must be an integer in [1, 100000], got 0" in out.stderr
