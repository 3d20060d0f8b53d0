"""Hostile probes of the local exchange (issue 6, "Hardening"): malformed numbers and requests,
a burst of concurrent clients, a lost order response, bad serve options, the control plane, key
files and the request log. ccxt where a client library would be used; raw HTTP (urllib,
http.client, sockets) where the request itself is malformed."""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import math
import os
import socket
import stat
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import ccxt
import pandas as pd
import pytest

from framework import data_cli
from framework._kernel_cache import tradpal_cache_root
from framework.local_exchange import LocalExchange
from tests.exchange_fixtures import (  # noqa: F401
    API_KEY,
    BTC,
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

ORDER = "/api/v3/order"
DECIMAL = r"^([0-9]{1,20})(\.[0-9]{1,20})?$"  # Binance's legal range for decimal parameters
CLIENT_ID = r"^[\.A-Z\:/a-z0-9_-]{1,36}$"  # Binance's legal range (the core's ids have dots)


def illegal(name: str, legal: str = DECIMAL) -> tuple[int, dict]:
    return 400, {"code": -1100, "msg": f"Illegal characters found in parameter '{name}'; legal range is '{legal}'."}


def filter_failure(name: str) -> tuple[int, dict]:
    return 400, {"code": -1013, "msg": f"Filter failure: {name}"}


def order(ex, **params):
    """POST /api/v3/order signed by hand, parameters sent verbatim in the body."""
    return raw_request(ex, "POST", ORDER, {"symbol": "BTCUSDT", "side": "BUY", **params}, in_body=True)


def untouched(ex) -> None:
    """The account still holds its starting 10,000 USDT and no order was created."""
    bal = client(ex).fetch_balance()  # raised on NaN balances before the fix
    assert (bal["USDT"]["free"], bal["USDT"]["used"], bal["USDT"]["total"]) == (10_000, 0, 10_000)
    assert raw_request(ex, "GET", "/api/v3/allOrders", {"symbol": "BTCUSDT"}) == (200, [])


# --- 1. non-finite and non-positive numbers ------------------------------------------------

# for each numeric parameter: an order type that reads it, with valid other parameters
NUMERIC = {
    "quantity": {"type": "MARKET"},
    "quoteOrderQty": {"type": "MARKET"},
    "price": {"type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01"},
    "stopPrice": {"type": "STOP_LOSS_LIMIT", "timeInForce": "GTC", "quantity": "0.01", "price": "30000"},
}


def test_non_finite_or_negative_numbers_are_rejected_and_leave_the_account_intact(exchange):
    for name, base in NUMERIC.items():
        for bad in ("nan", "NaN", "inf", "-inf", "Infinity", "-1", "1e-20", "0.000_1", " 1", "0x10"):
            assert order(exchange, **base, **{name: bad}) == illegal(name), (name, bad)
    untouched(exchange)


# --- 3. filters and parameter formats --------------------------------------------------------

def test_exchange_info_filters_are_enforced(exchange):
    market = client(exchange).load_markets()["BTC/USDT"]
    assert market["limits"]["amount"]["min"] == 1e-8 and market["limits"]["cost"]["min"] == 5
    price = float(BTC["close"].iloc[-1])  # about 39,400: 0.0001 BTC is a 3.9 USDT order
    limit = {"type": "LIMIT", "timeInForce": "GTC"}
    cases = [
        ({"type": "MARKET", "quantity": "0.00000000000000000001"},
         (400, {"code": -1111, "msg": "Parameter 'quantity' has too much precision."})),
        ({"type": "MARKET", "quantity": "0"}, filter_failure("LOT_SIZE")),
        ({"type": "MARKET", "quantity": "99999999999999999999.99999999"}, filter_failure("LOT_SIZE")),
        ({**limit, "quantity": "0.01", "price": "99999999999999999999.99999999"}, filter_failure("PRICE_FILTER")),
        ({**limit, "quantity": "9000000001", "price": "1"}, filter_failure("LOT_SIZE")),
        ({"type": "MARKET", "quantity": "9000000001"}, filter_failure("LOT_SIZE")),
        ({**limit, "quantity": "1", "price": "0.000000001"},
         (400, {"code": -1111, "msg": "Parameter 'price' has too much precision."})),
        ({**limit, "quantity": "1", "price": "0"}, filter_failure("PRICE_FILTER")),
        ({**limit, "quantity": "0.000001", "price": "1000000001"}, filter_failure("PRICE_FILTER")),
        ({"type": "STOP_LOSS", "quantity": "0.01", "stopPrice": "0"}, filter_failure("PRICE_FILTER")),
        ({**limit, "quantity": "0.0001", "price": "30000"}, filter_failure("MIN_NOTIONAL")),
        ({"type": "MARKET", "quantity": "0.0001"}, filter_failure("MIN_NOTIONAL")),
        ({"type": "MARKET", "quoteOrderQty": "4.99"}, filter_failure("MIN_NOTIONAL")),
        ({**limit, "timeInForce": "FOREVER", "quantity": "0.01", "price": "30000"},
         (400, {"code": -1115, "msg": "Invalid timeInForce."})),
        ({"type": "LIMIT", "quantity": "0.01", "price": "30000"}, (400, {
            "code": -1102, "msg": "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed."})),
        ({"type": "MARKET", "quantity": "0.01", "timeInForce": "GTC"},
         (400, {"code": -1106, "msg": "Parameter 'timeInForce' sent when not required."})),
        ({"type": "MARKET", "quantity": "0.01", "price": "30000"},
         (400, {"code": -1106, "msg": "Parameter 'price' sent when not required."})),
        ({"type": "MARKET", "quantity": "0.01", "newClientOrderId": "x" * 10_000},
         illegal("newClientOrderId", CLIENT_ID)),
        ({"type": "MARKET", "quantity": "0.01", "newClientOrderId": "no spaces!"},
         illegal("newClientOrderId", CLIENT_ID)),
        ({"type": "MARKET", "quantity": "0.01", "reduceOnly": "true"}, (400, {
            "code": -1104, "msg": "Not all sent parameters were read; read '6' parameter(s) but was sent '7'."})),
        ({"type": "MARKET", "quantity": "0.01", "recvWindow": "60001"},
         (400, {"code": -1131, "msg": "recvWindow must be less than 60000"})),
    ]
    for params, expected in cases:
        assert order(exchange, **params) == expected, params
    twice = [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.01"),
             ("quantity", "100")]
    assert raw_request(exchange, "POST", ORDER, twice, in_body=True) == (
        400, {"code": -1101, "msg": "Duplicate values for a parameter detected."})
    test_order = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET"}  # checked, never placed
    assert raw_request(exchange, "POST", "/api/v3/order/test", {**test_order, "quantity": "nan"},
                       in_body=True) == illegal("quantity")
    assert raw_request(exchange, "POST", "/api/v3/order/test", {**test_order, "quantity": "0.0001"},
                       in_body=True) == filter_failure("MIN_NOTIONAL")
    assert raw_request(exchange, "POST", "/api/v3/order/test", {**test_order, "quantity": "0.01"},
                       in_body=True) == (200, {})
    untouched(exchange)
    # what the filters let through is filled as before; a 36-character id is legal
    assert order(exchange, **limit, quantity="0.00013000", price=f"{price * 1.01:.2f}",
                 newClientOrderId="A" * 30 + "-_09az")[1]["status"] == "FILLED"
    bought = order(exchange, type="MARKET", quoteOrderQty="100")[1]
    assert 0 < float(bought["executedQty"]) * price <= 100  # rounded down to the 1e-8 step


def test_a_tiny_quote_order_qty_is_below_the_lot_size_not_rounded_up_to_it():
    with LocalExchange({"BTC/USDT": BTC}, api_keys={API_KEY: SECRET}, min_notional=0) as ex:
        # 0.0001 USDT buys 2.5e-9 BTC: less than one 1e-8 step, so nothing, not one step
        assert order(ex, type="MARKET", quoteOrderQty="0.0001") == filter_failure("LOT_SIZE")
        bought = order(ex, type="MARKET", quoteOrderQty="0.001")[1]  # 2.5e-8 BTC: two steps
        assert bought["executedQty"] == "0.00000002"


def test_ccxt_raises_the_exceptions_it_raises_for_binance(exchange):
    c = client(exchange)
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):  # ccxt matches the message
        c.create_order("BTC/USDT", "market", "buy", 9_000_000_001)
    with pytest.raises(ccxt.ExchangeError, match="MIN_NOTIONAL"):  # -1013 without a known text
        c.create_order("BTC/USDT", "market", "buy", 0.0001)
    with pytest.raises(ccxt.BadRequest, match="-1115"):
        c.create_order("BTC/USDT", "limit", "buy", 0.01, 30_000, params={"timeInForce": "FOREVER"})
    with pytest.raises(ccxt.BadRequest, match="newClientOrderId"):
        c.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "x" * 37})
    untouched(exchange)


