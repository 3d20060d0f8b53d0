"""Accounts, orders and matching for the local exchange (Binance spot semantics).

Order types: MARKET, LIMIT, LIMIT_MAKER, STOP_LOSS, STOP_LOSS_LIMIT, TAKE_PROFIT,
TAKE_PROFIT_LIMIT; time in force GTC, IOC, FOK.

- A market order fills at once at the ask (buy) or bid (sell): the last price on the replayed
  path -/+ half the spread.
- A limit order that is marketable when placed fills at once at the ask/bid (taker); else it
  rests and fills at its limit price when the path reaches it, or at a candle's open when the
  open gaps through it (maker).
- A stop order (STOP_LOSS*, TAKE_PROFIT*) triggers when the path crosses its stopPrice; the
  market variant fills at the stop price (at the open on a gap), the limit variant becomes a
  limit order. Binance rejects a stop that would trigger at once; so does this engine.
- Fees: ``fee_rate`` of the received asset (base for buys, quote for sells), like Binance
  without BNB discounts, rounded to 8 decimals (an asset's precision).
- Parameters are checked as Binance checks them, before anything changes: decimal formats
  (-1100), precision (-1111), which parameters each order type takes (-1102, -1106, -1104),
  ``timeInForce`` (-1115), ``newClientOrderId`` (-1100) and the symbol filters PRICE_FILTER,
  LOT_SIZE, MARKET_LOT_SIZE and MIN_NOTIONAL (-1013), as advertised by ``exchangeInfo``
  (:class:`SymbolFilters`).

Everything is guarded by one lock; matching runs lazily, whenever a request arrives, over the
path between the last processed time and "now", so fills carry the replay time they happened.
"""

from __future__ import annotations

import itertools
import re
import threading
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Context, Decimal, localcontext

from .market import MarketData, Series

_EPS = 1e-12
ORDER_TYPES = ("MARKET", "LIMIT", "LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT",
               "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")
OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")
TIME_IN_FORCE = ("GTC", "IOC", "FOK")
RESPONSE_TYPES = ("ACK", "RESULT", "FULL")
DECIMAL_RE = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")  # Binance's legal ranges
INTEGER_RE = re.compile(r"^[0-9]{1,20}$")
CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")  # Binance's legal range
ASSET_PRECISION = Decimal("0.00000001")  # 8 decimals for every asset
# exact arithmetic on legal decimals (up to 20 + 20 digits): a notional, quantity x price, has
# up to 80 digits, which the default context would round to 28 before the MIN_NOTIONAL check
_EXACT = Context(prec=80)
# what POST /api/v3/order reads; anything else is refused with -1104, as Binance does, so that
# a parameter this engine does not implement (icebergQty, trailingDelta...) is never ignored
ORDER_PARAMS = frozenset({
    "symbol", "side", "type", "timeInForce", "quantity", "quoteOrderQty", "price", "stopPrice",
    "newClientOrderId", "newOrderRespType", "strategyId", "strategyType", "recvWindow",
    "timestamp", "signature"})
# which of the optional parameters each order type needs (the others are not allowed)
_NEEDS = {"MARKET": set(), "LIMIT": {"price", "timeInForce"}, "LIMIT_MAKER": {"price"},
          "STOP_LOSS": {"stopPrice"}, "TAKE_PROFIT": {"stopPrice"},
          "STOP_LOSS_LIMIT": {"price", "stopPrice", "timeInForce"},
          "TAKE_PROFIT_LIMIT": {"price", "stopPrice", "timeInForce"}}


class ApiError(Exception):
    """An error answered the way Binance answers it: HTTP status, code and message."""

    def __init__(self, http_status: int, code: int, msg: str):
        super().__init__(msg)
        self.http_status, self.code, self.msg = http_status, code, msg


def missing(name: str) -> ApiError:
    return ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def not_required(name: str) -> ApiError:
    return ApiError(400, -1106, f"Parameter '{name}' sent when not required.")


def filter_failure(name: str) -> ApiError:
    return ApiError(400, -1013, f"Filter failure: {name}")


