"""The local exchange through the real ccxt library: auth, market data, orders, faults, clock."""

from __future__ import annotations

import argparse
import os
import time

import ccxt
import pandas as pd
import pytest

from framework import data_cli
from framework.local_exchange import LocalExchange
from tests.exchange_fixtures import (  # noqa: F401
    API_KEY,
    BTC,
    ETH,
    SECRET,
    START,
    client,
    control,
    exchange,
    ms,
    raw_request,
    serve_cli,
    write_csv,
)

MIN = 60_000

# A hand-made market whose fills can be worked out on paper. Inside a candle the price goes
# open -> low -> high -> close when close >= open, else open -> high -> low -> close.
TOY = pd.DataFrame(
    [[100.0, 101.0, 99.0, 100.5], [100.5, 102.0, 100.0, 101.5], [101.5, 101.8, 98.0, 98.5],
     [90.0, 92.0, 89.0, 91.0], [91.0, 91.5, 90.5, 91.2], [96.0, 97.0, 95.5, 96.5],
     [96.5, 96.8, 96.2, 96.6], [96.6, 96.9, 96.3, 96.7]],
    columns=["open", "high", "low", "close"],
    index=pd.date_range(START, periods=8, freq="1min", name="timestamp"),
).assign(volume=10.0)


@pytest.fixture
def toy():
    """Replay clock at the open of candle 1 (price 100.5); 10 000 USDT; no fees or spread."""
    ex = LocalExchange({"BTC/USDT": TOY}, start=START + pd.Timedelta(minutes=1),
                       api_keys={API_KEY: SECRET}, fee_rate=0.0).start()
    yield ex, client(ex)
    ex.stop()


def trades_of(c, order_id):
    return [t for t in c.fetch_my_trades("BTC/USDT") if t["order"] == order_id]


# --- authentication --------------------------------------------------------------------------

