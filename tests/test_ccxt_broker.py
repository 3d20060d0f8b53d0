"""The ccxt broker against the local exchange: orders placed once whatever the network does,
fills booked as the exchange reports them, precision and limits, cancels, stops."""

from __future__ import annotations

import random
import time
from decimal import Decimal

import pytest

from framework.exchange import RetryPolicy
from framework.local_exchange import LocalExchange, ccxt_client
from framework.local_exchange.engine import SymbolFilters
from live.broker import OrderRequest
from live.ccxt_broker import AssetBalance, CcxtBroker
from tests.exchange_fixtures import API_KEY, BTC, SECRET, START, client, ms

SYMBOL = "BTC/USDT"
ORDER = "/api/v3/order"
NOW = START + (BTC.index[1] - BTC.index[0]) * 1000  # mid-data: the clock can move on
POLICY = RetryPolicy(max_retries=3, base_delay_s=0.01, factor=2.0, max_delay_s=5.0, jitter="full")
WINDOW_S = 6.0  # the broker's default order window (5 s) plus clock skew (1 s)


class FakeTime:
    """A clock that moves only when the broker sleeps; the waits are recorded."""

    def __init__(self) -> None:
        self.now, self.waits = 0.0, []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture
def ex():
    exchange = LocalExchange({SYMBOL: BTC}, start=NOW, api_keys={API_KEY: SECRET}).start()
    yield exchange
    exchange.stop()


@pytest.fixture
def fake():
    return FakeTime()


def make_broker(ex, fake, **kw) -> CcxtBroker:
    config = kw.pop("ccxt", {})
    return CcxtBroker(client(ex, **config), retry=kw.pop("retry", POLICY), sleep=fake.sleep,
                      clock=fake.clock, rng=random.Random(7), **kw)


def price(ex) -> float:
    """The replayed price now: what a market order fills at with no spread."""
    return ex.market.by_symbol[SYMBOL].price_at(ex.clock.now_ms())


def orders_with(ex, cid):
    return [o for o in ex.engine.orders.values() if o.client_id == cid]


def posts(ex):
    return ex.requests(ORDER, "POST")


def buy(cid, qty=0.01, **kw):
    return OrderRequest(cid, SYMBOL, "buy", kw.pop("type", "market"), qty, **kw)


def test_market_round_trip_books_the_exchange_fills(ex, fake):
    broker = make_broker(ex, fake)
    p_buy, t_buy = price(ex), ex.clock.now_ms()
    up = broker.submit(buy("rt-1", ref_price=p_buy))
    assert (up.status, up.filled_qty, up.exchange_order_id) == ("filled", 0.01, "1")
    ex.clock.step(5)
    p_sell, t_sell = price(ex), ex.clock.now_ms()
    sell = broker.submit(OrderRequest("rt-2", SYMBOL, "sell", "market", 0.00999))
    assert sell.status == "filled" and sell.filled_qty == 0.00999
    fills = broker.fills_since(SYMBOL, None)
    assert [(f.client_order_id, f.side, f.qty, f.price, f.timestamp_ms) for f in fills] == [
        ("rt-1", "buy", 0.01, p_buy, t_buy), ("rt-2", "sell", 0.00999, p_sell, t_sell)]
    # fees as the exchange charges them: 0.1% of what is received, in that asset, on 8 decimals
    assert [(f.fee, f.fee_currency) for f in fills] == [
        (0.01 * 0.001, "BTC"), (round(0.00999 * p_sell * 0.001, 8), "USDT")]
    assert len({f.trade_id for f in fills}) == 2
    assert broker.fills_since(SYMBOL, t_sell) == fills[1:]
    usdt = 10_000 - 0.01 * p_buy + 0.00999 * p_sell * (1 - 0.001)
    assert broker.balance()["USDT"] == AssetBalance(pytest.approx(usdt, rel=1e-12), 0.0,
                                                    pytest.approx(usdt, rel=1e-12))
    assert [r.params["newClientOrderId"] for r in posts(ex)] == ["rt-1", "rt-2"]