# --- 2. a burst of concurrent clients ----------------------------------------------------------

def test_a_burst_of_concurrent_requests_is_answered(exchange, monkeypatch):
    with open("/proc/sys/net/core/somaxconn") as fh:  # the kernel's cap on any listen backlog
        somaxconn = int(fh.read())
    # a precondition of the machine, not something to skip over: below it no server can hold the burst
    assert somaxconn >= 256, f"net.core.somaxconn is {somaxconn}; this test needs >= 256 (sysctl -w)"
    gate, accept = threading.Event(), exchange._httpd.process_request

    def busy(request, address):  # the server is busy: new connections wait in the backlog
        gate.wait()
        accept(request, address)

    monkeypatch.setattr(exchange._httpd, "process_request", busy)

    def one():
        conn = http.client.HTTPConnection("127.0.0.1", exchange.port, timeout=15)  # generous
        try:
            conn.request("GET", "/api/v3/ticker/price?symbol=BTCUSDT")
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())["price"]
        except OSError as e:
            return type(e).__name__, None
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=200) as pool:
        futures = [pool.submit(one) for _ in range(200)]
        time.sleep(1.0)  # every client connects while the server is busy...
        gate.set()  # ...then it accepts them
        answers = [f.result() for f in futures]
    expected = (200, str(BTC["close"].iloc[-1]))
    assert sum(a != expected for a in answers) == 0, [a for a in answers if a != expected][:5]