@dataclass(frozen=True)
class SymbolFilters:
    """The filters every symbol advertises in ``exchangeInfo`` and the engine enforces."""

    min_price: Decimal = Decimal("0.00000001")
    max_price: Decimal = Decimal("1000000000")
    tick_size: Decimal = Decimal("0.00000001")
    min_qty: Decimal = Decimal("0.00000001")
    max_qty: Decimal = Decimal("9000000000")
    step_size: Decimal = Decimal("0.00000001")
    market_max_qty: Decimal = Decimal("9000000000")
    min_notional: Decimal = Decimal("5")  # in the quote asset; Binance's on USDT pairs

    def exchange_info(self) -> list[dict]:
        """The ``filters`` list of a symbol in ``exchangeInfo``."""
        f = "{:.8f}".format
        return [
            {"filterType": "PRICE_FILTER", "minPrice": f(self.min_price), "maxPrice": f(self.max_price),
             "tickSize": f(self.tick_size)},
            {"filterType": "LOT_SIZE", "minQty": f(self.min_qty), "maxQty": f(self.max_qty),
             "stepSize": f(self.step_size)},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": f(self.market_max_qty),
             "stepSize": "0.00000000"},
            {"filterType": "MIN_NOTIONAL", "minNotional": f(self.min_notional), "applyToMarket": True,
             "avgPriceMins": 0},
        ]

    def check_price(self, price: Decimal) -> None:
        on_tick = (price - self.min_price) % self.tick_size == 0
        if not (self.min_price <= price <= self.max_price and on_tick):
            raise filter_failure("PRICE_FILTER")

    def check_qty(self, qty: Decimal, *, market: bool) -> None:
        on_step = (qty - self.min_qty) % self.step_size == 0
        if not (self.min_qty <= qty <= self.max_qty and on_step):
            raise filter_failure("LOT_SIZE")
        if market and qty > self.market_max_qty:
            raise filter_failure("MARKET_LOT_SIZE")

    def check_notional(self, notional: Decimal) -> None:
        if notional < self.min_notional:
            raise filter_failure("MIN_NOTIONAL")

    def floor_qty(self, qty: Decimal) -> Decimal:
        """Round a quantity down to the lot step (a market buy by quoteOrderQty)."""
        steps = ((qty - self.min_qty) / self.step_size).to_integral_value(ROUND_FLOOR)
        return self.min_qty + steps * self.step_size


@dataclass
class Order:
    order_id: int
    client_id: str
    symbol: str  # market id, BTCUSDT
    side: str
    type: str
    tif: str
    qty: float
    price: float  # limit price, 0 if none
    stop_price: float  # 0 if none
    time: int
    quote_qty: float = 0.0  # origQuoteOrderQty for market buys by cost
    executed: float = 0.0
    cum_quote: float = 0.0
    status: str = "NEW"
    update_time: int = 0
    triggered: bool = False
    locked: float = 0.0  # amount still locked in the asset this order spends
    fills: list[dict] = field(default_factory=list)

    @property
    def remaining(self) -> float:
        return self.qty - self.executed

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass
class Trade:
    trade_id: int
    order_id: int
    symbol: str
    price: float
    qty: float
    commission: float
    commission_asset: str
    time: int
    is_buyer: bool
    is_maker: bool


class Account:
    """Balances per asset as ``[free, locked]``."""

    def __init__(self, balances: dict[str, float]):
        self.balances: dict[str, list[float]] = {a: [float(v), 0.0] for a, v in balances.items()}
        self.update_time = 0

    def bal(self, asset: str) -> list[float]:
        return self.balances.setdefault(asset, [0.0, 0.0])


