"""Shared fixtures: a local exchange on a free loopback port replaying synthetic candles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from framework.local_exchange import LocalExchange, ccxt_client

API_KEY, SECRET = "test-key", "test-secret"
N_CANDLES = 3000
START = pd.Timestamp("2024-01-01", tz="UTC")


def synthetic(n: int = N_CANDLES, seed: int = 1, price: float = 40_000.0, freq: str = "1min") -> pd.DataFrame:
    """A 24/7 random walk with gaps between candles (open != previous close), full floats."""
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.r_[price, close[:-1]] * (1 + rng.normal(0, 0.0003, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.002, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.002, n))
    idx = pd.date_range(START, periods=n, freq=freq, name="timestamp", unit="ns")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                         "volume": rng.uniform(1, 5, n)}, index=idx)


BTC = synthetic(seed=1)
ETH = synthetic(seed=2, price=2_000.0).iloc[500:]  # ETH starts 500 minutes later


def ms(ts) -> int:
    return int(pd.Timestamp(ts).value // 1_000_000)


@pytest.fixture
def exchange():
    """Clock stopped at the end of the data: every candle is closed."""
    ex = LocalExchange({"BTC/USDT": BTC, "ETH/USDT": ETH}, api_keys={API_KEY: SECRET}).start()
    yield ex
    ex.stop()


def client(ex: LocalExchange, *, secret: str = SECRET, rate_limit_ms: float = 1, **config):
    """ccxt binance pointed at ``ex``; a 1 ms rate limit keeps the tests fast."""
    c = ccxt_client(ex.url, api_key=API_KEY, secret=secret, **config)
    c.rateLimit = rate_limit_ms
    return c


def after_calls(obj, method: str, n: int, action, *, setattr=setattr) -> None:
    """Run ``action()`` once, just before the ``n + 1``-th call of ``obj.<method>``: a fault
    switched on after ``n`` successful requests (every request still goes through ccxt and
    HTTP to the local exchange). ``obj`` may be a ccxt client, or its class with
    ``setattr=monkeypatch.setattr`` so that the patch is undone after the test."""
    real = getattr(obj, method)
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n + 1:
            action()
        return real(*args, **kwargs)

    setattr(obj, method, wrapped)
