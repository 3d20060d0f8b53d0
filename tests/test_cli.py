"""The tradpal command line."""

import subprocess
import sys

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


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "framework.cli", "strategies"], capture_output=True, text=True, check=True)
    assert "sma_cross" in out.stdout
