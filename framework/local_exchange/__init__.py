"""A local, replaying exchange that speaks the part of Binance's spot REST API ccxt uses.

    from framework.local_exchange import LocalExchange, ccxt_client

    with LocalExchange("BTC_USDT-1h", start="2021-01-01", api_keys={"k": "s"}) as ex:
        binance = ccxt_client(ex.url, api_key="k", secret="s")
        binance.fetch_ohlcv("BTC/USDT", "1h", limit=10)
        ex.clock.step(3)                      # three candles later
        ex.faults.rate_limit(retry_after=1)   # the next request gets HTTP 429

Modules: :mod:`.clock` (replay time), :mod:`.market` (candles and intra-candle price path),
:mod:`.engine` (accounts, orders, matching), :mod:`.faults`, :mod:`.auth`, :mod:`.server`.
"""

from __future__ import annotations

from typing import Any

from .clock import ReplayClock
from .engine import ApiError
from .faults import Faults
from .market import MarketData
from .server import LocalExchange, RequestRecord


def ccxt_client(url: str, *, api_key: str | None = None, secret: str | None = None,
                **config: Any):
    """A ccxt ``binance`` instance whose API URLs all point at ``url`` (the local exchange)."""
    from framework.exchange import create_exchange

    creds = {"apiKey": api_key, "secret": secret} if api_key else False
    return create_exchange("binance", url=url, credentials=creds, config=config)


__all__ = ["LocalExchange", "ReplayClock", "Faults", "MarketData", "RequestRecord", "ApiError",
           "ccxt_client"]