# --- 4. lost response and duplicates ------------------------------------------------------------

def place_once(exchange, symbol, type, side, amount, price=None, *, client_order_id, settle_s=0.0):
    """The README's pattern: after a network error, look the order up by its client order id
    before sending it again (``settle_s``: wait out the recvWindow first; 0 here, where the lost
    request has certainly been handled)."""
    params = {"clientOrderId": client_order_id}
    try:
        return exchange.create_order(symbol, type, side, amount, price, params)
    except ccxt.NetworkError:
        time.sleep(settle_s)
        try:
            return exchange.fetch_order("", symbol, params={"origClientOrderId": client_order_id})
        except ccxt.OrderNotFound:
            return exchange.create_order(symbol, type, side, amount, price, params)


def test_blind_retry_of_a_lost_market_order_fills_twice_query_first_once(exchange):
    c = client(exchange)
    c.load_markets()

    def fills(cid):
        return [o for o in c.fetch_orders("BTC/USDT") if o["clientOrderId"] == cid and o["filled"]]

    exchange.faults.lose_response()
    with pytest.raises(ccxt.NetworkError):
        c.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "blind-1"})
    # newClientOrderId is unique among *open* orders only: the filled order does not block it
    c.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "blind-1"})
    assert len(fills("blind-1")) == 2
    assert c.fetch_balance()["BTC"]["total"] == pytest.approx(2 * 0.01 * 0.999)

    exchange.faults.lose_response()
    placed = place_once(c, "BTC/USDT", "market", "buy", 0.01, client_order_id="safe-1")
    assert placed["status"] == "closed" and len(fills("safe-1")) == 1
    exchange.faults.drop_connection(path=ORDER, method="POST")  # this time it never arrives
    placed = place_once(c, "BTC/USDT", "market", "buy", 0.01, client_order_id="safe-2")
    assert placed["status"] == "closed" and len(fills("safe-2")) == 1
    assert c.fetch_balance()["BTC"]["total"] == pytest.approx(4 * 0.01 * 0.999)


