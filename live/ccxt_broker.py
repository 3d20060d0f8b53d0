"""A broker that trades on a real (or the local) exchange through ccxt.

Guarantees (see :class:`CcxtBroker`):

- **Never doubles an order.** Every order carries the runner's deterministic client order id.
  ``create_order`` is never blindly retried: after a timeout, a lost answer, a dropped
  connection or a 5xx the broker asks the exchange for the order by that id, and resends only
  when the exchange has not got it -- and only once the first request can no longer arrive: it
  was sent with a receive window (Binance's ``recvWindow``, ``order_window_ms``), after which
  the exchange refuses it, and the broker waits out that window (plus ``clock_skew_ms``) before
  the lookup that decides. A 429 answer (rate limit) means the request was refused unread: it is
  resent after the backoff or the server's ``Retry-After``, whichever is longer.
- **Bounded.** At most ``retry.max_retries + 1`` sends per order; an order the exchange keeps
  answering "not found" for is reported ``lost`` with the reason.
- **Rejections are final.** ``InsufficientFunds``, ``InvalidOrder`` and the exchange's other
  refusals are not retried: the order is ``rejected`` with the exchange's words.
- **Precision and limits.** Quantities are truncated and prices rounded to the market's
  precision (ccxt's ``amount_to_precision`` / ``price_to_precision``), then checked against the
  market's minimum amount and minimum cost: an order that fails is rejected with a clear reason
  before anything is sent.
- **Notional cap.** With ``max_order_notional`` (on by default in ``tradpal live``) an order
  that opens or adds to a position and is worth more than the cap in the quote currency is
  rejected before it is sent; exits (``reduce_only``) always pass, so a position can be closed.
- **Reads and cancels** (order, trades, balance, open orders) are retried with exponential
  backoff and jitter, honouring ``Retry-After``.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ccxt

from framework.exchange import ExchangeAccessError, RetryPolicy, call_with_retries, retry_after_s

from .broker import BrokerFill, OrderRequest, OrderStatus, OrderUpdate

STOP_TYPES = ("stop", "stop_limit", "take_profit")
# the prices each order type needs
_NEEDS = {"market": (), "limit": ("price",), "stop": ("trigger",),
          "stop_limit": ("price", "trigger"), "take_profit": ("trigger",)}
# what Binance-style markets list in ``info["orderTypes"]`` for exchange-side stops and targets
_STOP_ORDER_TYPES = {"STOP_LOSS", "TAKE_PROFIT"}
# errors that say this account cannot trade at all: raised, never turned into a rejection
_ACCOUNT_ERRORS = (ccxt.AuthenticationError, ccxt.PermissionDenied, ccxt.AccountSuspended)
# exchanges whose trade history pages by trade id (``fromId``)
_FROM_ID_EXCHANGES = frozenset({"binance", "binanceus"})
_CCXT_STATUS: dict[str, OrderStatus] = {
    "closed": "filled", "canceled": "cancelled", "cancelled": "cancelled", "expired": "expired",
    "rejected": "rejected"}


class BrokerError(ExchangeAccessError):
    """A broker request failed for good (retries exhausted, or a ``Retry-After`` beyond the
    retry policy). Raised only where nothing was placed or changed by the broker."""


@dataclass(frozen=True)
class AssetBalance:
    """One asset of the account, as the exchange reports it."""

    free: float
    used: float  # locked in open orders
    total: float


@dataclass(frozen=True)
class _Send:
    """An order checked and rounded, ready to send."""

    call: Callable[[], dict]
    amount: float | None


class CcxtBroker:
    """The :class:`live.broker.Broker` protocol over a ccxt exchange.

    Args:
        exchange: a ccxt exchange with credentials (see :func:`framework.exchange.create_exchange`).
        retry: backoff for reads, cancels and resends (jittered by default).
        not_found_retries: how many more times an order is asked for while the exchange answers
            "not found", before it counts as absent (``fetch_order``: ``lost``).
        order_window_ms: how long after sending an order the exchange may still accept it; sent
            as ``recvWindow`` to exchanges that take one (Binance), after which they refuse it.
        clock_skew_ms: allowance for the exchange's clock running ahead of this machine's
            (Binance accepts requests stamped up to 1 s in its future).
        page_limit: trades per ``fetch_my_trades`` page.
        max_order_notional: largest notional (quote currency: qty x limit, trigger or reference
            price, or a market order's cost) of an order that is not ``reduce_only``; a larger
            one, or one whose notional cannot be known, is rejected unsent. None: no cap.
        sleep, clock, rng: how to wait, a monotonic clock in seconds, and the jitter's random
            source (inject them in tests).
    """

    def __init__(self, exchange: ccxt.Exchange, *,
                 retry: RetryPolicy = RetryPolicy(max_retries=4, base_delay_s=0.5, factor=2.0,
                                                  max_delay_s=30.0, jitter="full"),
                 not_found_retries: int = 2, order_window_ms: int = 5_000,
                 clock_skew_ms: int = 1_000, page_limit: int = 500,
                 max_order_notional: float | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        for name, value, low in (("not_found_retries", not_found_retries, 0),
                                 ("order_window_ms", order_window_ms, 1),
                                 ("clock_skew_ms", clock_skew_ms, 0), ("page_limit", page_limit, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"CcxtBroker: {name} must be a whole number >= {low}, got {value!r}")
        if max_order_notional is not None and not (
                isinstance(max_order_notional, (int, float)) and not isinstance(max_order_notional, bool)
                and 0 < max_order_notional < float("inf")):
            raise ValueError(f"CcxtBroker: max_order_notional must be a finite number > 0 or None, "
                             f"got {max_order_notional!r}")
        self.exchange, self.retry = exchange, retry
        self.max_order_notional = None if max_order_notional is None else float(max_order_notional)
        self.not_found_retries, self.page_limit = not_found_retries, page_limit
        #: network errors met, by ccxt error class, and retries made, by operation (read by the
        #: runner's metrics: ``tradpal_exchange_errors``, ``tradpal_retries``)
        self.errors: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.order_window_ms, self.clock_skew_ms = order_window_ms, clock_skew_ms
        self._sleep, self._clock, self._rng = sleep, clock, rng or random.Random()
        self._client_ids: dict[tuple[str, str], str] = {}  # (symbol, exchange order id) -> client id
        if "recvWindow" in exchange.options:  # Binance family: the exchange enforces the window
            exchange.options["recvWindow"] = order_window_ms
        if isinstance(exchange.options.get("fetchOpenOrders"), dict):  # open_orders(None) is meant
            exchange.options["fetchOpenOrders"]["warnWithoutSymbol"] = False

    # --- reading ---------------------------------------------------------------------------
    def _read(self, fn: Callable[..., Any], *args: Any, what: str) -> Any:
        operation = what.split()[0]

        def count(e: Exception) -> None:
            self.errors[type(e).__name__] += 1
            self.retries[operation] += 1

        return call_with_retries(fn, *args, retry=self.retry, what=f"{self.exchange.id} {what}",
                                 exchange=self.exchange, sleep=self._sleep, rng=self._rng,
                                 error=BrokerError, on_error=count)

    def _market(self, symbol: str) -> dict:
        if not self.exchange.markets:
            self._read(self.exchange.load_markets, what="load_markets")
        if symbol not in self.exchange.markets:
            raise ValueError(f"{self.exchange.id} has no market {symbol!r} (symbol)")
        return self.exchange.markets[symbol]

    def supports_stop_orders(self, symbol: str) -> bool:
        """True when stop and take-profit orders on ``symbol`` can rest on the exchange;
        otherwise the runner watches them and sends a market order when they trigger."""
        market = self._market(symbol)
        types = (market.get("info") or {}).get("orderTypes")
        if isinstance(types, list):  # Binance-style markets list what they take
            return _STOP_ORDER_TYPES <= set(types)
        has = self.exchange.has
        return bool(has.get("createStopLossOrder") and has.get("createTakeProfitOrder"))

    def _update(self, client_order_id: str, order: dict) -> OrderUpdate:
        """An :class:`OrderUpdate` from a ccxt order; remembers its exchange id."""
        filled = float(order.get("filled") or 0.0)
        status = _CCXT_STATUS.get(order.get("status") or "")
        if status is None:  # open (or not said)
            status = "partially_filled" if filled > 0 else "submitted"
        oid = None if order.get("id") is None else str(order["id"])
        if oid is not None and order.get("symbol"):
            self._client_ids[(order["symbol"], oid)] = client_order_id
        return OrderUpdate(client_order_id, status, filled, oid)

    def _find(self, client_order_id: str, symbol: str, asks: int) -> dict | None:
        """The exchange's order with this client id, asking up to ``asks`` times (with backoff)
        while it answers "not found"; None if it never knew it. Network errors are retried."""
        delays = self.retry.delays(self._rng)
        for ask in range(asks):
            if ask:
                self._sleep(next(delays))
            try:
                return self._read(self.exchange.fetch_order, None, symbol,
                                  {"clientOrderId": client_order_id},
                                  what=f"fetch_order {symbol} client id {client_order_id}")
            except ccxt.OrderNotFound:
                continue
            except (ccxt.NotSupported, ccxt.ArgumentsRequired):  # no lookup by client id here
                return self._scan(client_order_id, symbol)
        return None

    def _scan(self, client_order_id: str, symbol: str) -> dict | None:
        """Look for the client id among the open and the closed orders (exchanges that cannot
        fetch an order by client id)."""
        for fetch in (self.exchange.fetch_open_orders, self.exchange.fetch_closed_orders):
            for order in self._read(fetch, symbol, what=f"{fetch.__name__} {symbol}"):
                if order.get("clientOrderId") == client_order_id:
                    return order
        return None

    def fetch_order(self, client_order_id: str, symbol: str) -> OrderUpdate:
        """The order's state on the exchange. When the exchange answers "not found"
        ``1 + not_found_retries`` times in a row, the order is reported ``lost``."""
        order = self._find(client_order_id, symbol, 1 + self.not_found_retries)
        if order is None:
            return OrderUpdate(client_order_id, "lost", reason=(
                f"{self.exchange.id} answered 'not found' {1 + self.not_found_retries} times "
                f"for client order id {client_order_id} on {symbol}"))
        return self._update(client_order_id, order)

    def open_orders(self, symbol: str | None = None) -> list[OrderUpdate]:
        """Open orders of the account (on ``symbol``, or on every market)."""
        orders = self._read(self.exchange.fetch_open_orders, symbol,
                            what=f"fetch_open_orders {symbol or '(all symbols)'}")
        return [self._update(o.get("clientOrderId") or str(o["id"]), o) for o in orders]

    def open_order_requests(self, symbol: str) -> list[tuple[OrderRequest, OrderUpdate]]:
        """Open orders on ``symbol`` as the request each one is (side, type, quantity, prices)
        and its state: what a runner needs to adopt an order it has no record of."""
        orders = self._read(self.exchange.fetch_open_orders, symbol, what=f"fetch_open_orders {symbol}")
        out = []
        for o in orders:
            cid = o.get("clientOrderId") or str(o["id"])
            kind = str(o.get("type") or "limit").lower()
            trigger = o.get("triggerPrice") or o.get("stopPrice")
            otype = kind if kind in ("market", "limit") else ("take_profit" if "take" in kind else "stop")
            if otype == "stop" and "limit" in kind:
                otype = "stop_limit"
            price = o.get("price") if otype in ("limit", "stop_limit") else None
            out.append((OrderRequest(cid, symbol, o["side"], otype, float(o.get("amount") or 0.0) or None,
                                     None if price is None else float(price),
                                     None if trigger is None else float(trigger)),
                        self._update(cid, o)))
        return out

    def balance(self) -> dict[str, AssetBalance]:
        """Free, locked and total amount of every asset the exchange lists for the account."""
        raw = self._read(self.exchange.fetch_balance, what="fetch_balance")
        free, used, total = (raw.get(k) or {} for k in ("free", "used", "total"))
        return {asset: AssetBalance(float(free.get(asset) or 0.0), float(used.get(asset) or 0.0),
                                    float(amount or 0.0))
                for asset, amount in total.items()}

    def fills_since(self, symbol: str, since_ms: int | None) -> list[BrokerFill]:
        """This account's executions on ``symbol`` from ``since_ms`` on (all when None), oldest
        first, one per exchange trade id, with the exchange's price, quantity and fee.

        Pages of ``page_limit`` trades: on Binance each next page starts after the last trade
        id (``fromId``), exact however many trades share a millisecond; elsewhere at the last
        page's latest timestamp, de-duplicated by trade id."""
        trades: dict[str, dict] = {}
        cursor, params = since_ms, {}
        while True:
            page = self._read(self.exchange.fetch_my_trades, symbol, cursor, self.page_limit,
                              params, what=f"fetch_my_trades {symbol} since {cursor} {params}")
            new = [t for t in page if str(t["id"]) not in trades]
            trades.update((str(t["id"]), t) for t in new)
            if len(page) < self.page_limit:
                break
            if self.exchange.id in _FROM_ID_EXCHANGES:
                cursor, params = None, {"fromId": max(int(t["id"]) for t in page) + 1}
            else:  # a full page already seen, all in one millisecond: step past it
                last = max(int(t["timestamp"]) for t in page)
                cursor = last if new else last + 1
        ordered = sorted(trades.values(), key=lambda t: (int(t["timestamp"]), str(t["id"])))
        return [self._fill(symbol, t) for t in ordered]

    def _fill(self, symbol: str, trade: dict) -> BrokerFill:
        fee = trade.get("fee") or {}
        return BrokerFill(
            trade_id=str(trade["id"]), client_order_id=self._client_id(symbol, str(trade["order"])),
            symbol=symbol, side=trade["side"], qty=float(trade["amount"]),
            price=float(trade["price"]), fee=float(fee.get("cost") or 0.0),
            fee_currency=fee.get("currency") or "", timestamp_ms=int(trade["timestamp"]))

    def _client_id(self, symbol: str, order_id: str) -> str:
        """The client order id of an exchange order id (asked once, then remembered)."""
        key = (symbol, order_id)
        if key not in self._client_ids:
            order = self._read(self.exchange.fetch_order, order_id, symbol,
                               what=f"fetch_order {symbol} id {order_id}")
            self._client_ids[key] = order.get("clientOrderId") or order_id
        return self._client_ids[key]

    # --- orders ----------------------------------------------------------------------------
    def _rejected(self, order: OrderRequest, reason: str) -> OrderUpdate:
        return OrderUpdate(order.client_order_id, "rejected", reason=reason)

    def _prepare(self, order: OrderRequest, market: dict) -> _Send | str:
        """The ccxt call for ``order``, rounded to the market's precision and checked against
        its limits; or the reason to reject it."""
        ex, symbol = self.exchange, order.symbol
        if order.type in STOP_TYPES and not self.supports_stop_orders(symbol):
            return (f"{ex.id} takes no stop or take-profit orders on {symbol}: the runner must "
                    f"watch this {order.type} order (supports_stop_orders is False)")
        needs = _NEEDS.get(order.type)
        if needs is None:
            return f"unknown order type {order.type!r}; use one of {', '.join(_NEEDS)}"
        for name in needs:
            if getattr(order, name) is None:
                return f"a {order.type} order needs {name}"
        limits = market.get("limits") or {}
        min_cost = (limits.get("cost") or {}).get("min")
        params: dict[str, Any] = {"clientOrderId": order.client_order_id}
        if order.reduce_only and market.get("contract"):  # spot has no reduce-only flag
            params["reduceOnly"] = True
        if order.qty is None:
            if order.type != "market" or order.cost is None:
                return "qty is None: only a market order sized by cost may leave it out"
            over = self._over_cap(order, order.cost)
            if over:
                return over
            if min_cost and order.cost < min_cost:
                return (f"cost {order.cost:g} is below {symbol}'s minimum order cost "
                        f"{min_cost:g} (min notional)")
            if not ex.has.get("createMarketOrderWithCost"):
                return f"{ex.id} cannot size a market order by cost (quote amount)"
            return _Send(lambda: ex.create_market_order_with_cost(symbol, order.side, order.cost,
                                                                  params), None)
        try:
            amount = float(ex.amount_to_precision(symbol, order.qty))
            price = None if order.price is None else float(ex.price_to_precision(symbol, order.price))
            trigger = (None if order.trigger is None
                       else float(ex.price_to_precision(symbol, order.trigger)))
        except (ccxt.InvalidOrder, ccxt.ArgumentsRequired) as e:  # e.g. rounds down to nothing
            return f"qty {order.qty:g} / price: {e}"
        amount_limits = limits.get("amount") or {}
        if amount <= 0 or amount < (amount_limits.get("min") or 0):
            return (f"qty {order.qty:g} rounds to {amount:g}, below {symbol}'s minimum amount "
                    f"{amount_limits.get('min') or 0:g}")
        if amount_limits.get("max") and amount > amount_limits["max"]:
            return f"qty {amount:g} is above {symbol}'s maximum amount {amount_limits['max']:g}"
        reference = price or trigger or order.ref_price
        over = self._over_cap(order, None if reference is None else amount * reference)
        if over:
            return over
        if min_cost and reference and amount * reference < min_cost:
            return (f"notional {amount:g} x {reference:g} = {amount * reference:g} is below "
                    f"{symbol}'s minimum order cost {min_cost:g} (min notional)")
        kind = "limit" if order.type in ("limit", "stop_limit") else "market"
        if order.type in ("stop", "stop_limit"):
            params["triggerPrice"] = trigger
        elif order.type == "take_profit":
            params["takeProfitPrice"] = trigger
        return _Send(lambda: ex.create_order(symbol, kind, order.side, amount, price, params),
                     amount)

    def _over_cap(self, order: OrderRequest, notional: float | None) -> str | None:
        """Why ``order`` breaks ``max_order_notional`` (None when it does not)."""
        cap = self.max_order_notional
        if cap is None or order.reduce_only:
            return None
        if notional is None:
            return (f"max_order_notional {cap:g}: the notional of this {order.type} order is "
                    "unknown (no price, trigger or ref_price), so it is not sent")
        if notional > cap:
            return (f"notional {notional:g} is above max_order_notional {cap:g} "
                    "(--max-order-notional): not sent")
        return None

    def submit(self, order: OrderRequest) -> OrderUpdate:
        """Place ``order`` once, whatever the network does (see the module's guarantees).

        Returns its state: ``submitted`` / ``partially_filled`` / ``filled`` / ... as the
        exchange answered; ``rejected`` with the reason (the exchange's words, or the precision
        or limit it fails); ``lost`` when every send failed and the exchange has never had it;
        ``submitted`` with a reason starting "outcome unknown" when the exchange could not even
        be asked (ask :meth:`fetch_order` later). Raises :class:`BrokerError` only when the
        markets cannot be loaded, before anything is sent."""
        cid, symbol = order.client_order_id, order.symbol
        try:
            prepared = self._prepare(order, self._market(symbol))
        except ValueError as e:
            return self._rejected(order, str(e))
        if isinstance(prepared, str):
            return self._rejected(order, prepared)
        delays = self.retry.delays(self._rng)
        failures: list[str] = []
        for attempt in range(self.retry.max_retries + 1):
            if attempt:
                self.retries["submit"] += 1
            sent_at = self._clock()
            try:
                return self._update(cid, prepared.call())
            except ccxt.DDoSProtection as e:  # 429: refused unread, nothing to look up
                self.errors[type(e).__name__] += 1
                failures.append(f"{type(e).__name__}: {e}")
                wait, server_wait = next(delays), retry_after_s(self.exchange, e)
                if server_wait is not None and server_wait > self.retry.max_delay_s:
                    return self._rejected(order, (
                        f"not placed: {self.exchange.id} is rate limiting and asks to wait "
                        f"{server_wait:g} s (Retry-After), longer than the retry policy allows "
                        f"(max_delay_s={self.retry.max_delay_s:g} s)"))
                self._sleep(max(wait, server_wait or 0.0))
                continue
            except ccxt.NetworkError as e:  # timeout, lost answer, dropped connection, 5xx
                self.errors[type(e).__name__] += 1
                failures.append(f"{type(e).__name__}: {e}")
                already_there = False
            except _ACCOUNT_ERRORS:
                raise
            except ccxt.DuplicateOrderId as e:
                failures.append(f"{type(e).__name__}: {e}")
                already_there = True
            except ccxt.InvalidOrder as e:
                if "duplicate order" not in str(e).lower():  # Binance: -2010 "Duplicate order sent."
                    return self._rejected(order, str(e))
                failures.append(f"{type(e).__name__}: {e}")
                already_there = True
            except ccxt.ExchangeError as e:  # InsufficientFunds, BadRequest, ...: final
                return self._rejected(order, str(e))
            try:
                found = self._find(cid, symbol, 1)
                if found is None and not already_there:
                    # the request may still be on its way: wait until the exchange would refuse it
                    window_s = (self.order_window_ms + self.clock_skew_ms) / 1000.0
                    remaining = sent_at + window_s - self._clock()
                    if remaining > 0:
                        self._sleep(remaining)
                if found is None:
                    found = self._find(cid, symbol, 1 + self.not_found_retries)
            except BrokerError as e:
                return OrderUpdate(cid, "submitted", reason=(
                    f"outcome unknown: sending failed ({failures[-1]}) and the order could not "
                    f"be looked up ({e}); ask fetch_order({cid!r}, {symbol!r}) later"))
            if found is not None:
                return self._update(cid, found)
            self._sleep(next(delays))
        return OrderUpdate(cid, "lost", reason=(
            f"{self.exchange.id} never got the order in {len(failures)} sends (each looked up by "
            f"client order id and answered 'not found'); last error: {failures[-1]}"))

    def cancel(self, client_order_id: str, symbol: str) -> OrderUpdate:
        """Cancel the order (retried with backoff). If it is no longer open -- it filled or was
        cancelled meanwhile -- its current state is returned instead (its fills still come
        through :meth:`fills_since`)."""
        try:
            order = self._read(self.exchange.cancel_order, None, symbol,
                               {"clientOrderId": client_order_id},
                               what=f"cancel_order {symbol} client id {client_order_id}")
        except (ccxt.InvalidOrder, ccxt.OperationRejected):  # unknown / not open any more
            return self.fetch_order(client_order_id, symbol)
        update = self._update(client_order_id, order)
        if update.status in ("submitted", "partially_filled"):  # some exchanges answer "open"
            return OrderUpdate(client_order_id, "cancelled", update.filled_qty,
                               update.exchange_order_id)
        return update


__all__ = ["AssetBalance", "BrokerError", "CcxtBroker"]
