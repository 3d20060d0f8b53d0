"""TradPal core: streaming numba indicators, one simulation step, strategies, backtests.

    from framework import Backtest
    result = Backtest("sma_cross", "BTC_USDT-1d", fees=0.001).run()
    print(result.stats_table())
"""

from framework._kernel_cache import use_versioned_numba_cache

use_versioned_numba_cache()  # before any kernel module is imported

from framework.backtest import Backtest, BacktestResult  # noqa: E402
from framework.data import load_ohlcv, validate_ohlcv  # noqa: E402
from framework.runner import BarStepper  # noqa: E402
from framework.settings import SimSettings  # noqa: E402
from framework.strategy import Param, Strategy  # noqa: E402

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
