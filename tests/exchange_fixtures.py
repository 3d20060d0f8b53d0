"""Shared fixtures: a local exchange on a free loopback port replaying synthetic candles."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

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


def raw_request(ex, method, path, params, *, key=API_KEY, secret=SECRET, tamper=False,
                in_body=False):
    """A signed request built by hand (independent of ccxt's signing code). ``params`` is a
    dict or a list of pairs (to repeat a name); values are sent as given, so malformed
    numbers reach the server verbatim. ``in_body``: send them form-encoded in a POST body."""
    pairs = list(params.items()) if isinstance(params, dict) else list(params)
    if not any(k == "timestamp" for k, _ in pairs):
        pairs.append(("timestamp", int(time.time() * 1000)))
    query = urlencode(pairs)
    sig = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    if tamper:
        query = query.replace("limit=5", "limit=6")
    headers = {"X-MBX-APIKEY": key} if key else {}
    if in_body:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        req = urllib.request.Request(f"{ex.url}{path}", method=method, headers=headers,
                                     data=f"{query}&signature={sig}".encode())
    else:
        req = urllib.request.Request(f"{ex.url}{path}?{query}&signature={sig}", method=method,
                                     headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def control(ex, method, path, body=None, *, token: str | None = None):
    """A call to the control plane ``/_tradpal/<path>`` with JSON and the exchange's token."""
    req = urllib.request.Request(f"{ex.url}/_tradpal/{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json",
                                          "X-TradPal-Token": token or ex.control_token})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def write_csv(folder: Path, frame: pd.DataFrame, name: str = "BTC_USDT-1m.csv") -> Path:
    """``frame`` as a candle file the ``exchange serve --data`` option reads."""
    out = frame.copy()
    out.index = out.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.to_csv(folder / name, index_label="timestamp")
    return folder / name


@contextmanager
def serve_cli(*options: str, env: dict | None = None) -> Iterator[tuple[str, list[str]]]:
    """Run ``exchange serve OPTIONS`` in a subprocess; yield its URL and the lines it printed
    up to the control token. Through ``framework.data_cli`` only, so the process does not
    import (and compile) the numba core."""
    script = ("import argparse, sys; from framework import data_cli; p = argparse.ArgumentParser(); "
              "data_cli.register(p.add_subparsers(dest='c')); a = p.parse_args(sys.argv[1:]); "
              "sys.exit(a.func(a))")
    proc = subprocess.Popen([sys.executable, "-c", script, "exchange", "serve", *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env if env is not None else dict(os.environ),
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    printed: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [printed.put(ln) for ln in proc.stdout], daemon=True).start()
    try:
        lines: list[str] = []
        while not lines or not lines[-1].startswith("control token: "):
            try:  # a generous wait (a cold kernel cache compiles on import), never a hang
                lines.append(printed.get(timeout=120))
            except queue.Empty:
                raise AssertionError(f"no control token printed; got {lines}") from None
        url = next(ln for ln in lines if "listening on " in ln).split("listening on ")[1].split()[0]
        yield url, lines
    finally:
        proc.terminate()
        proc.wait(timeout=10)


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
