"""The strategies that ship with TradPal, by name. Add yours to ``STRATEGIES`` or pass the class."""

from __future__ import annotations

from framework.strategy import Strategy
from strategies.bollinger_reversion import BollingerReversion
from strategies.donchian_breakout import DonchianBreakout
from strategies.macd_trend import MacdTrend
from strategies.rsi_reversion import RsiReversion
from strategies.sma_cross import SmaCross

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (SmaCross, RsiReversion, MacdTrend, BollingerReversion, DonchianBreakout)
}


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class registered under ``name``; the error lists the valid names."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"unknown strategy {name!r}; available: {', '.join(sorted(STRATEGIES))}"
        ) from None
