"""SMA crossover written with pandas: the vectorised twin of ``sma_cross`` (same fills).

Run it like any strategy: ``tradpal backtest --strategy strategies/sma_cross_vec.py:SmaCrossVec
--data BTC_USDT-1d``, or ``tradpal paper --strategy ...``. ``framework.indicators.sma`` is the
numba streaming SMA that ``SmaCross`` updates bar by bar, so both give the same numbers to the
last bit; ``df.close.rolling(n).mean()`` works as well (pandas sums differently, so a crossing
within rounding of zero may fall one bar apart).
"""

from __future__ import annotations

import pandas as pd

from framework.indicators import sma
from framework.strategy import Param
from framework.vector import VectorStrategy


class SmaCrossVec(VectorStrategy):
    """Trend following with two simple moving averages of the close, computed over the frame."""

    name = "sma_cross_vec"
    fast = Param(10, low=1, high=100_000, doc="fast SMA window (bars)")
    slow = Param(30, low=2, high=100_000, doc="slow SMA window (bars)")

    def check(self) -> None:
        self.require_less("fast", "slow")

    def signals(self, df: pd.DataFrame, params) -> pd.DataFrame:
        diff = sma(df.close, params.fast) - sma(df.close, params.slow)
        prev = diff.shift(1)
        return pd.DataFrame({"entries": (prev <= 0) & (diff > 0),
                             "short_entries": (prev >= 0) & (diff < 0)})