def test_market_buy_sized_by_cost_sends_quote_order_qty(ex, fake):
    broker = make_broker(ex, fake)
    p = price(ex)
    up = broker.submit(OrderRequest("cost-1", SYMBOL, "buy", "market", None, cost=100.0))
    (sent,) = posts(ex)
    assert sent.params["quoteOrderQty"] == "100" and "quantity" not in sent.params
    expected = float((Decimal(100) / Decimal(repr(p))).quantize(Decimal("1e-8"), "ROUND_FLOOR"))
    assert up.status == "filled" and up.filled_qty == expected


def test_fills_are_paged_by_trade_id_however_many_share_a_millisecond(ex, fake):
    broker = make_broker(ex, fake, page_limit=2)
    for i in range(5):  # the stepped clock stands still: five trades in one millisecond
        assert broker.submit(buy(f"page-{i}", ref_price=price(ex))).status == "filled"
    fills = broker.fills_since(SYMBOL, ms(NOW))
    assert [f.client_order_id for f in fills] == [f"page-{i}" for i in range(5)]
    assert [f.trade_id for f in fills] == [str(t.trade_id) for t in ex.engine.trades[API_KEY]]
    pages = ex.requests("/api/v3/myTrades")
    assert [r.params.get("fromId") for r in pages] == [None, "3", "5"]


def test_resending_an_open_order_returns_it_instead_of_a_second_one(ex, fake):
    broker = make_broker(ex, fake)
    request = buy("dup-1", type="limit", price=round(price(ex) * 0.5, 2))
    first = broker.submit(request)
    again = broker.submit(request)  # e.g. a runner that did not record the first answer
    assert first == again and first.status == "submitted"
    assert [r.status for r in posts(ex)] == [200, 400]  # "Duplicate order sent."
    assert len(orders_with(ex, "dup-1")) == 1


def test_lost_response_is_looked_up_not_resent(ex, fake):
    broker = make_broker(ex, fake)
    ex.faults.lose_response(count=1)
    up = broker.submit(buy("lost-resp", ref_price=price(ex)))
    assert up.status == "filled" and up.filled_qty == 0.01
    assert [r.status for r in posts(ex)] == [0]  # handled, never answered, never resent
    assert len(orders_with(ex, "lost-resp")) == 1
    assert len(ex.requests(ORDER, "GET")) == 1 and fake.waits == []


@pytest.mark.parametrize("fault", ["http_error", "drop_connection"])
def test_5xx_or_dropped_connection_looks_up_then_resends_once(ex, fake, fault):
    broker = make_broker(ex, fake)
    getattr(ex.faults, fault)(count=1, path=ORDER, method="POST")
    up = broker.submit(buy("resend-1", ref_price=price(ex)))
    assert up.status == "filled"
    assert [r.status for r in posts(ex)] == [503 if fault == "http_error" else 0, 200]
    assert len(orders_with(ex, "resend-1")) == 1
    # one lookup at once, then after the order window 1 + not_found_retries more
    methods = [r.method for r in ex.requests(ORDER)]
    assert methods == ["POST", "GET", "GET", "GET", "GET", "POST"]
    assert fake.waits[0] == WINDOW_S


@pytest.mark.parametrize("latency_s, statuses", [
    (0.35, [200]),  # arrives inside its receive window: found after the wait, never resent
    (0.9, [400, 200]),  # arrives after it: the exchange refuses it, the resend is placed
])
def test_latency_beyond_the_timeout_never_doubles_the_order(ex, latency_s, statuses):
    # real time here: the delayed request is still on its way while the broker decides; the
    # 200 ms timeout and 500 + 100 ms window leave 100 ms or more either side of each event
    broker = CcxtBroker(client(ex, timeout=200), retry=POLICY, not_found_retries=0,
                        order_window_ms=500, clock_skew_ms=100, rng=random.Random(1))
    ex.faults.latency(latency_s, count=1, path=ORDER, method="POST")
    up = broker.submit(buy("slow-1", ref_price=price(ex)))
    assert up.status == "filled"
    deadline = time.monotonic() + 10
    while any(r.status == 0 for r in posts(ex)) and time.monotonic() < deadline:
        time.sleep(0.05)  # until the delayed request has been answered
    assert [r.status for r in posts(ex)] == statuses
    assert len(orders_with(ex, "slow-1")) == 1