# --- 5. malformed requests ---------------------------------------------------------------------

def raw_http(ex, data: bytes) -> tuple[int, dict | None]:
    """Send bytes as they are; the status and JSON body of the answer (0, None: no answer)."""
    with socket.create_connection(("127.0.0.1", ex.port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    if not received:
        return 0, None
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.startswith(b"{") else None


def test_malformed_requests_get_400_and_the_server_carries_on(exchange, caplog):
    get = urllib.request.urlopen
    for bad in ("[bad", "123", '["BTCUSDT",', '[1]', "{}"):
        with pytest.raises(urllib.error.HTTPError) as err:
            get(f"{exchange.url}/api/v3/ticker/price?symbols={urllib.parse.quote(bad)}", timeout=10)
        assert err.value.code == 400 and json.loads(err.value.read())["code"] == -1100, bad
    with pytest.raises(urllib.error.HTTPError) as err:
        get(f"{exchange.url}/api/v3/ticker/price?symbols=%5B%22NOPE%22%5D", timeout=10)
    assert json.loads(err.value.read())["code"] == -1121
    head = b"POST /api/v3/order HTTP/1.1\r\nHost: 127.0.0.1\r\nX-MBX-APIKEY: test-key\r\n"
    for length in (b"abc", b"-5", b"1e12", b"1.5", b"5, 7"):
        status, body = raw_http(exchange, head + b"Content-Length: " + length + b"\r\n\r\nsymbol")
        assert status == 400 and body["code"] == -1100 and "Content-Length" in body["msg"], length
    status, body = raw_http(exchange, head + b"Content-Length: 99999999999\r\n\r\n")
    assert status == 413 and "Content-Length" in body["msg"]
    status, body = raw_http(exchange, head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert status == 411
    not_utf8 = b"symbol=BTC\xff\xfe"
    status, body = raw_http(exchange, head + b"Content-Length: %d\r\n\r\n" % len(not_utf8) + not_utf8)
    assert (status, body["code"]) == (400, -1100)
    status, body = raw_request(exchange, "GET", "/api/v3/account", {"recvWindow": "abc"})
    assert (status, body) == illegal("recvWindow", r"^[0-9]{1,20}$")
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []  # no tracebacks
    assert client(exchange).fetch_ticker("BTC/USDT")["last"] == BTC["close"].iloc[-1]


# --- 6. serve options and constructor keywords ---------------------------------------------------

@pytest.fixture
def serve(tmp_path, monkeypatch):
    """Run ``tradpal exchange serve`` in-process; returns ``(exit code, stderr)``. A server that
    starts is stopped at once (as by Ctrl-C) instead of serving forever."""
    csv = write_csv(tmp_path, BTC.iloc[:50])
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TRADPAL_LOCAL_API_KEY", API_KEY)
    monkeypatch.setenv("TRADPAL_LOCAL_SECRET", SECRET)

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(data_cli, "_wait_for_interrupt", interrupted)

    def run(*options):
        parser = argparse.ArgumentParser()
        data_cli.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["exchange", "serve", "--data", str(csv), *options])
        return args.func(args)
    return run


def test_serve_options_are_validated(serve, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cases = [
            (["--fee", "-1"], "--fee"), (["--fee", "nan"], "--fee"), (["--spread", "-5"], "--spread"),
            (["--spread", "2"], "--spread"), (["--balance", "USDT=nan"], "--balance"),
            (["--balance", "USDT=-3"], "--balance"), (["--speed", "-1"], "--speed"),
            (["--port", "99999"], "--port"), (["--port", str(busy.getsockname()[1])], "--port"),
            (["--host", "192.0.2.1"], "--host"), (["--host", "no-such-host.invalid"], "--host"),
            (["--max-requests", "0"], "--max-requests"), (["--min-notional", "-1"], "--min-notional"),
            (["--start", "not a time"], "--start"),
        ]
        for options, name in cases:
            assert serve(*options, "--clock", "stepped") == 2, options
            err = capsys.readouterr().err
            assert err.startswith("error: ") and err.count("\n") == 1 and name in err, (options, err)
    assert serve("--port", "0") == 0  # and valid options still start it


@pytest.mark.parametrize("keyword, value", [
    ("fee_rate", -1), ("fee_rate", math.nan), ("spread", -5), ("spread", math.inf), ("speed", -1),
    ("speed", math.nan), ("balances", {"USDT": math.nan}), ("balances", {"USDT": -1}),
    ("port", 99_999), ("max_requests", 0), ("min_notional", -1), ("control_token", ""),
    ("start", "not a time"), ("clock", "sideways"),
])
def test_constructor_validates_its_keywords(keyword, value):
    with pytest.raises(ValueError, match=keyword):
        LocalExchange({"BTC/USDT": BTC}, **{keyword: value})


# --- 7. the control plane ----------------------------------------------------------------------

def control_status(ex, method, path, data=None, headers=None) -> int:
    req = urllib.request.Request(f"{ex.url}/_tradpal/{path}", method=method, data=data,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_control_plane_needs_the_token_and_json(exchange):
    client(exchange).fetch_balance()
    token = {"X-TradPal-Token": exchange.control_token}
    fault = json.dumps({"kind": "http_error", "status": 503}).encode()
    assert control_status(exchange, "GET", "requests") == 401  # shows every order's parameters
    assert control_status(exchange, "GET", "status", headers={"X-TradPal-Token": "guess"}) == 401
    # what a web page can send without a CORS preflight: text/plain and form posts
    assert control_status(exchange, "POST", "faults", fault, {"Content-Type": "text/plain"}) == 401
    assert control_status(exchange, "POST", "faults", fault, {"Content-Type": "text/plain", **token}) == 415
    assert control_status(exchange, "POST", "clock", b"step=5",
                          {"Content-Type": "application/x-www-form-urlencoded", **token}) == 415
    assert exchange.faults.describe()["rules"] == [] and exchange.clock.now_ms() == exchange.market.end_ms
    assert control_status(exchange, "POST", "faults", fault, {"Content-Type": "application/json", **token}) == 200
    assert exchange.faults.describe()["rules"][0]["status"] == 503
    assert len(control(exchange, "GET", "requests")) == len(exchange.requests())


def test_fault_and_clock_arguments_are_validated():
    start = START + pd.Timedelta(minutes=10)
    with LocalExchange({"BTC/USDT": BTC}, start=start, api_keys={API_KEY: SECRET}) as ex:
        c = client(ex)
        bad_faults = [{"kind": "latency", "seconds": -1}, {"kind": "latency", "seconds": "nan"},
                      {"kind": "rate_limit", "retry_after": "abc"}, {"kind": "rate_limit", "retry_after": -1},
                      {"kind": "http_error", "status": 99999}, {"kind": "http_error", "status": 200},
                      {"kind": "http_error", "count": 1.5}, {"kind": "drop_connection", "method": "FETCH"},
                      {"kind": "partial_fills", "fraction": "half"}, {"kind": "candle_gap", "start_ms": 5, "end_ms": 1}]
        for spec in bad_faults:
            with pytest.raises(urllib.error.HTTPError) as err:
                control(ex, "POST", "faults", spec)
            assert err.value.code == 400, spec
            assert c.fetch_time() == ms(start)  # the next request is answered normally
        assert ex.faults.describe()["rules"] == []
        with pytest.raises(ValueError, match="seconds"):
            ex.faults.latency(-1)
        with pytest.raises(ValueError, match="retry_after"):
            ex.faults.rate_limit(retry_after="abc")
        for spec in [{"mode": "realtime", "speed": -1}, {"mode": "fast", "step": -1},
                     {"mode": "realtime", "speed": math.nan}, {"step": 2, "to": "garbage"},
                     {"mode": "sideways"}, {"step": 1, "stop": 1}, {"step": True}]:
            body = json.dumps(spec).replace("NaN", '"nan"').encode()
            assert control_status(ex, "POST", "clock", body, {"Content-Type": "application/json",
                                                              "X-TradPal-Token": ex.control_token}) == 400, spec
            assert (ex.clock.mode, ex.clock.now_ms(), ex.clock.speed) == ("stepped", ms(start), 1.0), spec
        with pytest.raises(ValueError, match="speed"):
            ex.clock.set_mode("realtime", -2)
        assert control(ex, "POST", "clock", {"speed": 3})["speed"] == 3


def test_binding_beyond_loopback_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="framework.local_exchange.server"):
        with LocalExchange({"BTC/USDT": BTC}, host="0.0.0.0"):
            pass
    assert any("0.0.0.0" in r.getMessage() and "loopback" in r.getMessage() for r in caplog.records)


# --- 8. the key file ---------------------------------------------------------------------------

def test_key_file_is_kept_and_made_private(tmp_path, monkeypatch):
    monkeypatch.delenv("TRADPAL_LOCAL_API_KEY", raising=False)
    from framework.local_exchange.auth import load_api_keys, load_or_create_api_keys

    path = tmp_path / "keys.json"
    created = load_or_create_api_keys(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(created) == 1
    path.chmod(0o644)
    assert load_or_create_api_keys(path) == created  # the saved pair still works
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)  # a --keys file is made private too
    assert load_api_keys(path) == created and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("not json")
    with pytest.raises(ValueError, match="keys.json"):
        load_or_create_api_keys(path)
    assert path.read_text() == "not json"  # never overwritten


def test_serve_keeps_the_saved_keys_and_prints_the_control_token(tmp_path):
    keys_file = tmp_path / ".config" / "tradpal" / "local-exchange-keys.json"
    keys_file.parent.mkdir(parents=True)
    keys_file.write_text(json.dumps({API_KEY: SECRET}))
    keys_file.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADPAL_LOCAL_")}
    env["TRADPAL_CACHE_HOME"] = str(tradpal_cache_root())  # keep the warm kernel cache
    env["HOME"] = str(tmp_path)
    csv = write_csv(tmp_path, BTC.iloc[:50])
    with serve_cli("--data", str(csv), "--port", "0", "--clock", "stepped", env=env) as (url, lines):
        assert lines[0] == f"using the API key pair in {keys_file} (mode 0600)\n"
        token = lines[-1].split("control token: ")[1].split()[0]
        assert json.loads(keys_file.read_text()) == {API_KEY: SECRET}  # not overwritten
        assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
        assert client(type("E", (), {"url": url})()).fetch_balance()["USDT"]["free"] == 10_000
        assert control(type("E", (), {"url": url, "control_token": token})(), "GET", "status")["requests"] > 0


# --- 9. the request log ------------------------------------------------------------------------

def test_request_log_is_bounded():
    with LocalExchange({"BTC/USDT": BTC}, api_keys={API_KEY: SECRET}, max_requests=5) as ex:
        c = client(ex)
        for _ in range(8):
            c.fetch_time()
        assert [r.path for r in ex.requests()] == ["/api/v3/time"] * 5
        assert ex.status()["requests"] == 5
        first = ex.requests()[0].wall_time
        c.fetch_ticker("BTC/USDT")
        assert ex.requests()[0].wall_time >= first and ex.requests()[-1].path == "/api/v3/ticker/24hr"
        assert len(ex.requests()) == 5
        raw_request(ex, "GET", "/api/v3/account", {"newClientOrderId": "x" * 10_000})
        assert ex.requests()[-1].params["newClientOrderId"] == "x" * 256 + "..."  # values are cut
