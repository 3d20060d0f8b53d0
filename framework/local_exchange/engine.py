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
  without BNB discounts.

Everything is guarded by one lock; matching runs lazily, whenever a request arrives, over the
path between the last processed time and "now", so fills carry the replay time they happened.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

from .market import MarketData, Series

_EPS = 1e-12
ORDER_TYPES = ("MARKET", "LIMIT", "LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT",
               "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")
OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")


class ApiError(Exception):
    """An error answered the way Binance answers it: HTTP status, code and message."""

    def __init__(self, http_status: int, code: int, msg: str):
        super().__init__(msg)
        self.http_status, self.code, self.msg = http_status, code, msg


def missing(name: str) -> ApiError:
    return ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


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
                 spread: float = 0.0):
        self.market, self.clock = market, clock
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
            commission, fee_asset = qty * self.fee_rate, s.base
            acct.bal(s.base)[0] += qty - commission
        else:
            base = acct.bal(s.base)
            base[1] -= qty
            o.locked -= qty
            commission, fee_asset = cost * self.fee_rate, s.quote
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
            s = self.series(p.get("symbol"))
            side = (p.get("side") or "").upper()
            if side not in ("BUY", "SELL"):
                raise missing("side") if not side else ApiError(400, -1100, "Illegal characters found in parameter 'side'.")
            otype = (p.get("type") or "").upper()
            if not otype:
                raise missing("type")
            if otype not in ORDER_TYPES:
                raise ApiError(400, -1116, "Invalid orderType.")
            client_id = p.get("newClientOrderId") or f"tradpal{next(self._ids)}x"
            for o in self.orders.values():
                if o.client_id == client_id and o.is_open and self.order_owner[o.order_id] == api_key:
                    raise ApiError(400, -2010, "Duplicate order sent.")
            qty = _num(p, "quantity")
            quote_qty = _num(p, "quoteOrderQty")
            price = _num(p, "price")
            stop = _num(p, "stopPrice")
            bid, ask = self.bid_ask(s, now)
            if otype == "MARKET":
                if qty is None and quote_qty is None:
                    raise ApiError(400, -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!")
                if qty is None:
                    qty = quote_qty / (ask if side == "BUY" else bid)
            else:
                if qty is None:
                    raise missing("quantity")
                if otype in ("LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT") and price is None:
                    raise missing("price")
                if otype.startswith(("STOP_LOSS", "TAKE_PROFIT")) and stop is None:
                    raise missing("stopPrice")
            if qty <= 0 or (price is not None and price <= 0) or (stop is not None and stop <= 0):
                raise ApiError(400, -1013, "Invalid quantity or price: must be greater than zero.")
            tif = (p.get("timeInForce") or "GTC").upper()
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
            exec_price = ask if side == "BUY" else bid
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

    def find(self, api_key: str, p: dict[str, str]) -> Order:
        s = self.series(p.get("symbol"))
        oid, cid = p.get("orderId"), p.get("origClientOrderId")
        if not oid and not cid:
            raise ApiError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        for o in self.orders.values():
            if self.order_owner[o.order_id] == api_key and o.symbol == s.market_id and (
                    (oid and str(o.order_id) == oid) or (not oid and o.client_id == cid)):
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


_LEGAL = {float: "^([0-9]{1,20})(\\.[0-9]{1,20})?$", int: "^[0-9]{1,20}$"}


def request_param(p: dict[str, str], name: str, kind: type = float, default=None):
    """A numeric request parameter, ``default`` when absent; Binance's -1100 error when malformed."""
    raw = p.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '{_LEGAL[kind]}'.") from None


def _num(p: dict[str, str], name: str) -> float | None:
    return request_param(p, name, float)