def test_rate_limit_waits_the_retry_after(ex, fake):
    broker = make_broker(ex, fake)
    ex.faults.rate_limit(retry_after=3, count=1, path=ORDER, method="POST")
    up = broker.submit(buy("rl-1", ref_price=price(ex)))
    assert up.status == "filled" and [r.status for r in posts(ex)] == [429, 200]
    assert fake.waits == [3.0] and ex.requests(ORDER, "GET") == []  # refused unread: no lookup
    ex.faults.rate_limit(retry_after=2, count=1, path="/api/v3/myTrades")
    assert len(broker.fills_since(SYMBOL, None)) == 1
    assert fake.waits == [3.0, 2.0]
    ex.faults.rate_limit(retry_after=60, count=1, path=ORDER, method="POST")
    up = broker.submit(buy("rl-2", ref_price=price(ex)))
    assert up.status == "rejected" and "asks to wait 60 s (Retry-After)" in up.reason
    assert fake.waits == [3.0, 2.0] and orders_with(ex, "rl-2") == []


def test_partial_fills_come_as_separate_fills(ex, fake):
    broker = make_broker(ex, fake)
    ex.faults.partial_fills(0.5)
    p = price(ex)
    limit = round(p * 1.001, 2)  # marketable: half fills at once, the rest rests at the limit
    up = broker.submit(buy("part-1", 0.02, type="limit", price=limit))
    assert (up.status, up.filled_qty) == ("partially_filled", 0.01)
    ex.clock.step(1)
    assert broker.fetch_order("part-1", SYMBOL).status == "filled"
    fills = broker.fills_since(SYMBOL, None)
    assert [(f.client_order_id, f.qty, f.price) for f in fills] == [
        ("part-1", 0.01, p), ("part-1", 0.01, limit)]
    assert len({f.trade_id for f in fills}) == 2
    # a market order gets its share and the rest expires, as on Binance
    up = broker.submit(buy("part-2", 0.02, ref_price=price(ex)))
    assert (up.status, up.filled_qty) == ("expired", 0.01)


def test_insufficient_funds_is_rejected_and_not_retried(ex, fake):
    broker = make_broker(ex, fake)
    up = broker.submit(buy("big-1", 1.0, ref_price=price(ex)))  # 1 BTC > 10,000 USDT
    assert up.status == "rejected" and "insufficient balance" in up.reason
    assert len(posts(ex)) == 1 and ex.requests(ORDER, "GET") == [] and fake.waits == []


def test_precision_rounding_and_limits_before_sending(ex, fake):
    ex.engine.filters = SymbolFilters(min_price=Decimal("0.01"), tick_size=Decimal("0.01"),
                                      min_qty=Decimal("0.001"), step_size=Decimal("0.001"))
    broker = make_broker(ex, fake)
    up = broker.submit(buy("prec-1", 0.0123456, type="limit", price=30000.129))
    assert up.status == "submitted"
    (sent,) = posts(ex)
    assert (sent.params["quantity"], sent.params["price"]) == ("0.012", "30000.13")
    tiny = broker.submit(buy("prec-2", 0.0004, type="limit", price=30000.0))
    assert tiny.status == "rejected" and "0.001" in tiny.reason
    cheap = broker.submit(buy("prec-3", 0.001, type="limit", price=3000.0))  # 3 USDT < 5
    assert cheap.status == "rejected" and "minimum order cost 5 (min notional)" in cheap.reason
    market = broker.submit(buy("prec-4", 0.001, ref_price=4000.0))
    assert market.status == "rejected" and "min notional" in market.reason
    assert len(posts(ex)) == 1  # none of the rejected ones was sent


def test_cancel_racing_a_fill_returns_the_fill(ex, fake):
    broker = make_broker(ex, fake)
    p = price(ex)
    lows = BTC.loc[BTC.index >= NOW, "low"].iloc[:30]
    limit = round((p + lows.min()) / 2, 2)  # below now, reached within 30 candles
    assert broker.submit(buy("race-1", type="limit", price=limit)).status == "submitted"
    assert broker.submit(buy("keep-1", type="limit", price=round(p * 0.5, 2))).status == "submitted"
    assert [o.client_order_id for o in broker.open_orders(SYMBOL)] == ["race-1", "keep-1"]
    ex.clock.step(30)  # the limit is reached before the cancel arrives
    up = broker.cancel("race-1", SYMBOL)
    assert (up.status, up.filled_qty) == ("filled", 0.01)
    assert ex.requests(ORDER, "DELETE")[0].status == 400  # "Unknown order sent."
    (fill,) = broker.fills_since(SYMBOL, None)
    assert (fill.client_order_id, fill.qty, fill.price) == ("race-1", 0.01, limit)
    ex.faults.lose_response(count=1, path=ORDER, method="DELETE")  # cancelled, answer lost
    cancelled = broker.cancel("keep-1", SYMBOL)
    assert (cancelled.status, cancelled.filled_qty) == ("cancelled", 0.0)
    assert [r.status for r in ex.requests(ORDER, "DELETE")][1:] == [0, 400]  # then "unknown"
    assert broker.open_orders(None) == []