def test_signature_checked_like_binance(exchange):
    status, body = raw_request(exchange, "GET", "/api/v3/myTrades", {"symbol": "BTCUSDT", "limit": 5})
    assert (status, body) == (200, [])
    assert raw_request(exchange, "GET", "/api/v3/myTrades", {"symbol": "BTCUSDT", "limit": 5},
                       tamper=True) == (400, {"code": -1022, "msg": "Signature for this request is not valid."})
    assert raw_request(exchange, "GET", "/api/v3/account", {}, key=None)[1]["code"] == -2014
    assert raw_request(exchange, "GET", "/api/v3/account", {}, key="other")[0:2] == (
        401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})
    stale = raw_request(exchange, "GET", "/api/v3/account", {"timestamp": int(time.time() * 1000) - 60_000})
    assert stale == (400, {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."})


def test_ccxt_with_a_wrong_secret_is_rejected(exchange):
    bad = client(exchange, secret="wrong")
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        bad.fetch_balance()
    rejected = exchange.requests()[-1]  # ccxt's first signed call (load_markets' wallet query)
    assert rejected.status == 400 and "timestamp" in rejected.params
    assert "signature" not in rejected.params  # never kept
    assert client(exchange).fetch_balance()["free"]["USDT"] == 10_000


# --- market data -----------------------------------------------------------------------------

def test_markets_tickers_and_book(exchange):
    c = client(exchange)
    markets = c.load_markets()
    assert {"BTC/USDT", "ETH/USDT"} <= set(markets) and markets["BTC/USDT"]["spot"]
    exchange.clock.advance_to(ms(START) + 2000 * MIN)  # only moves forward: stays at the end
    assert c.fetch_time() == ms(BTC.index[-1]) + MIN
    last = BTC["close"].iloc[-1]
    assert c.fetch_ticker("BTC/USDT")["last"] == last
    assert set(c.fetch_tickers()) == {"BTC/USDT", "ETH/USDT"}
    book = c.fetch_order_book("BTC/USDT", 5)
    assert book["bids"][0][0] <= last <= book["asks"][0][0] and len(book["bids"]) == 5


def test_klines_partial_candle_and_aggregation():
    now = START + pd.Timedelta(minutes=1002, seconds=40)  # 2 min 40 s into a 5-minute bin
    with LocalExchange({"BTC/USDT": BTC}, start=now, api_keys={API_KEY: SECRET}) as ex:
        c = client(ex)
        one = c.fetch_ohlcv("BTC/USDT", "1m", since=ms(START) + 100 * MIN, limit=1000)
        closed = BTC.iloc[100:1002]
        assert one[:-1] == [[ms(t), *row] for t, row in zip(closed.index, closed.to_numpy().tolist())]
        last = one[-1]  # the open candle: its open is final, the rest so far
        assert last[0] == ms(START) + 1002 * MIN and last[1] == BTC["open"].iloc[1002]
        assert BTC["low"].iloc[1002] <= last[3] <= last[2] <= BTC["high"].iloc[1002]
        five = c.fetch_ohlcv("BTC/USDT", "5m", since=ms(START), limit=1000)
        expected = BTC.iloc[:1000].resample("5min").agg(
            {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
        for got, (t, row) in zip(five[:200], expected.iterrows()):
            assert got[0] == ms(t) and got[1:5] == row.iloc[:4].tolist()
            assert got[5] == pytest.approx(row["volume"], rel=1e-12)
        partial = five[200]  # bin 16:40 holds two closed candles and the open one
        assert partial[1] == BTC["open"].iloc[1000] and len(five) == 201
        assert partial[2] >= BTC["high"].iloc[1000:1002].max()
        with pytest.raises(ccxt.BadRequest, match="-1120"):
            c.fetch_ohlcv("BTC/USDT", "1M")


# --- orders ------------------------------------------------------------------------------------

def test_market_order_fills_at_the_current_open_with_fees():
    with LocalExchange({"BTC/USDT": TOY}, start=START + pd.Timedelta(minutes=1),
                       api_keys={API_KEY: SECRET}, fee_rate=0.001) as ex:
        c = client(ex)
        order = c.create_order("BTC/USDT", "market", "buy", 2)
        assert order["status"] == "closed" and order["average"] == 100.5 and order["filled"] == 2
        assert order["fee"] == {"currency": "BTC", "cost": 0.002}
        bal = c.fetch_balance()
        assert bal["BTC"]["free"] == pytest.approx(1.998) and bal["USDT"]["free"] == pytest.approx(10_000 - 201)
        sell = c.create_order("BTC/USDT", "market", "sell", 1)
        assert sell["average"] == 100.5 and sell["fee"]["cost"] == pytest.approx(0.1005)


def test_resting_limit_fills_at_its_price_or_at_a_gap_open(toy):
    ex, c = toy
    near = c.create_order("BTC/USDT", "limit", "buy", 1, 100.2)  # the path dips to 100 in candle 1
    far = c.create_order("BTC/USDT", "limit", "buy", 1, 95)  # candle 3 opens at 90: gap
    assert near["status"] == far["status"] == "open"
    assert c.fetch_balance()["USDT"]["used"] == pytest.approx(100.2 + 95)
    ex.clock.step(1)
    near = c.fetch_order(near["id"], "BTC/USDT")
    assert near["status"] == "closed" and near["average"] == 100.2
    (trade,) = trades_of(c, near["id"])
    assert ms(START) + MIN < trade["timestamp"] < ms(START) + 2 * MIN and trade["takerOrMaker"] == "maker"
    assert c.fetch_order(far["id"], "BTC/USDT")["status"] == "open"
    ex.clock.step(1)  # candle 2 falls only to 98; then candle 3 opens at 90
    far = c.fetch_order(far["id"], "BTC/USDT")
    assert far["status"] == "closed" and far["average"] == 90.0
    assert trades_of(c, far["id"])[0]["timestamp"] == ms(START) + 3 * MIN
    bal = c.fetch_balance()
    assert bal["BTC"]["free"] == 2 and bal["USDT"]["free"] == pytest.approx(10_000 - 100.2 - 90)


def test_stop_and_take_profit_orders(toy):
    ex, c = toy
    c.create_order("BTC/USDT", "market", "buy", 3)
    stop = c.create_order("BTC/USDT", "market", "sell", 1, params={"stopLossPrice": 99})
    gap_stop = c.create_order("BTC/USDT", "market", "sell", 1, params={"stopLossPrice": 95})
    take = c.create_order("BTC/USDT", "market", "sell", 1, params={"takeProfitPrice": 101.9})
    assert [o["info"]["type"] for o in (stop, gap_stop, take)] == ["STOP_LOSS", "STOP_LOSS", "TAKE_PROFIT"]
    ex.clock.step(1)  # candle 1 reaches 102: the take-profit
    assert c.fetch_order(take["id"], "BTC/USDT")["average"] == 101.9
    assert c.fetch_order(stop["id"], "BTC/USDT")["status"] == "open"
    ex.clock.step(1)  # candle 2 falls to 98: the 99 stop
    assert c.fetch_order(stop["id"], "BTC/USDT")["average"] == 99
    ex.clock.step(1)  # candle 3 opens at 90, through the 95 stop
    assert c.fetch_order(gap_stop["id"], "BTC/USDT")["average"] == 90
    assert c.fetch_balance()["BTC"]["total"] == pytest.approx(0)


def test_stop_limit_becomes_a_limit_order(toy):
    ex, c = toy
    c.create_order("BTC/USDT", "market", "buy", 1)
    o = c.create_order("BTC/USDT", "limit", "sell", 0.5, 98.8, params={"stopLossPrice": 99})
    high = c.create_order("BTC/USDT", "limit", "sell", 0.5, 99.5, params={"stopLossPrice": 99})
    assert o["info"]["type"] == "STOP_LOSS_LIMIT"
    ex.clock.step(2)  # both trigger at 99 in candle 2; a sell limit at 98.8 is marketable there
    o = c.fetch_order(o["id"], "BTC/USDT")
    assert o["status"] == "closed" and o["average"] == 99
    ex.clock.step(5)  # the price never comes back to 99.5
    assert c.fetch_order(high["id"], "BTC/USDT")["status"] == "open"


def test_rejections_speak_binance(toy):
    ex, c = toy
    with pytest.raises(ccxt.InvalidOrder, match="Stop price would trigger immediately"):
        c.create_order("BTC/USDT", "market", "buy", 1, params={"stopLossPrice": 100})
    with pytest.raises(ccxt.InvalidOrder, match="immediately match and take"):
        c.create_order("BTC/USDT", "limit", "buy", 1, 101, params={"postOnly": True})
    with pytest.raises(ccxt.InsufficientFunds):
        c.create_order("BTC/USDT", "market", "buy", 1000)
    with pytest.raises(ccxt.OrderNotFound):
        c.fetch_order("999", "BTC/USDT")


def test_open_orders_cancel_and_history(toy):
    ex, c = toy
    o = c.create_order("BTC/USDT", "limit", "buy", 2, 50)
    assert [x["id"] for x in c.fetch_open_orders("BTC/USDT")] == [o["id"]]
    assert c.fetch_balance()["USDT"]["used"] == 100
    canceled = c.cancel_order(o["id"], "BTC/USDT")
    assert canceled["status"] == "canceled"
    assert c.fetch_open_orders("BTC/USDT") == [] and c.fetch_balance()["USDT"]["free"] == 10_000
    with pytest.raises(ccxt.OrderNotFound):
        c.cancel_order(o["id"], "BTC/USDT")
    assert [x["status"] for x in c.fetch_orders("BTC/USDT")] == ["canceled"]


# --- faults ---------------------------------------------------------------------------------

def test_lost_order_response_is_recoverable_by_client_order_id(toy):
    ex, c = toy
    ex.faults.lose_response()
    with pytest.raises(ccxt.NetworkError):
        c.create_order("BTC/USDT", "limit", "buy", 1, 50, params={"clientOrderId": "my-1"})
    assert len(ex.requests("/api/v3/order", "POST")) == 1  # it did arrive...
    found = c.fetch_order("", "BTC/USDT", params={"clientOrderId": "my-1"})  # ...and was placed
    assert found["status"] == "open" and found["price"] == 50
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):  # a blind retry is refused
        c.create_order("BTC/USDT", "limit", "buy", 1, 50, params={"clientOrderId": "my-1"})
    assert len(c.fetch_open_orders("BTC/USDT")) == 1


def test_partial_fills(toy):
    ex, c = toy
    ex.faults.partial_fills(0.5)
    market = c.create_order("BTC/USDT", "market", "buy", 2)
    assert market["status"] == "expired" and market["filled"] == 1  # Binance: rest expires
    limit = c.create_order("BTC/USDT", "limit", "buy", 1, 100.2)
    ex.clock.step(1)
    limit = c.fetch_order(limit["id"], "BTC/USDT")
    assert (limit["status"], limit["filled"], limit["info"]["status"]) == ("open", 0.5, "PARTIALLY_FILLED")
    ex.clock.step(1)  # candle 2 crosses 100.2 again
    limit = c.fetch_order(limit["id"], "BTC/USDT")
    assert limit["status"] == "closed" and limit["filled"] == 1 and len(trades_of(c, limit["id"])) == 2


def test_request_faults_reach_ccxt_as_network_errors(exchange):
    c = client(exchange)
    c.load_markets()
    exchange.faults.http_error(503, count=1).drop_connection(count=1).rate_limit(retry_after=3, count=1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        c.fetch_ticker("BTC/USDT")
    with pytest.raises(ccxt.NetworkError):
        c.fetch_ticker("BTC/USDT")
    with pytest.raises(ccxt.NetworkError) as err:  # 429: DDoSProtection, a NetworkError
        c.fetch_ticker("BTC/USDT")
    assert "-1003" in str(err.value) and c.last_response_headers["Retry-After"] == "3"
    assert c.fetch_ticker("BTC/USDT")["last"] == BTC["close"].iloc[-1]  # faults used up
    exchange.faults.latency(0.2, count=1, path="/api/v3/ticker")
    started = time.monotonic()
    c.fetch_ticker("BTC/USDT")
    assert time.monotonic() - started >= 0.2
    exchange.faults.http_error(500, count=None)
    for _ in range(3):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            c.fetch_time()
    exchange.faults.clear()
    assert c.fetch_time() > 0


# --- clock and control ----------------------------------------------------------------------

def test_clock_modes_and_http_control():
    start = START + pd.Timedelta(minutes=10)
    with LocalExchange({"BTC/USDT": BTC}, start=start, clock="fast", api_keys={API_KEY: SECRET}) as ex:
        c = client(ex)
        c.load_markets()
        t0 = c.fetch_time()
        c.fetch_ohlcv("BTC/USDT", "1m", limit=2)
        c.fetch_ohlcv("BTC/USDT", "1m", limit=2)
        assert c.fetch_time() == t0 + 2 * MIN  # one candle per market-data request
        got = c.fetch_ohlcv("BTC/USDT", "1m", since=t0 - 10 * MIN, limit=30)  # ... or what it asks for
        assert c.fetch_time() == t0 + 20 * MIN and [r[0] for r in got] == [t0 + k * MIN for k in range(-10, 20)]
        status = control(ex, "POST", "clock", {"mode": "stepped"})
        assert status["mode"] == "stepped"
        c.fetch_ohlcv("BTC/USDT", "1m", limit=2)
        assert c.fetch_time() == t0 + 20 * MIN
        assert control(ex, "POST", "clock", {"step": 3})["now"] == t0 + 23 * MIN
        control(ex, "POST", "clock", {"mode": "realtime", "speed": 60_000})  # 1 s = 1000 min
        time.sleep(0.05)
        assert c.fetch_time() >= t0 + 5 * MIN + 40 * MIN
        control(ex, "POST", "faults", {"kind": "http_error", "status": 503, "count": 1})
        with pytest.raises(ccxt.ExchangeNotAvailable):
            c.fetch_ticker("BTC/USDT")
        assert control(ex, "DELETE", "faults")["rules"] == []
        seen = control(ex, "GET", "requests?path=/api/v3/klines")
        assert len(seen) == 4 and all("signature" not in r["params"] for r in seen)


def test_exchange_serve_cli(tmp_path):
    csv = write_csv(tmp_path, BTC.iloc[:300])
    env = dict(os.environ, TRADPAL_LOCAL_API_KEY=API_KEY, TRADPAL_LOCAL_SECRET=SECRET)
    with serve_cli("--data", str(csv), "--port", "0", "--clock", "stepped", env=env) as (url, lines):
        assert lines[0].startswith("local exchange listening on http://127.0.0.1:")
        c = client(type("E", (), {"url": url})())
        candles = c.fetch_ohlcv("BTC/USDT", "1m", since=ms(START), limit=1000)
        assert len(candles) == 300 and candles[-1][4] == BTC["close"].iloc[299]
        assert c.fetch_balance()["USDT"]["free"] == 10_000


def test_serve_cli_rejects_missing_data(capsys):
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["exchange", "serve", "--data", "/nonexistent/BTC_USDT-1m.csv", "--port", "0"])
    assert args.func(args) == 2
    assert "no data file" in capsys.readouterr().err
