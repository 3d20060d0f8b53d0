"""The HTTP server: the subset of Binance's spot REST API that ccxt's ``binance`` class uses.

Public: ``/api/v3/ping, time, exchangeInfo, klines, uiKlines, ticker/24hr, ticker/price,
ticker/bookTicker, depth`` (plus empty ``/fapi/v1/exchangeInfo`` and ``/dapi/v1/exchangeInfo``
so ccxt's default ``load_markets`` works). Signed: ``/api/v3/account``, ``order`` (POST, GET,
DELETE), ``order/test``, ``openOrders`` (GET, DELETE), ``allOrders``, ``myTrades`` and
``/sapi/v1/capital/config/getall``. Errors come back as Binance's ``{"code", "msg"}``
bodies with its HTTP statuses, so ccxt raises the exception it raises for the real exchange.

Websocket (see :mod:`.websocket`): Binance's kline streams on ``/ws`` (raw, ``SUBSCRIBE``
as ccxt.pro does) and ``/stream?streams=...`` (combined), pushed as the replay clock moves;
:attr:`LocalExchange.ws_url` gives the address, :meth:`LocalExchange.drop_websockets` cuts them.

Control (not Binance; loopback tools and tests): ``GET /_tradpal/status``,
``POST /_tradpal/clock`` (``{"step": n}``, ``{"to": ms}``, ``{"mode": m, "speed": x}``),
``POST``/``DELETE /_tradpal/faults`` and ``GET``/``DELETE /_tradpal/requests``. Every control
request carries the exchange's token in an ``X-TradPal-Token`` header and sends JSON only
(``Content-Type: application/json``): a web page cannot forge such a request (CSRF). Arguments
are checked in full before anything changes.

Malformed requests (a bad ``Content-Length``, a body that is not UTF-8, repeated parameters,
non-decimal numbers) get a 4xx answer with Binance's error body, never a dropped connection.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from framework.data import timeframe_to_ms, to_ms

from .auth import check_signed
from .checks import SettingError, number, one_of
from .clock import CLOCK_MODES, ClockMode, ReplayClock, check_speed
from .engine import (
    CLIENT_ID_RE,
    ORDER_TYPES,
    ApiError,
    Engine,
    Order,
    SymbolFilters,
    Trade,
    illegal,
    request_param,
)
from .faults import Faults
from .market import MarketData, Series

log = logging.getLogger(__name__)

INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w")
_DAY_MS = 86_400_000
DEFAULT_MAX_REQUESTS = 10_000  # request log entries kept (the oldest are dropped first)
MAX_BODY_BYTES = 1 << 20
MAX_PARAMS = 100
MAX_LOGGED_VALUE = 256  # longer parameter values are cut in the request log
TOKEN_HEADER = "X-TradPal-Token"
_TOKEN_RE = re.compile(r"[!-~]{8,}")  # visible ASCII: it travels in an HTTP header
_SYMBOLS_RE = re.compile(r'^\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\]$')  # Binance's


def _fmt(x: float) -> str:
    """Shortest decimal text that reads back as the same float (no exponent), like Binance's
    decimal strings but without losing digits of the replayed data."""
    return np.format_float_positional(float(x), trim="-")


@dataclass
class RequestRecord:
    """One request the server saw (the signature is not kept)."""

    method: str
    path: str
    params: dict
    status: int  # 0 when the connection was dropped without an answer
    wall_time: float  # time.time() when it arrived, s
    replay_ms: int


class LocalExchange:
    """A replaying, Binance-speaking exchange on 127.0.0.1.

    Args:
        data: a file / folder / bundled name (see :meth:`MarketData.from_path`), a mapping
            ``{"BTC/USDT": ohlcv_frame}``, or a :class:`MarketData`.
        start: replay start (ms, ISO string or Timestamp); default: the end of the data, so all
            history is closed candles.
        clock: ``"stepped"``, ``"realtime"`` or ``"fast"`` (see :mod:`.clock`).
        speed: realtime speed-up factor.
        port: 0 picks a free port (read :attr:`url` after :meth:`start`).
        api_keys: ``{api_key: secret}`` accepted on signed endpoints.
        balances: starting balances of every account, e.g. ``{"USDT": 10_000}``.
        fee_rate: commission as a fraction of the traded amount (0.001 = 0.1%), in [0, 1).
        spread: bid-ask spread as a fraction of the price (0 = fills at the path price), in [0, 1).
        min_notional: the MIN_NOTIONAL filter: smallest order value in the quote asset
            (Binance's 5 on USDT pairs; set it for other quote assets).
        max_requests: how many requests :meth:`requests` keeps (the oldest are dropped).
        control_token: the secret the control plane (``/_tradpal/*``) asks for in its
            ``X-TradPal-Token`` header; default a random one (read :attr:`control_token`).

    Every keyword is checked (a ``ValueError`` names it); binding errors surface in
    :meth:`start` as ``OSError``.
    """

    def __init__(self, data, *, start=None, clock: ClockMode = "stepped", speed: float = 1.0,
                 host: str = "127.0.0.1", port: int = 0, api_keys: Mapping[str, str] | None = None,
                 balances: Mapping[str, float] | None = None, fee_rate: float = 0.001,
                 spread: float = 0.0, min_notional: float = 5.0,
                 max_requests: int = DEFAULT_MAX_REQUESTS, control_token: str | None = None):
        one_of(clock, "clock", CLOCK_MODES)
        check_speed(speed)
        fee_rate = number(fee_rate, "fee_rate", low=0, high=1, high_open=True)
        spread = number(spread, "spread", low=0, high=1, high_open=True)
        min_notional = number(min_notional, "min_notional", low=0)
        max_requests = number(max_requests, "max_requests", low=1, integer=True)
        port = number(port, "port", low=0, high=65535, integer=True)
        if not isinstance(host, str) or not host:
            raise SettingError("host", "an address or host name such as '127.0.0.1'", host)
        balances = _check_balances(balances)
        if control_token is None:
            control_token = secrets.token_urlsafe(24)
        elif not (isinstance(control_token, str) and _TOKEN_RE.fullmatch(control_token)):
            raise SettingError("control_token", "at least 8 visible ASCII characters", control_token)
        self.control_token = control_token
        if isinstance(data, MarketData):
            self.market = data
        elif isinstance(data, Mapping):
            self.market = MarketData.from_frames(data)
        else:
            self.market = MarketData.from_path(data)
        try:
            start_ms = self.market.end_ms if start is None else to_ms(start)
        except (ValueError, TypeError, OverflowError):
            raise SettingError("start", "a time: ms since the epoch or an ISO 8601 string such as "
                                        "'2021-01-01'", start) from None
        self.clock = ReplayClock(start_ms, mode=clock, speed=speed, step_ms=self.market.step_ms,
                                 end_ms=self.market.end_ms)
        self.faults = Faults()
        self.engine = Engine(self.market, self.clock, self.faults, balances=balances,
                             fee_rate=fee_rate, spread=spread,
                             filters=SymbolFilters(min_notional=Decimal(repr(min_notional))))
        self.api_keys = dict(api_keys or {})
        self.host, self._port = host, port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._records: deque[RequestRecord] = deque(maxlen=max_requests)
        self._records_lock = threading.Lock()
        self._ws_sessions: set = set()  # open websocket connections (websocket.KlineSession)
        self._ws_lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------
    def _bind(self) -> None:
        try:
            self._httpd = _Server((self.host, self._port), _Handler, self)
        except OSError as e:  # port in use, an address not on this machine, an unknown name
            raise OSError(e.errno, f"cannot listen on {self.host}:{self._port}: "
                                   f"{e.strerror or e}") from None
        warning = exposure_warning(self._httpd.server_address[0])
        if warning:
            log.warning(warning)

    def start(self) -> LocalExchange:
        """Bind and serve in a background thread."""
        self._bind()
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="local-exchange", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Bind and serve in this thread (the CLI)."""
        self._bind()
        try:
            self._httpd.serve_forever()
        finally:
            self._httpd.close_all()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.close_all()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LocalExchange:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the local exchange is not running; call start() first")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """Base URL of the websocket streams, e.g. ``ws://127.0.0.1:54321/ws``."""
        return f"ws://{self.host}:{self.port}/ws"

    def drop_websockets(self) -> int:
        """Close every open websocket connection at once (a network cut); returns how many."""
        with self._ws_lock:
            sessions, self._ws_sessions = list(self._ws_sessions), set()
        for session in sessions:
            session.close()
        return len(sessions)

    # --- observation -----------------------------------------------------------------------
    def requests(self, path: str | None = None, method: str | None = None) -> list[RequestRecord]:
        """Requests seen so far, oldest first (control endpoints excluded; at most
        ``max_requests``, the most recent), optionally filtered."""
        with self._records_lock:
            return [r for r in self._records if (path is None or r.path == path)
                    and (method is None or r.method == method.upper())]

    def clear_requests(self) -> None:
        with self._records_lock:
            self._records.clear()

    def _record(self, rec: RequestRecord) -> None:
        with self._records_lock:
            self._records.append(rec)

    def status(self) -> dict:
        return {"now": self.clock.now_ms(), "mode": self.clock.mode, "speed": self.clock.speed,
                "start": self.market.start_ms, "end": self.market.end_ms,
                "step_ms": self.clock.step_ms, "symbols": sorted(self.market.by_symbol),
                "faults": self.faults.describe(), "requests": len(self._records),
                "max_requests": self._records.maxlen, "websockets": self._ws_streams()}

    def _ws_streams(self) -> list[list[str]]:
        """The streams of each open websocket connection."""
        with self._ws_lock:
            return [sorted(s.streams) for s in self._ws_sessions]

    # --- Binance API ------------------------------------------------------------------------
    def handle(self, method: str, path: str, params: dict[str, str], signed_key: str | None):
        """Dispatch one API request; returns the JSON-able answer or raises ApiError."""
        route = _ROUTES.get((method, path))
        if route is None:
            raise ApiError(404, -1, f"the TradPal local exchange does not implement {method} {path}")
        fn, needs_signature = route
        if needs_signature:
            if signed_key is None:
                raise ApiError(401, -2014, "API-key format invalid.")
            with self.engine.lock:
                self.engine.sync()
                return fn(self, params, signed_key)
        self.engine.sync()
        return fn(self, params)


def _check_balances(balances: Mapping[str, float] | None) -> dict[str, float] | None:
    if balances is None:
        return None
    requirement = "a mapping of asset names to finite amounts >= 0"
    if not isinstance(balances, Mapping):
        raise SettingError("balances", requirement, balances)
    for asset, amount in balances.items():
        if not isinstance(asset, str) or not asset:
            raise SettingError("balances", requirement, dict(balances))
        try:
            number(amount, "balances", low=0)
        except SettingError:
            raise SettingError("balances", "finite amounts >= 0", {asset: amount}) from None
    return {a: float(v) for a, v in balances.items()}


def exposure_warning(address: str) -> str | None:
    """A warning when the server listens beyond the loopback interface, else None."""
    try:
        if ipaddress.ip_address(address).is_loopback:
            return None
    except ValueError:
        pass
    return (f"WARNING: the local exchange listens on {address}, beyond loopback: anyone who can "
            f"reach this machine can use its API (signed endpoints still need an API key) and, "
            f"with the control token, its control plane. Bind to 127.0.0.1 unless you mean it.")


# --- public endpoints --------------------------------------------------------------------------

def _ping(ex, p):
    return {}


def _time(ex, p):
    return {"serverTime": ex.clock.now_ms()}


def _symbol_info(s: Series, filters: SymbolFilters) -> dict:
    return {
        "symbol": s.market_id, "status": "TRADING", "baseAsset": s.base, "baseAssetPrecision": 8,
        "quoteAsset": s.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": list(ORDER_TYPES), "icebergAllowed": False, "ocoAllowed": False,
        "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": False,
        "cancelReplaceAllowed": False, "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": filters.exchange_info(),
        "permissions": [], "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE", "allowedSelfTradePreventionModes": ["NONE"],
    }


def _exchange_info(ex, p):
    wanted = p.get("symbol")
    symbols = [s for s in ex.market.by_id.values() if wanted is None or s.market_id == wanted]
    if wanted and not symbols:
        raise ApiError(400, -1121, "Invalid symbol.")
    return {"timezone": "UTC", "serverTime": ex.clock.now_ms(),
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}],
            "exchangeFilters": [], "symbols": [_symbol_info(s, ex.engine.filters) for s in symbols]}


def _empty_exchange_info(ex, p):
    return {"timezone": "UTC", "serverTime": ex.clock.now_ms(), "rateLimits": [],
            "exchangeFilters": [], "symbols": []}


def _int_param(p: dict, name: str, default: int | None = None) -> int | None:
    return request_param(p, name, int, default)


def _klines(ex, p):
    s = ex.engine.series(p.get("symbol"))
    interval = p.get("interval")
    if not interval:
        raise ApiError(400, -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
    if interval not in INTERVALS:
        raise ApiError(400, -1120, "Invalid interval.")
    interval_ms = timeframe_to_ms(interval)
    if interval_ms % s.tf_ms:
        raise ApiError(400, -1120, f"Invalid interval: the replayed {s.market_id} data has candles of "
                                   f"{s.tf_ms // 1000} s; ask for a multiple of that.")
    limit = min(max(_int_param(p, "limit", 500), 1), 1000)
    start, end = _int_param(p, "startTime"), _int_param(p, "endTime")
    asked_until = None  # the close of the last candle asked for (the fast clock moves there)
    if start is not None:
        asked_until = start + limit * interval_ms if end is None else min(start + limit * interval_ms,
                                                                         end + interval_ms)
    ex.clock.on_market_request(asked_until)
    now = ex.clock.now_ms()
    times, ohlcv = s.candles(interval_ms, now)
    if ex.faults.candle_gaps:
        keep = np.array([not ex.faults.hides(s.market_id, int(t)) for t in times], dtype=bool)
        times, ohlcv = times[keep], ohlcv[keep]
    hi = len(times) if end is None else int(np.searchsorted(times, end, side="right"))
    if start is not None:
        lo = int(np.searchsorted(times, start, side="left"))
        hi = min(hi, lo + limit)
    else:
        lo = max(hi - limit, 0)
    return [[int(t), _fmt(o), _fmt(h), _fmt(l_), _fmt(c), _fmt(v), int(t) + interval_ms - 1,
             _fmt(v * c), 0, "0", "0", "0"]
            for t, (o, h, l_, c, v) in zip(times[lo:hi], ohlcv[lo:hi])]


def _ticker_24h(ex, s: Series, now: int) -> dict:
    bid, ask = ex.engine.bid_ask(s, now)
    times, ohlcv = s.candles(s.tf_ms, now)
    i0 = int(np.searchsorted(times, now - _DAY_MS, side="right"))
    window = ohlcv[i0:] if i0 < len(times) else ohlcv[-1:]
    last = s.price_at(now)
    first_open = float(window[0, 0]) if len(window) else last
    prev_close = float(ohlcv[i0 - 1, 3]) if i0 > 0 else first_open
    volume = float(window[:, 4].sum())
    return {
        "symbol": s.market_id, "priceChange": _fmt(last - first_open),
        "priceChangePercent": f"{(last / first_open - 1) * 100:.3f}",
        "weightedAvgPrice": _fmt(float((window[:, 3] * window[:, 4]).sum() / volume) if volume else last),
        "prevClosePrice": _fmt(prev_close), "lastPrice": _fmt(last), "lastQty": "0",
        "bidPrice": _fmt(bid), "bidQty": "1", "askPrice": _fmt(ask), "askQty": "1",
        "openPrice": _fmt(first_open), "highPrice": _fmt(float(window[:, 1].max()) if len(window) else last),
        "lowPrice": _fmt(float(window[:, 2].min()) if len(window) else last),
        "volume": _fmt(volume), "quoteVolume": _fmt(float((window[:, 3] * window[:, 4]).sum())),
        "openTime": now - _DAY_MS, "closeTime": now, "firstId": -1, "lastId": -1, "count": 0,
    }


def _each_symbol(ex, p, fn):
    """Binance's ticker endpoints: one object for ``symbol``, a list for none or ``symbols``."""
    ex.clock.on_market_request()
    now = ex.clock.now_ms()
    if p.get("symbol"):
        return fn(ex, ex.engine.series(p["symbol"]), now)
    raw = p.get("symbols")
    if raw and not _SYMBOLS_RE.fullmatch(raw):
        raise illegal("symbols", _SYMBOLS_RE.pattern)
    ids = json.loads(raw) if raw else sorted(ex.market.by_id)
    return [fn(ex, ex.engine.series(i), now) for i in ids]


def _ticker(ex, p):
    return _each_symbol(ex, p, _ticker_24h)


def _ticker_price(ex, p):
    return _each_symbol(ex, p, lambda ex, s, now: {"symbol": s.market_id, "price": _fmt(s.price_at(now))})


def _book_ticker(ex, p):
    def one(ex, s, now):
        bid, ask = ex.engine.bid_ask(s, now)
        return {"symbol": s.market_id, "bidPrice": _fmt(bid), "bidQty": "1",
                "askPrice": _fmt(ask), "askQty": "1"}
    return _each_symbol(ex, p, one)


def _depth(ex, p):
    s = ex.engine.series(p.get("symbol"))
    ex.clock.on_market_request()
    now = ex.clock.now_ms()
    levels = min(max(_int_param(p, "limit", 100), 1), 100)
    bid, ask = ex.engine.bid_ask(s, now)
    step = 0.0001  # synthetic book: one unit per level, levels one basis point apart
    return {"lastUpdateId": now,
            "bids": [[_fmt(bid * (1 - step * k)), "1"] for k in range(levels)],
            "asks": [[_fmt(ask * (1 + step * k)), "1"] for k in range(levels)]}


# --- signed endpoints ----------------------------------------------------------------------

def _order_json(o: Order, *, transact: bool = False) -> dict:
    out = {
        "symbol": o.symbol, "orderId": o.order_id, "orderListId": -1, "clientOrderId": o.client_id,
        "price": _fmt(o.price), "origQty": _fmt(o.qty), "executedQty": _fmt(o.executed),
        "cummulativeQuoteQty": _fmt(o.cum_quote), "status": o.status, "timeInForce": o.tif,
        "type": o.type, "side": o.side, "stopPrice": _fmt(o.stop_price),
        "origQuoteOrderQty": _fmt(o.quote_qty), "workingTime": o.time,
        "selfTradePreventionMode": "NONE",
    }
    if transact:
        out["transactTime"] = o.update_time
    else:
        out.update({"icebergQty": "0", "time": o.time, "updateTime": o.update_time,
                    "isWorking": o.triggered or o.type in ("LIMIT", "LIMIT_MAKER", "MARKET")})
    return out


def _place(ex, p, key):
    o = ex.engine.place(key, p)
    resp_type = (p.get("newOrderRespType") or "FULL").upper()
    if resp_type == "ACK":
        return {"symbol": o.symbol, "orderId": o.order_id, "orderListId": -1,
                "clientOrderId": o.client_id, "transactTime": o.time}
    out = _order_json(o, transact=True)
    if resp_type == "FULL":
        out["fills"] = list(o.fills)
    return out


def _test_order(ex, p, key):
    ex.engine.check_order(p, ex.clock.now_ms())  # every check of a real order, nothing placed
    return {}


def _get_order(ex, p, key):
    return _order_json(ex.engine.find(key, p))


def _cancel_order(ex, p, key):
    if p.get("newClientOrderId") and not CLIENT_ID_RE.fullmatch(p["newClientOrderId"]):
        raise illegal("newClientOrderId", CLIENT_ID_RE.pattern)
    o = ex.engine.cancel(key, p)
    out = _order_json(o, transact=True)
    out["origClientOrderId"] = o.client_id
    out["clientOrderId"] = p.get("newClientOrderId") or f"cancel{o.order_id}"
    return out


def _open_orders(ex, p, key):
    return [_order_json(o) for o in ex.engine.open_orders(key, p.get("symbol"))]


def _cancel_open_orders(ex, p, key):
    orders = ex.engine.open_orders(key, p.get("symbol") or ex.engine.series(None).market_id)
    return [_cancel_order(ex, {"symbol": o.symbol, "orderId": str(o.order_id)}, key) for o in orders]


def _all_orders(ex, p, key):
    orders = ex.engine.all_orders(key, p.get("symbol"))
    since_id = _int_param(p, "orderId")
    start, end = _int_param(p, "startTime"), _int_param(p, "endTime")
    orders = [o for o in orders if (since_id is None or o.order_id >= since_id)
              and (start is None or o.time >= start) and (end is None or o.time <= end)]
    return [_order_json(o) for o in orders[: min(_int_param(p, "limit", 500), 1000)]]


def _trade_json(t: Trade) -> dict:
    return {"symbol": t.symbol, "id": t.trade_id, "orderId": t.order_id, "orderListId": -1,
            "price": _fmt(t.price), "qty": _fmt(t.qty), "quoteQty": _fmt(t.price * t.qty),
            "commission": _fmt(t.commission), "commissionAsset": t.commission_asset,
            "time": t.time, "isBuyer": t.is_buyer, "isMaker": t.is_maker, "isBestMatch": True}


def _my_trades(ex, p, key):
    trades = ex.engine.my_trades(key, p.get("symbol"))
    oid, from_id = _int_param(p, "orderId"), _int_param(p, "fromId")
    start, end = _int_param(p, "startTime"), _int_param(p, "endTime")
    trades = [t for t in trades if (oid is None or t.order_id == oid)
              and (from_id is None or t.trade_id >= from_id)
              and (start is None or t.time >= start) and (end is None or t.time <= end)]
    return [_trade_json(t) for t in trades[: min(_int_param(p, "limit", 500), 1000)]]


def _account(ex, p, key):
    acct = ex.engine.account(key)
    rate = _fmt(ex.engine.fee_rate)
    return {
        "makerCommission": int(ex.engine.fee_rate * 10_000), "takerCommission": int(ex.engine.fee_rate * 10_000),
        "buyerCommission": 0, "sellerCommission": 0,
        "commissionRates": {"maker": rate, "taker": rate, "buyer": "0", "seller": "0"},
        "canTrade": True, "canWithdraw": False, "canDeposit": False, "brokered": False,
        "requireSelfTradePrevention": False, "preventSor": False, "updateTime": acct.update_time,
        "accountType": "SPOT", "permissions": ["SPOT"], "uid": 1,
        "balances": [{"asset": a, "free": _fmt(max(f, 0.0)), "locked": _fmt(max(lk, 0.0))}
                     for a, (f, lk) in sorted(acct.balances.items())],
    }


def _currencies(ex, p, key):
    return []  # no wallet/margin data: ccxt then derives currencies from the markets


_ROUTES = {
    ("GET", "/api/v3/ping"): (_ping, False),
    ("GET", "/api/v3/time"): (_time, False),
    ("GET", "/api/v3/exchangeInfo"): (_exchange_info, False),
    ("GET", "/fapi/v1/exchangeInfo"): (_empty_exchange_info, False),
    ("GET", "/dapi/v1/exchangeInfo"): (_empty_exchange_info, False),
    ("GET", "/api/v3/klines"): (_klines, False),
    ("GET", "/api/v3/uiKlines"): (_klines, False),
    ("GET", "/api/v3/ticker/24hr"): (_ticker, False),
    ("GET", "/api/v3/ticker/price"): (_ticker_price, False),
    ("GET", "/api/v3/ticker/bookTicker"): (_book_ticker, False),
    ("GET", "/api/v3/depth"): (_depth, False),
    ("GET", "/api/v3/account"): (_account, True),
    ("POST", "/api/v3/order"): (_place, True),
    ("POST", "/api/v3/order/test"): (_test_order, True),
    ("GET", "/api/v3/order"): (_get_order, True),
    ("DELETE", "/api/v3/order"): (_cancel_order, True),
    ("GET", "/api/v3/openOrders"): (_open_orders, True),
    ("DELETE", "/api/v3/openOrders"): (_cancel_open_orders, True),
    ("GET", "/api/v3/allOrders"): (_all_orders, True),
    ("GET", "/api/v3/myTrades"): (_my_trades, True),
    ("GET", "/sapi/v1/capital/config/getall"): (_currencies, True),
    ("GET", "/sapi/v1/margin/allPairs"): (_currencies, True),
    ("GET", "/sapi/v1/margin/isolated/allPairs"): (_currencies, True),
}
_SIGNED_PATHS = {path for (_, path), (_, signed) in _ROUTES.items() if signed}


# --- HTTP plumbing -------------------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # listen backlog: socketserver's default of 5 left a burst of clients hanging in the
    # kernel's queue until their timeouts fired (the kernel caps it at net.core.somaxconn)
    request_queue_size = 1024

    def __init__(self, address, handler, exchange: LocalExchange):
        self.exchange = exchange
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_all(self) -> None:
        """Close the listening socket and every kept-alive client connection."""
        self.server_close()
        with self._conns_lock:
            conns, self._conns = list(self._conns), set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (~40 ms)
    timeout = 30  # idle keep-alive connections end after this many seconds
    server: _Server

    def do_GET(self):  # noqa: N802
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")

    def do_DELETE(self):  # noqa: N802
        self._handle("DELETE")

    def do_PUT(self):  # noqa: N802
        self._handle("PUT")

    def log_message(self, format, *args):  # the default prints every query string
        pass

    def _handle(self, method: str) -> None:
        try:
            self._dispatch(method)
        except _Reject as r:  # the request could not be read: answer, then close
            self.close_connection = True
            self._send(r.status, json.dumps(r.body).encode(), "application/json")
        except (TimeoutError, ConnectionError):  # the client went quiet or away mid-request
            self.close_connection = True
        except Exception:  # a bug here must not look like a network fault to the client
            log.exception("local exchange failed on %s %s", method, self.path)
            self.close_connection = True
            self._send(500, json.dumps(_UNKNOWN_ERROR).encode(), "application/json")

    def _read_body(self) -> str:
        """The request body as text; :class:`_Reject` when its framing or encoding is bad."""
        if self.headers.get("Transfer-Encoding"):
            raise _Reject(411, -1100, "Transfer-Encoding is not supported; send the body with a "
                                      "Content-Length header.")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return ""
        if len(set(lengths)) > 1 or not re.fullmatch(r"[0-9]{1,19}", lengths[0].strip()):
            raise _Reject(400, -1100, f"Illegal Content-Length header {', '.join(lengths)!r}: "
                                      f"expected the size of the body in bytes, 0 to {MAX_BODY_BYTES}.")
        length = int(lengths[0])
        if length > MAX_BODY_BYTES:
            raise _Reject(413, -1100, f"Content-Length {length} is too large: at most "
                                      f"{MAX_BODY_BYTES} bytes.")
        data = self.rfile.read(length) if length else b""
        if len(data) < length:
            raise _Reject(400, -1100, "The body ended before Content-Length bytes arrived.")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Reject(400, -1100, "Illegal characters found in the request body: it is not "
                                      "UTF-8 text.") from None

    def _dispatch(self, method: str) -> None:
        ex = self.server.exchange
        url = urlsplit(self.path)
        raw_body = self._read_body()
        raw_query = url.query
        if url.path.startswith("/_tradpal/"):
            self._control(ex, method, url.path, raw_query, raw_body)
            return
        try:
            params = _parse_params(raw_query)
            if raw_body and "json" not in (self.headers.get("Content-Type") or ""):
                params = {**_parse_params(raw_body), **params}  # Binance: the query string wins
        except ApiError as e:
            raise _Reject(e.http_status, e.code, e.msg) from None
        public_params = {k: v if len(v) <= MAX_LOGGED_VALUE else v[:MAX_LOGGED_VALUE] + "..."
                         for k, v in params.items() if k != "signature"}
        record = RequestRecord(method, url.path, public_params, 0, time.time(), ex.clock.now_ms())
        ex._record(record)
        decision = ex.faults.decide(method, url.path)
        if decision.delay_s:
            time.sleep(decision.delay_s)
        fault = decision.action
        if fault is not None and fault.kind == "drop_connection":
            self._drop()
            return
        if fault is not None and fault.kind in ("http_error", "rate_limit"):
            record.status = fault.status
            self._fault_response(fault)
            return
        if _wants_websocket(self.headers, url.path):
            record.status = 101
            self._websocket(ex, url.path, url.query)
            return
        try:
            key = None
            if url.path in _SIGNED_PATHS:
                key = check_signed(ex.api_keys, self.headers, raw_query, raw_body, params)
            body, status = ex.handle(method, url.path, params, key), 200
        except ApiError as e:
            body, status = {"code": e.code, "msg": e.msg}, e.http_status
        except Exception:  # a bug here must not look like a network fault to the client
            log.exception("local exchange failed on %s %s", method, url.path)
            body, status = _UNKNOWN_ERROR, 500
        if fault is not None and fault.kind == "lose_response":
            self._drop()  # handled, but the client never hears back
            return
        record.status = status
        self._send(status, json.dumps(body).encode(), "application/json")

    def _websocket(self, ex: LocalExchange, path: str, query: str) -> None:
        """Switch to the websocket protocol and serve kline streams until the client leaves."""
        from .websocket import accept_key, session_for

        self.close_connection = True
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept_key(self.headers["Sec-WebSocket-Key"]))
        self.end_headers()
        self.wfile.flush()
        session = session_for(ex, self.connection, path, query)
        with ex._ws_lock:
            ex._ws_sessions.add(session)
        try:
            session.run()
        finally:
            with ex._ws_lock:
                ex._ws_sessions.discard(session)

    def _send(self, status: int, payload: bytes, content_type: str, headers: dict | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. its timeout fired)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _fault_response(self, fault) -> None:
        headers = {}
        if fault.retry_after is not None:
            ra = fault.retry_after
            headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
        if fault.status == 429:
            body = {"code": -1003, "msg": "Too many requests; current limit of IP(127.0.0.1) is 6000 "
                    "requests per minute. Please use the websocket for live updates to avoid polling the API."}
            self._send(429, json.dumps(body).encode(), "application/json", headers)
        else:
            text = f"{fault.status} {self.responses.get(fault.status, ('Error',))[0]} (injected fault)"
            self._send(fault.status, text.encode(), "text/plain", headers)

    def _control(self, ex: LocalExchange, method: str, path: str, raw_query: str, raw_body: str) -> None:
        """A control-plane request: token first, then JSON only, then arguments."""
        token = self.headers.get(TOKEN_HEADER) or ""
        if not hmac.compare_digest(token.encode(), ex.control_token.encode()):
            return self._control_answer(401, {"error": f"missing or wrong {TOKEN_HEADER} header: use "
                                              "the control token printed when the exchange started "
                                              "(LocalExchange.control_token in Python)"})
        if raw_body and self.headers.get_content_type() != "application/json":
            return self._control_answer(415, {"error": "control requests take a JSON body only "
                                              "(Content-Type: application/json)"})
        try:
            spec = json.loads(raw_body) if raw_body.strip() else {}
            if not isinstance(spec, dict):
                raise ValueError("the body must be a JSON object")
            if path == "/_tradpal/status" and method == "GET":
                body = ex.status()
            elif path == "/_tradpal/clock" and method == "POST":
                _apply_clock(ex, spec)
                body = ex.status()
            elif path == "/_tradpal/faults" and method == "POST":
                ex.faults.configure(spec)
                body = ex.faults.describe()
            elif path == "/_tradpal/faults" and method == "DELETE":
                body = ex.faults.clear().describe()
            elif path == "/_tradpal/requests" and method == "GET":
                query = dict(parse_qsl(raw_query, keep_blank_values=True))
                body = [asdict(r) for r in ex.requests(query.get("path"), query.get("method"))]
            elif path == "/_tradpal/requests" and method == "DELETE":
                ex.clear_requests()
                body = {}
            else:
                raise ValueError(f"unknown control endpoint {method} {path}")
            status = 200
        except (ValueError, TypeError, KeyError, ArithmeticError) as e:
            body, status = {"error": str(e)}, 400
        self._control_answer(status, body)

    def _control_answer(self, status: int, body) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")


_UNKNOWN_ERROR = {"code": -1000, "msg": "An unknown error occurred while processing the request."}


class _Reject(Exception):
    """A request that cannot be read as sent: answered with ``status`` and closed."""

    def __init__(self, status: int, code: int, msg: str):
        super().__init__(msg)
        self.status, self.body = status, {"code": code, "msg": msg}


def _wants_websocket(headers, path: str) -> bool:
    """A websocket handshake on a stream path (``/ws...``, ``/stream``)."""
    return (path in ("/ws", "/stream") or path.startswith("/ws/")) and \
        (headers.get("Upgrade") or "").lower() == "websocket" and bool(headers.get("Sec-WebSocket-Key"))


def _parse_params(raw: str) -> dict[str, str]:
    """``a=1&b=2`` as a dict; Binance's -1101 for a repeated name or too many parameters."""
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, errors="strict", max_num_fields=MAX_PARAMS)
    except UnicodeDecodeError:
        raise ApiError(400, -1100, "Illegal characters found in a parameter.") from None
    except ValueError:  # more than max_num_fields
        raise ApiError(400, -1101, "Too many parameters sent for this endpoint.") from None
    params = dict(pairs)
    if len(params) < len(pairs):
        raise ApiError(400, -1101, "Duplicate values for a parameter detected.")
    return params


_CLOCK_FIELDS = ("mode", "speed", "to", "step")


def _apply_clock(ex: LocalExchange, spec: dict) -> None:
    """``POST /_tradpal/clock``: check every field, then apply them (mode, to, step), so that
    a rejected request changes nothing."""
    unknown = sorted(set(spec) - set(_CLOCK_FIELDS))
    if unknown:
        raise ValueError(f"unknown clock field(s) {unknown}; use {', '.join(_CLOCK_FIELDS)}")
    mode = one_of(spec["mode"], "mode", CLOCK_MODES) if "mode" in spec else ex.clock.mode
    speed = check_speed(spec["speed"]) if "speed" in spec else None
    to = None
    if "to" in spec:
        if isinstance(spec["to"], bool) or not isinstance(spec["to"], (int, str)):
            raise SettingError("to", "a time in ms or an ISO 8601 string", spec["to"])
        to = to_ms(spec["to"])
    step = number(spec["step"], "step", low=0, integer=True) if "step" in spec else 0
    if "mode" in spec or speed is not None:
        ex.clock.set_mode(mode, speed)
    if to is not None:
        ex.clock.advance_to(to)
    if step:
        ex.clock.step(step)
    ex.engine.sync()


__all__ = ["LocalExchange", "RequestRecord"]
