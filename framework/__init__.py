"""TradPal core: streaming numba indicators, one simulation step, strategies, backtests.

    from framework import Backtest
    result = Backtest("sma_cross", "BTC_USDT-1d", fees=0.001).run()
    print(result.stats_table())
"""

from framework.backtest import Backtest, BacktestResult
from framework.data import load_ohlcv, validate_ohlcv
from framework.runner import BarStepper
from framework.settings import SimSettings
from framework.strategy import Param, Strategy

__all__ = [
    "Backtest",
    "BacktestResult",
    "BarStepper",
    "Param",
    "SimSettings",
    "Strategy",
    "load_ohlcv",
    "validate_ohlcv",
]