def test_not_found_is_asked_a_bounded_number_of_times_then_lost(ex, fake):
    broker = make_broker(ex, fake, not_found_retries=2)
    up = broker.fetch_order("never-sent", SYMBOL)
    assert up.status == "lost" and "answered 'not found' 3 times" in up.reason
    assert len(ex.requests(ORDER, "GET")) == 3
    ex.clear_requests()
    ex.faults.http_error(503, count=None, path=ORDER, method="POST")
    up = broker.submit(buy("down-1", ref_price=price(ex)))
    assert up.status == "lost" and "never got the order in 4 sends" in up.reason
    assert len(posts(ex)) == POLICY.max_retries + 1 and orders_with(ex, "down-1") == []


def test_outcome_unknown_when_the_order_cannot_be_looked_up(ex, fake):
    broker = make_broker(ex, fake)
    ex.faults.lose_response(count=1)
    ex.faults.http_error(503, count=None, path=ORDER, method="GET")
    up = broker.submit(buy("dark-1", ref_price=price(ex)))
    assert up.status == "submitted" and up.reason.startswith("outcome unknown")
    assert len(posts(ex)) == 1 and len(orders_with(ex, "dark-1")) == 1  # never resent
    ex.faults.clear()
    assert broker.fetch_order("dark-1", SYMBOL).status == "filled"


def test_stops_and_targets_rest_on_the_exchange_where_supported(ex, fake):
    broker = make_broker(ex, fake)
    p = price(ex)
    broker.submit(buy("pos-1", 0.03, ref_price=p))  # enough to hold a stop and a target
    assert broker.supports_stop_orders(SYMBOL)
    stop = broker.submit(OrderRequest("sl-1", SYMBOL, "sell", "stop", 0.01, trigger=round(p * 0.9, 2)))
    target = broker.submit(OrderRequest("tp-1", SYMBOL, "sell", "take_profit", 0.01,
                                        trigger=round(p * 1.1, 2)))
    assert stop.status == target.status == "submitted"
    sent = {r.params["newClientOrderId"]: r.params for r in posts(ex)}
    assert (sent["sl-1"]["type"], float(sent["sl-1"]["stopPrice"])) == ("STOP_LOSS", round(p * 0.9, 2))
    assert (sent["tp-1"]["type"], float(sent["tp-1"]["stopPrice"])) == ("TAKE_PROFIT", round(p * 1.1, 2))
    broker.exchange.markets[SYMBOL]["info"]["orderTypes"] = ["LIMIT", "MARKET"]
    assert not broker.supports_stop_orders(SYMBOL)
    up = broker.submit(OrderRequest("sl-2", SYMBOL, "sell", "stop", 0.01, trigger=round(p * 0.9, 2)))
    assert up.status == "rejected" and "the runner must watch" in up.reason
    assert "sl-2" not in {r.params["newClientOrderId"] for r in posts(ex)}


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="not_found_retries must be a whole number >= 0, got -1"):
        CcxtBroker(ccxt_client("http://127.0.0.1:9"), not_found_retries=-1)


def test_unknown_symbol_or_missing_price_is_rejected(ex, fake):
    up = make_broker(ex, fake).submit(OrderRequest("x-1", "DOGE/USDT", "buy", "market", 1.0))
    assert up.status == "rejected" and "has no market 'DOGE/USDT'" in up.reason
    up = make_broker(ex, fake).submit(OrderRequest("x-2", SYMBOL, "buy", "limit", 0.01))
    assert up.status == "rejected" and up.reason == "a limit order needs price"
    assert posts(ex) == []