class Engine:
    """Order book of one exchange: accounts keyed by API key, orders, trades, matching."""

    def __init__(self, market: MarketData, clock, faults, *,
                 balances: dict[str, float] | None = None, fee_rate: float = 0.001,
                 spread: float = 0.0, filters: SymbolFilters | None = None):
        self.market, self.clock = market, clock
        self.filters = filters or SymbolFilters()
        self.fee_rate, self.spread = float(fee_rate), float(spread)
        self.initial_balances = dict(balances or {"USDT": 10_000.0})
        self.accounts: dict[str, Account] = {}
        self.orders: dict[int, Order] = {}
        self.order_owner: dict[int, str] = {}
        self.trades: dict[str, list[Trade]] = {}
        self.faults = faults  # reads .partial_fill_fraction
        self.lock = threading.RLock()
        self._ids = itertools.count(1)
        self._trade_ids = itertools.count(1)
        self._synced_ms = clock.now_ms()

    # --- helpers -------------------------------------------------------------------------
    def account(self, api_key: str) -> Account:
        if api_key not in self.accounts:
            self.accounts[api_key] = Account(self.initial_balances)
        return self.accounts[api_key]

    def series(self, market_id: str | None) -> Series:
        if not market_id:
            raise missing("symbol")
        s = self.market.by_id.get(market_id)
        if s is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        return s

    def bid_ask(self, s: Series, ms: int) -> tuple[float, float]:
        p = s.price_at(ms)
        return p * (1 - self.spread / 2), p * (1 + self.spread / 2)

    # --- matching --------------------------------------------------------------------------
    def sync(self) -> int:
        """Match resting orders over the path from the last processed time to now."""
        with self.lock:
            now = self.clock.now_ms()
            if now > self._synced_ms:
                resting = [o for o in self.orders.values() if o.is_open]
                by_symbol: dict[str, list[Order]] = {}
                for o in resting:
                    by_symbol.setdefault(o.symbol, []).append(o)
                for market_id, orders in by_symbol.items():
                    self._walk(self.market.by_id[market_id], orders, self._synced_ms, now)
                self._synced_ms = now
            return now

    def _walk(self, s: Series, orders: list[Order], start: int, end: int) -> None:
        points = s.path(start, end)
        matched: set[int] = set()  # with partial fills: one fill per order per sync
        for (_, p0, _), (t1, p1, jumped) in zip(points, points[1:]):
            for o in orders:
                if o.is_open and o.order_id not in matched:
                    if self._match(s, o, p0, p1, jumped, int(t1)):
                        matched.add(o.order_id)

    def _match(self, s: Series, o: Order, p0: float, p1: float, jumped: bool, t: int) -> bool:
        if o.type != "LIMIT" and o.type != "LIMIT_MAKER" and not o.triggered:
            up = (o.side == "BUY") == o.type.startswith("STOP_LOSS")  # triggers on a rise
            lo, hi = (p1, p1) if jumped else (min(p0, p1), max(p0, p1))
            if not (hi >= o.stop_price if up else lo <= o.stop_price):
                return False
            trigger = p1 if jumped else o.stop_price
            o.triggered = True
            if not o.type.endswith("_LIMIT"):
                return self._fill(s, o, trigger, t, maker=False)
            # the stop-limit became a limit order at the trigger price
            if (o.side == "BUY" and o.price >= trigger) or (o.side == "SELL" and o.price <= trigger):
                return self._fill(s, o, trigger, t, maker=False)
            p0, jumped = trigger, False
        if o.side == "BUY":
            if jumped and p1 <= o.price:
                return self._fill(s, o, p1, t, maker=True)
            if not jumped and min(p0, p1) <= o.price:
                return self._fill(s, o, o.price, t, maker=True)
        else:
            if jumped and p1 >= o.price:
                return self._fill(s, o, p1, t, maker=True)
            if not jumped and max(p0, p1) >= o.price:
                return self._fill(s, o, o.price, t, maker=True)
        return False

    def _fill(self, s: Series, o: Order, price: float, t: int, *, maker: bool,
              qty: float | None = None) -> bool:
        """Book a fill of ``qty`` (default: the remaining quantity, or the partial-fill share)."""
        if qty is None:
            qty = o.remaining
            fraction = self.faults.partial_fill_fraction
            if fraction is not None:
                qty = min(qty, max(o.qty * fraction, _EPS))
        acct = self.account(self.order_owner[o.order_id])
        cost = qty * price
        if o.side == "BUY":
            quote = acct.bal(s.quote)
            release = min(o.locked, o.locked * qty / max(o.remaining, _EPS))
            if quote[0] + release < cost - 1e-9:  # a gap made it dearer than what was locked
                self._close(o, "EXPIRED", t)
                return False
            quote[1] -= release
            o.locked -= release
            quote[0] += release - cost
            # Binance books commissions in whole units of 8 decimals, so balances stay on them
            commission, fee_asset = round(qty * self.fee_rate, 8), s.base
            acct.bal(s.base)[0] += qty - commission
        else:
            base = acct.bal(s.base)
            base[1] -= qty
            o.locked -= qty
            commission, fee_asset = round(cost * self.fee_rate, 8), s.quote
            acct.bal(s.quote)[0] += cost - commission
        o.executed += qty
        o.cum_quote += cost
        o.update_time = acct.update_time = t
        trade = Trade(next(self._trade_ids), o.order_id, o.symbol, price, qty, commission,
                      fee_asset, t, o.side == "BUY", maker)
        self.trades.setdefault(self.order_owner[o.order_id], []).append(trade)
        o.fills.append({"price": f"{price:.8f}", "qty": f"{qty:.8f}",
                        "commission": f"{commission:.8f}", "commissionAsset": fee_asset,
                        "tradeId": trade.trade_id})
        o.status = "FILLED" if o.remaining <= _EPS * max(o.qty, 1) else "PARTIALLY_FILLED"
        if o.status == "FILLED":
            self._unlock(o)
        return True

    def _unlock(self, o: Order) -> None:
        if o.locked > 0:
            s = self.market.by_id[o.symbol]
            bal = self.account(self.order_owner[o.order_id]).bal(s.quote if o.side == "BUY" else s.base)
            bal[0] += o.locked
            bal[1] -= o.locked
            o.locked = 0.0

    def _close(self, o: Order, status: str, t: int) -> None:
        o.status, o.update_time = status, t
        self._unlock(o)

    # --- requests ---------------------------------------------------------------------------
    def place(self, api_key: str, p: dict[str, str]) -> Order:
        """Validate and place an order from Binance request parameters."""
        with self.lock:
            now = self.sync()
            s, side, otype, tif, client_id, qty, quote_qty, price, stop = self.check_order(p, now)
            for o in self.orders.values():
                if o.client_id == client_id and o.is_open and self.order_owner[o.order_id] == api_key:
                    raise ApiError(400, -2010, "Duplicate order sent.")
            bid, ask = self.bid_ask(s, now)
            exec_price = ask if side == "BUY" else bid
            o = Order(next(self._ids), client_id, s.market_id, side, otype, tif, qty, price or 0.0,
                      stop or 0.0, now, quote_qty=quote_qty or 0.0, update_time=now)
            last = s.price_at(now)
            if stop is not None:
                up = (side == "BUY") == otype.startswith("STOP_LOSS")
                if (up and last >= stop) or (not up and last <= stop):
                    raise ApiError(400, -2010, "Stop price would trigger immediately.")
            marketable = otype == "MARKET" or (
                otype in ("LIMIT", "LIMIT_MAKER") and (price >= ask if side == "BUY" else price <= bid))
            if otype == "LIMIT_MAKER" and marketable:
                raise ApiError(400, -2010, "Order would immediately match and take.")
            acct = self.account(api_key)
            # lock what the order may spend; market orders spend at once
            lock_price = exec_price if marketable else (price or stop)
            need = qty * lock_price if side == "BUY" else qty
            asset = s.quote if side == "BUY" else s.base
            bal = acct.bal(asset)
            if bal[0] < need - 1e-9:
                raise ApiError(400, -2010, "Account has insufficient balance for requested action.")
            bal[0] -= need
            bal[1] += need
            o.locked = need
            self.orders[o.order_id] = o
            self.order_owner[o.order_id] = api_key
            if marketable:
                self._fill(s, o, exec_price, now, maker=False)
                if o.is_open and (otype == "MARKET" or tif in ("IOC", "FOK")):
                    self._close(o, "EXPIRED", now)  # no more liquidity: the rest expires
            elif tif in ("IOC", "FOK"):
                self._close(o, "EXPIRED", now)
            return o

    def check_order(self, p: dict[str, str], now: int):
        """Check the parameters of a new order as Binance does, without placing it (also
        ``POST /api/v3/order/test``); return ``(series, side, type, timeInForce, client id,
        quantity, quoteOrderQty, price, stopPrice)``, numbers as floats or None. A market
        order by ``quoteOrderQty`` gets its quantity, rounded down to the lot step."""
        s = self.series(p.get("symbol"))
        with localcontext(_EXACT):
            side, otype, tif, client_id, qty, quote_qty, price, stop = self._order_params(p)
            bid, ask = self.bid_ask(s, now)
            exec_price = Decimal(repr(ask if side == "BUY" else bid))
            if otype == "MARKET" and quote_qty is not None:
                self.filters.check_notional(quote_qty)
                qty = self.filters.floor_qty(quote_qty / exec_price)
                self.filters.check_qty(qty, market=True)
            else:
                self.filters.check_notional(qty * (exec_price if otype == "MARKET" else price or stop))
        return (s, side, otype, tif, client_id, float(qty), _float(quote_qty), _float(price),
                _float(stop))

    def _order_params(self, p: dict[str, str]):
        """The parameters of a new order, checked one by one: ``(side, type, timeInForce,
        client id, quantity, quoteOrderQty, price, stopPrice)``, numbers as Decimals."""
        side = p.get("side")
        if not side:
            raise missing("side")
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1117, "Invalid side.")
        otype = p.get("type")
        if not otype:
            raise missing("type")
        if otype not in ORDER_TYPES:
            raise ApiError(400, -1116, "Invalid orderType.")
        read = [k for k in p if k in ORDER_PARAMS]
        if len(read) < len(p):
            raise ApiError(400, -1104, f"Not all sent parameters were read; read '{len(read)}' "
                                       f"parameter(s) but was sent '{len(p)}'.")
        nums = {n: decimal_param(p, n) for n in ("quantity", "quoteOrderQty", "price", "stopPrice")}
        request_param(p, "strategyId", int)
        request_param(p, "strategyType", int)
        client_id = p.get("newClientOrderId")
        if client_id is not None and not CLIENT_ID_RE.fullmatch(client_id):
            raise illegal("newClientOrderId", CLIENT_ID_RE.pattern)
        if p.get("newOrderRespType") not in (None, *RESPONSE_TYPES):
            raise ApiError(400, -1100, "Illegal characters found in parameter 'newOrderRespType'.")
        tif = p.get("timeInForce")
        if tif is not None and tif not in TIME_IN_FORCE:
            raise ApiError(400, -1115, "Invalid timeInForce.")
        needs = _NEEDS[otype]
        for name in ("price", "stopPrice", "timeInForce"):
            sent = nums.get(name) is not None if name != "timeInForce" else tif is not None
            if name in needs and not sent:
                raise missing(name)
            if sent and name not in needs:
                raise not_required(name)
        qty, quote_qty = nums["quantity"], nums["quoteOrderQty"]
        if otype == "MARKET":
            if qty is None and quote_qty is None:
                raise ApiError(400, -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!")
            if qty is not None and quote_qty is not None:
                raise not_required("quoteOrderQty")
        else:
            if qty is None:
                raise missing("quantity")
            if quote_qty is not None:
                raise not_required("quoteOrderQty")
        for name, value in nums.items():
            if value is not None and value % ASSET_PRECISION:
                raise ApiError(400, -1111, f"Parameter '{name}' has too much precision.")
        for name in ("price", "stopPrice"):
            if nums[name] is not None:
                self.filters.check_price(nums[name])
        if qty is not None:
            self.filters.check_qty(qty, market=otype == "MARKET")
        client_id = client_id or f"tradpal{next(self._ids)}x"
        return side, otype, tif or "GTC", client_id, qty, quote_qty, nums["price"], nums["stopPrice"]

    def find(self, api_key: str, p: dict[str, str]) -> Order:
        s = self.series(p.get("symbol"))
        oid, cid = request_param(p, "orderId", int), p.get("origClientOrderId")
        if oid is None and not cid:
            raise ApiError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        for o in self.orders.values():
            if self.order_owner[o.order_id] == api_key and o.symbol == s.market_id and (
                    o.order_id == oid if oid is not None else o.client_id == cid):
                return o
        raise ApiError(400, -2013, "Order does not exist.")

    def cancel(self, api_key: str, p: dict[str, str]) -> Order:
        with self.lock:
            now = self.sync()
            try:
                o = self.find(api_key, p)
            except ApiError as e:
                if e.code == -2013:
                    raise ApiError(400, -2011, "Unknown order sent.") from None
                raise
            if not o.is_open:
                raise ApiError(400, -2011, "Unknown order sent.")
            self._close(o, "CANCELED", now)
            return o

    def open_orders(self, api_key: str, market_id: str | None) -> list[Order]:
        if market_id:
            self.series(market_id)
        return [o for o in self.orders.values() if o.is_open and self.order_owner[o.order_id] == api_key
                and (not market_id or o.symbol == market_id)]

    def all_orders(self, api_key: str, market_id: str) -> list[Order]:
        self.series(market_id)
        return [o for o in self.orders.values()
                if self.order_owner[o.order_id] == api_key and o.symbol == market_id]

    def my_trades(self, api_key: str, market_id: str) -> list[Trade]:
        self.series(market_id)
        return [t for t in self.trades.get(api_key, []) if t.symbol == market_id]


def illegal(name: str, legal: str) -> ApiError:
    return ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'.")


def request_param(p: dict[str, str], name: str, kind: type = float, default=None):
    """A numeric request parameter (``kind`` int, float or Decimal), ``default`` when absent; Binance's
    -1100 error unless it is plain decimal text: no sign, exponent, ``nan``, ``inf``, spaces or
    underscores (which Python's ``float()`` would accept)."""
    raw = p.get(name)
    if raw is None or raw == "":
        return default
    pattern = INTEGER_RE if kind is int else DECIMAL_RE
    if not pattern.fullmatch(raw):
        raise illegal(name, pattern.pattern)
    return kind(raw)


def _float(x: Decimal | None) -> float | None:
    return None if x is None else float(x)


def decimal_param(p: dict[str, str], name: str) -> Decimal | None:
    """A decimal request parameter, exactly as sent (None when absent)."""
    return request_param(p, name, Decimal)
