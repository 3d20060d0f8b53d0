"""The live price feed (live/feed.py) against the local exchange and against crafted answers."""

from __future__ import annotations

import json
import logging

import ccxt
import numpy as np
import pandas as pd
import pytest

from framework.download import RetryPolicy
from framework.local_exchange import LocalExchange
from live.feed import BarBatch, CandleFeed, FeedEvent, WebsocketCandleFeed, open_feed
from tests.exchange_fixtures import API_KEY, BTC, ETH, SECRET, client, ms

MIN = 60_000
T0 = ms(BTC.index[1000])  # an open time where both symbols have candles


@pytest.fixture
def stepped():
    """A local exchange with a stepped clock half-way through the candle opened at T0."""
    ex = LocalExchange({"BTC/USDT": BTC, "ETH/USDT": ETH}, start=T0 + 30_000,
                       api_keys={API_KEY: SECRET}).start()
    yield ex
    ex.stop()


def stepping(ex, ms_per_sleep: int = MIN):
    """A ``sleep`` for the feed that moves the replay clock instead of waiting."""
    return lambda _s: ex.clock.advance_to(ex.clock.now_ms() + ms_per_sleep)


def expected(frame: pd.DataFrame, open_ms: int) -> np.ndarray:
    return frame.loc[pd.Timestamp(open_ms, unit="ms", tz="UTC")].to_numpy()


def batches(items) -> list[BarBatch]:
    return [i for i in items if isinstance(i, BarBatch)]


def events(items, kind=None) -> list[FeedEvent]:
    return [i for i in items if isinstance(i, FeedEvent) and (kind is None or i.kind == kind)]


def take(feed: CandleFeed, n: int) -> list:
    return [feed.next_bars() for _ in range(n)]


# --- closed candles, equality, batching ---------------------------------------------------------

def test_a_forming_candle_is_never_delivered(stepped):
    feed = CandleFeed(client(stepped), ["BTC/USDT"], "1m")
    stepped.clock.advance_to(T0 + MIN - 1)  # 1 ms before the candle opened at T0 closes
    assert feed.poll() == []
    stepped.clock.advance_to(T0 + MIN)  # open + timeframe <= exchange time: closed
    (batch,) = feed.poll()
    assert batch.open_ms == T0 and batch.close_ms == T0 + MIN
    np.testing.assert_array_equal(batch.row("BTC/USDT"), expected(BTC, T0))


def test_delivered_bars_equal_the_dataset_and_close_before_exchange_time(stepped):
    # sleeping moves the clock by 25 s: most polls see only a forming candle
    ex = stepped
    feed = CandleFeed(client(ex), ["BTC/USDT", "ETH/USDT"], "1m", sleep=stepping(ex, 25_000))
    got = []
    for _ in range(12):
        item = feed.next_bars()
        assert isinstance(item, BarBatch) and item.close_ms <= ex.clock.now_ms()
        got.append(item)
    assert [b.open_ms for b in got] == [T0 + k * MIN for k in range(12)]
    for b in got:
        assert b.complete and b.symbols == ("BTC/USDT", "ETH/USDT") and b.day == T0 // 86_400_000
        np.testing.assert_array_equal(b.ohlcv, np.vstack([expected(BTC, b.open_ms),
                                                          expected(ETH, b.open_ms)]))
    assert feed.stats["batches"] == 12 and feed.stats["bars"] == 24 and not feed.stale


def test_a_fast_replay_clock_is_moved_on_by_the_feed():
    """The fast clock moves only with market-data requests, to the end of the candles a request
    asks for: the feed progresses in order, with the dataset's values."""
    with LocalExchange({"BTC/USDT": BTC, "ETH/USDT": ETH}, start=T0, clock="fast",
                       api_keys={API_KEY: SECRET}) as ex:
        feed = CandleFeed(client(ex), ["BTC/USDT", "ETH/USDT"], "1m", since_ms=T0,
                          sleep=lambda _s: None)
        got = take(feed, 100)
    assert [b.open_ms for b in got] == [T0 + k * MIN for k in range(100)]
    for b in got:
        np.testing.assert_array_equal(b.ohlcv, np.vstack([expected(BTC, b.open_ms),
                                                          expected(ETH, b.open_ms)]))


def test_a_feed_behind_the_exchange_catches_up_1000_candles_per_request(stepped):
    """2,000 closed candles behind (a restart after downtime): one poll brings them all, two
    candle requests per symbol, and the feed holds the batches it has not handed out yet."""
    feed = CandleFeed(client(stepped), ["BTC/USDT", "ETH/USDT"], "1m", since_ms=T0)
    stepped.clock.advance_to(T0 + 2000 * MIN)
    first = feed.next_bars(timeout_s=0)
    assert isinstance(first, BarBatch) and first.open_ms == T0 and feed.backlog == 1999
    rest = take(feed, 1999)
    assert [b.open_ms for b in rest] == [T0 + k * MIN for k in range(1, 2000)] and feed.backlog == 0
    np.testing.assert_array_equal(rest[-1].ohlcv, np.vstack([expected(BTC, T0 + 1999 * MIN),
                                                             expected(ETH, T0 + 1999 * MIN)]))
    klines = stepped.requests("/api/v3/klines")
    assert len(klines) == 4 and all(r.params["limit"] == "1000" for r in klines)


def test_catch_up_from_since_with_a_symbol_listed_later():
    """ETH's candles start later than BTC's: before, batches say ETH is missing (NaN row) after
    one hole event; from its first candle on they are complete, one per minute, in order."""
    eth_start = ms(ETH.index[0])
    since = eth_start - 3 * MIN
    with LocalExchange({"BTC/USDT": BTC, "ETH/USDT": ETH}, start=since,
                       api_keys={API_KEY: SECRET}) as ex:
        feed = CandleFeed(client(ex), ["BTC/USDT", "ETH/USDT"], "1m", since_ms=since)
        ex.clock.advance_to(eth_start + 2 * MIN)  # ETH's first two candles closed
        items = feed.poll()
    got = batches(items)
    assert [b.open_ms for b in got] == [since + k * MIN for k in range(5)]
    assert [set(b.missing) for b in got] == [{"ETH/USDT"}] * 3 + [set()] * 2
    assert np.isnan(got[0].row("ETH/USDT")).all()
    np.testing.assert_array_equal(got[0].row("BTC/USDT"), expected(BTC, since))
    np.testing.assert_array_equal(got[3].row("ETH/USDT"), expected(ETH, eth_start))
    (hole,) = events(items, "hole")
    assert (hole.symbols, hole.open_ms, hole.end_ms) == (("ETH/USDT",), since, eth_start)
    assert feed.stats["missing"] == 3 and feed.stats["holes"] == 1


# --- crafted answers: bad, duplicate and out-of-order bars ----------------------------------

class CraftedExchange:
    """Answers ``fetch_ohlcv`` with the given pages, one per call, then nothing; its clock
    reads ``now``."""

    id = "crafted"
    has = {"fetchTime": True}

    def __init__(self, pages, now):
        self.pages, self.now = list(pages), now

    def load_markets(self):
        return {}

    def fetch_time(self):
        return self.now

    def fetch_ohlcv(self, symbol, timeframe, since=None, limit=None):
        return self.pages.pop(0) if self.pages else []


def bar(t, o=100.0, h=102.0, lo=99.0, c=101.0, v=5.0):
    return [t, o, h, lo, c, v]


@pytest.mark.parametrize("bad, reason", [
    (bar(T0 + MIN, h=98.0), "high/low do not contain open/close"),
    (bar(T0 + MIN, c=float("nan")), "a price is NaN"),
    (bar(T0 + MIN, lo=0.0), "a price is <= 0"),
    (bar(T0 + MIN, v=-1.0), "negative volume"),
    ([T0 + MIN, "101", None, "99", "100", "1"], "a price is NaN"),  # a value the exchange left out
    (bar(T0 + MIN + 7), "not on the 1m grid"),
])
def test_a_bad_bar_is_rejected_logged_and_skipped(bad, reason, caplog):
    ex = CraftedExchange([[bar(T0), bad, bar(T0 + 2 * MIN)]], now=T0 + 3 * MIN)
    feed = CandleFeed(ex, ["BTC/USDT"], "1m", since_ms=T0)
    with caplog.at_level(logging.WARNING, logger="tradpal.live.feed"):
        items = feed.poll()
    assert [b.open_ms for b in batches(items)] == [T0, T0 + 2 * MIN]
    (rejected,) = events(items, "rejected")
    assert rejected.open_ms == bad[0] and reason in rejected.message
    assert any(reason in r.getMessage() for r in caplog.records)
    assert feed.stats["rejected_bad"] == 1 and feed.stats["bars"] == 2


def test_a_bad_bar_of_one_symbol_leaves_it_missing_in_that_batch():
    class TwoSymbols(CraftedExchange):
        def fetch_ohlcv(self, symbol, timeframe, since=None, limit=None):
            if symbol == "ETH/USDT":
                return [bar(T0), bar(T0 + MIN, o=-1.0)] if since == T0 else []
            return [bar(T0), bar(T0 + MIN)] if since == T0 else []

    feed = CandleFeed(TwoSymbols([], now=T0 + 2 * MIN), ["BTC/USDT", "ETH/USDT"], "1m", since_ms=T0)
    got = batches(feed.poll())
    assert [(b.open_ms, set(b.missing)) for b in got] == [(T0, set()), (T0 + MIN, {"ETH/USDT"})]
    assert np.isnan(got[1].row("ETH/USDT")).all() and got[1].row("BTC/USDT")[0] == 100.0


def test_duplicates_are_dropped_and_out_of_order_bars_rejected(caplog):
    t = [T0 + k * MIN for k in range(5)]
    pages = [[bar(t[0]), bar(t[1]), bar(t[1], c=100.5), bar(t[0])],  # two repeats
             [bar(t[3]), bar(t[2]), bar(t[4])]]  # t2 after t3: out of order
    ex = CraftedExchange(pages, now=t[4] + MIN)
    feed = CandleFeed(ex, ["BTC/USDT"], "1m", since_ms=t[0])
    with caplog.at_level(logging.WARNING, logger="tradpal.live.feed"):
        items = feed.poll()
    got = batches(items)
    assert [b.open_ms for b in got] == [t[0], t[1], t[3], t[4]]
    assert got[1].close[0] == 101.0  # the first version delivered; the repeat dropped
    (rejected,) = events(items, "rejected")
    assert rejected.open_ms == t[2] and "out of order" in rejected.message
    assert feed.stats["duplicates"] == 2 and feed.stats["rejected_out_of_order"] == 1
    assert not any("duplicate" in r.getMessage() for r in caplog.records)  # counted, not warned


def test_a_candle_older_than_the_position_in_a_later_answer_is_out_of_order():
    t = [T0 + k * MIN for k in range(4)]
    ex = CraftedExchange([[bar(t[0]), bar(t[1])], [bar(t[0] - MIN), bar(t[2])]], now=t[1] + MIN)
    feed = CandleFeed(ex, ["BTC/USDT"], "1m", since_ms=t[0])
    assert [b.open_ms for b in batches(feed.poll())] == [t[0], t[1]]
    ex.now = t[2] + MIN
    items = feed.poll()
    assert [b.open_ms for b in batches(items)] == [t[2]]
    assert [e.open_ms for e in events(items, "rejected")] == [t[0] - MIN]


def test_start_from_sets_the_first_bar_before_the_first_poll_only():
    ex = CraftedExchange([[bar(T0 + MIN), bar(T0 + 2 * MIN)]], now=T0 + 3 * MIN)
    feed = CandleFeed(ex, ["BTC/USDT"], "1m")
    feed.start_from(T0 + 1)  # rounds up to the next open time
    assert [b.open_ms for b in batches(feed.poll())] == [T0 + MIN, T0 + 2 * MIN]
    with pytest.raises(RuntimeError, match="before the feed's first poll"):
        feed.start_from(T0)


# --- gaps, holes, staleness -----------------------------------------------------------------

def test_an_outage_is_backfilled_in_order_with_stale_then_fresh(stepped):
    """Every kline request fails for a while (dropped connections) as the clock runs on: the
    feed goes stale, then on recovery delivers every missed bar in order and is fresh again."""
    ex = stepped
    feed = CandleFeed(client(ex), ["BTC/USDT", "ETH/USDT"], "1m", sleep=stepping(ex))
    first = take(feed, 2)
    assert [b.open_ms for b in first] == [T0, T0 + MIN]
    ex.faults.drop_connection(count=12, path="/api/v3/klines")  # 2 polls x 2 symbols x 3 tries
    items = []
    while not events(items, "fresh"):
        items.append(feed.next_bars())
        assert len(items) < 50
    assert items[0].kind == "stale" and set(items[0].symbols) == {"BTC/USDT", "ETH/USDT"}
    got = items[1:-1]
    assert [b.open_ms for b in got] == [T0 + k * MIN for k in range(2, len(got) + 2)]
    assert len(got) >= 5 and got[-1].close_ms <= ex.clock.now_ms()
    for b in got:
        assert b.complete
        np.testing.assert_array_equal(b.row("ETH/USDT"), expected(ETH, b.open_ms))
    assert feed.stats["errors"] == 4 and feed.stats["holes"] == 0 and not feed.stale


def test_a_hidden_tip_makes_the_feed_stale_and_is_backfilled_when_it_shows(stepped):
    ex = stepped
    feed = CandleFeed(client(ex), ["BTC/USDT"], "1m", sleep=stepping(ex))
    assert feed.next_bars().open_ms == T0
    ex.faults.candle_gap(T0 + MIN, T0 + 60 * MIN)  # the exchange lags: no new candles
    stale = feed.next_bars()
    assert stale.kind == "stale" and stale.symbols == ("BTC/USDT",)
    # stale once more than two timeframes passed since the last candle closed (T0 + 1 min)
    assert ex.clock.now_ms() - (T0 + MIN) > 2 * MIN and feed.stale
    assert feed.next_bars(timeout_s=0) is None  # nothing new: no repeated stale event
    ex.faults.clear()
    now = ex.clock.now_ms()
    items = [feed.next_bars() for _ in range((now - T0) // MIN)]
    got = batches(items)
    assert [b.open_ms for b in got] == [T0 + k * MIN for k in range(1, len(got) + 1)]
    assert got[-1].close_ms == now - now % MIN and events(items, "fresh")
    for b in got:
        np.testing.assert_array_equal(b.row("BTC/USDT"), expected(BTC, b.open_ms))
    assert feed.stats["stale_events"] == 1 and not feed.stale


def test_a_hole_in_the_exchange_data_is_announced_and_skipped(stepped):
    ex = stepped
    ex.faults.candle_gap(T0 + MIN, T0 + 3 * MIN, symbol="ETH/USDT")
    feed = CandleFeed(client(ex), ["BTC/USDT", "ETH/USDT"], "1m", since_ms=T0)
    ex.clock.advance_to(T0 + 5 * MIN)
    items = feed.poll()
    got = batches(items)
    assert [(b.open_ms - T0) // MIN for b in got] == [0, 1, 2, 3, 4]
    assert [set(b.missing) for b in got] == [set(), {"ETH/USDT"}, {"ETH/USDT"}, set(), set()]
    (hole,) = events(items, "hole")
    assert (hole.open_ms, hole.end_ms) == (T0 + MIN, T0 + 3 * MIN)


def test_stale_while_the_exchange_is_unreachable_uses_the_local_clock(stepped):
    """Without the exchange's clock, its time is the last reading plus the local time since."""
    ex = stepped
    local = {"s": 0.0}
    feed = CandleFeed(client(ex), ["BTC/USDT"], "1m", since_ms=T0, clock=lambda: local["s"],
                      retry=RetryPolicy(max_retries=0))
    ex.clock.advance_to(T0 + MIN)
    assert batches(feed.poll())[0].open_ms == T0
    ex.faults.http_error(503, count=None)  # everything fails from now on
    local["s"] += 120  # two timeframes since the last close: not yet more than two
    assert feed.poll() == [] and not feed.stale
    local["s"] += 1
    (stale,) = feed.poll()
    assert stale.kind == "stale" and stale.at_ms == T0 + MIN + 121_000
    # only the clock readings failed: without a reading no new candle counts as closed, so the
    # feed asked for none (an estimate decides staleness, never whether a candle closed)
    assert feed.stats["errors"] == 2
    assert [r.status for r in ex.requests("/api/v3/klines")][-1] == 200


# --- history --------------------------------------------------------------------------------

def test_history_pages_through_closed_candles(stepped):
    ex = stepped
    ex.clock.advance_to(ms(BTC.index[-1]) + 30_000)  # the last candle still forming
    feed = CandleFeed(client(ex), ["BTC/USDT"], "1m")
    ex.clear_requests()
    last = feed.history("BTC/USDT", limit=2500)
    assert len(ex.requests("/api/v3/klines")) >= 3  # pages of at most 1000 candles
    pd.testing.assert_frame_equal(last, BTC.iloc[-2501:-1], check_freq=False)
    since = feed.history("BTC/USDT", limit=5, since_ms=ms(BTC.index[10]) - 1)
    pd.testing.assert_frame_equal(since, BTC.iloc[10:15], check_freq=False)
    until = feed.history("BTC/USDT", limit=3, until_ms=ms(BTC.index[100]))
    pd.testing.assert_frame_equal(until, BTC.iloc[97:100], check_freq=False)
    window = feed.history("BTC/USDT", since_ms=ms(BTC.index[5]), until_ms=ms(BTC.index[9]))
    pd.testing.assert_frame_equal(window, BTC.iloc[5:9], check_freq=False)


@pytest.mark.parametrize("kwargs, words", [
    ({"symbols": []}, "symbols must be a non-empty list"),
    ({"symbols": "BTC/USDT"}, "symbols must be a non-empty list"),
    ({"symbols": ["BTC/USDT", "BTC/USDT"]}, "repeated"),
    ({"timeframe": "1M"}, "fixed length"),
    ({"poll_interval_s": 0}, "poll_interval_s"),
    ({"since_ms": "2024"}, "since_ms"),
])
def test_bad_arguments_are_named(kwargs, words):
    args = {"symbols": ["BTC/USDT"], "timeframe": "1m", **kwargs}
    with pytest.raises(ValueError, match=words):
        CandleFeed(CraftedExchange([], 0), args.pop("symbols"), args.pop("timeframe"), **args)


# --- websocket: the local exchange's kline streams, and the feed on them ----------------------

def test_the_local_exchange_serves_binance_kline_streams(stepped):
    """An independent client (websocket-client) on the combined stream: pushes carry the
    dataset's values, ``x`` false while forming and true once closed; SUBSCRIBE and
    LIST_SUBSCRIPTIONS are answered as on Binance; a hidden candle is not pushed."""
    import websocket

    ex = stepped
    ex.faults.candle_gap(T0 + MIN, T0 + 2 * MIN, symbol="ETH/USDT")
    ws = websocket.create_connection(f"ws://127.0.0.1:{ex.port}/stream?streams=btcusdt@kline_1m",
                                     timeout=5)
    try:
        first = json.loads(ws.recv())
        assert first["stream"] == "btcusdt@kline_1m"
        k = first["data"]["k"]
        assert (k["t"], k["x"], first["data"]["s"]) == (T0, False, "BTCUSDT")
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@kline_1m"], "id": 7}))
        assert json.loads(ws.recv()) == {"result": None, "id": 7}
        msgs = [json.loads(ws.recv())]  # ETH's forming candle
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
        assert json.loads(ws.recv()) == {"result": ["btcusdt@kline_1m", "ethusdt@kline_1m"], "id": 8}
        ex.clock.advance_to(T0 + 2 * MIN + 30_000)  # two candles close at once
        while len(msgs) < 6:
            msgs.append(json.loads(ws.recv()))
    finally:
        ws.close()
    seen = [(m["data"]["s"], (m["data"]["k"]["t"] - T0) // MIN, m["data"]["k"]["x"]) for m in msgs]
    assert sorted(seen) == sorted([("ETHUSDT", 0, False), ("BTCUSDT", 0, True), ("BTCUSDT", 1, True),
                                   ("BTCUSDT", 2, False), ("ETHUSDT", 0, True), ("ETHUSDT", 2, False)])
    closed = next(m["data"]["k"] for m in msgs if m["data"]["k"]["x"] and m["data"]["s"] == "BTCUSDT"
                  and m["data"]["k"]["t"] == T0 + MIN)
    assert [float(closed[c]) for c in "ohlcv"] == list(expected(BTC, T0 + MIN))
    assert closed["T"] == T0 + 2 * MIN - 1 and closed["i"] == "1m"


def wait_subscribed(ex, feed, n_streams: int = 2) -> None:
    """Run the feed (nothing closes meanwhile) until the exchange has its subscription."""
    for _ in range(100):
        if [len(streams) for streams in ex.status()["websockets"]] == [n_streams]:
            return
        assert feed.next_bars(timeout_s=0.1) is None
    raise AssertionError(f"no subscription after 10 s: {ex.status()['websockets']}")


def ws_feed(ex, symbols=("BTC/USDT", "ETH/USDT")):
    return WebsocketCandleFeed(client(ex), list(symbols), "1m", url=ex.url, poll_interval_s=0.05,
                               grace_s=60)


def test_the_websocket_feed_delivers_streamed_closed_bars(stepped):
    ex = stepped
    with ws_feed(ex) as feed:
        wait_subscribed(ex, feed)  # the candle at T0 is forming
        got = []
        for _ in range(4):
            ex.clock.step(1)  # one more minute: the candle before closes
            item = feed.next_bars(timeout_s=10)
            assert isinstance(item, BarBatch) and item.close_ms <= ex.clock.now_ms()
            got.append(item)
    assert [b.open_ms for b in got] == [T0 + k * MIN for k in range(4)]
    for b in got:
        np.testing.assert_array_equal(b.ohlcv, np.vstack([expected(BTC, b.open_ms),
                                                          expected(ETH, b.open_ms)]))
    assert ex.requests("/api/v3/klines") == [] and feed.stats["backfilled"] == 0  # all streamed


def test_candles_that_closed_during_a_long_stream_outage_come_over_rest(stepped):
    ex = stepped
    with ws_feed(ex) as feed:
        wait_subscribed(ex, feed)
        ex.clock.step(1)
        assert feed.next_bars(timeout_s=10).open_ms == T0
        assert ex.drop_websockets() == 1
        ex.clock.step(5)  # five candles close while the stream is down
        items = [feed.next_bars(timeout_s=10) for _ in range(5)]
    assert [b.open_ms for b in items] == [T0 + k * MIN for k in range(1, 6)]
    for b in items:
        np.testing.assert_array_equal(b.row("BTC/USDT"), expected(BTC, b.open_ms))
        assert b.backfilled == {"BTC/USDT", "ETH/USDT"}
    assert feed.stats["backfilled"] == 10


def test_a_gap_after_a_websocket_reconnect_is_backfilled_before_the_next_bar(stepped):
    """The stream is cut and its first reconnection refused; a candle closes meanwhile. Once
    the stream is back and the next candle closes, the missed one is fetched over REST and
    delivered first (whether the stream's gap or the exchange's clock shows it first)."""
    ex = stepped
    with ws_feed(ex) as feed:
        wait_subscribed(ex, feed)
        ex.clock.step(1)
        assert feed.next_bars(timeout_s=10).open_ms == T0
        ex.faults.drop_connection(count=1, path="/ws")
        assert ex.drop_websockets() == 1
        ex.clock.step(1)  # the candle at T0 + 1 min closes while the stream is down
        wait_subscribed(ex, feed)  # back after a backoff; nothing late enough for REST yet
        ex.clock.step(1)
        first, second = feed.next_bars(timeout_s=10), feed.next_bars(timeout_s=10)
    assert (first.open_ms, second.open_ms) == (T0 + MIN, T0 + 2 * MIN)
    assert first.backfilled == {"BTC/USDT", "ETH/USDT"}  # the stream never carried it
    for b in (first, second):
        np.testing.assert_array_equal(b.ohlcv, np.vstack([expected(BTC, b.open_ms),
                                                          expected(ETH, b.open_ms)]))
    assert feed.stats["reconnects"] >= 1 and feed.stats["holes"] == 0  # ccxt may retry a refusal itself
    assert [r.status for r in ex.requests("/ws/0")] == [101, 0, 101]  # 0: dropped unanswered


class FakeStream:
    """A ccxt.pro stand-in whose cache holds the given candles and whose watch returns at once."""

    id = "fake"
    has = {"watchOHLCVForSymbols": True}

    def __init__(self, candles):
        self.ohlcvs = {"BTC/USDT": {"1m": candles}}

    async def watch_ohlcv_for_symbols(self, pairs):
        return {}

    async def close(self):
        return None


def test_candles_the_stream_skipped_are_fetched_before_later_ones():
    t = [T0 + k * MIN for k in range(6)]
    rest = CraftedExchange([[bar(t[2], c=100.2), bar(t[3], c=100.3)]], now=t[5] + 30_000)
    stream = FakeStream([bar(t[0]), bar(t[1]), bar(t[4]), bar(t[5], c=999.0)])  # t5 forming
    with WebsocketCandleFeed(rest, ["BTC/USDT"], "1m", ws_exchange=stream, since_ms=t[0]) as feed:
        items = feed.poll()
    got = batches(items)
    assert [b.open_ms for b in got] == t[:5] and events(items) == []
    assert [b.close[0] for b in got] == [101.0, 101.0, 100.2, 100.3, 101.0]
    assert [set(b.backfilled) for b in got] == [set(), set(), {"BTC/USDT"}, {"BTC/USDT"}, set()]


def test_a_lagging_symbol_holds_the_others_back_only_until_it_is_stale(stepped):
    """ETH's newest candles are missing: BTC's bars wait for it until ETH is stale (one event,
    before the first batch without ETH), then go out with ETH missing; when ETH's candles show
    again, batches are complete and the feed is fresh."""
    ex = stepped
    feed = CandleFeed(client(ex), ["BTC/USDT", "ETH/USDT"], "1m", sleep=stepping(ex))
    assert feed.next_bars().open_ms == T0
    ex.faults.candle_gap(T0 + MIN, T0 + 60 * MIN, symbol="ETH/USDT")
    items = [feed.next_bars() for _ in range(6)]
    assert items[0].kind == "stale" and items[0].symbols == ("ETH/USDT",) and feed.stale
    assert ex.clock.now_ms() - (T0 + MIN) > 2 * MIN  # more than two timeframes of silence
    got = items[1:]
    assert [b.open_ms for b in got] == [T0 + k * MIN for k in range(1, 6)]
    assert all(b.missing == {"ETH/USDT"} for b in got)
    for b in got:
        np.testing.assert_array_equal(b.row("BTC/USDT"), expected(BTC, b.open_ms))
    ex.faults.clear()
    after = [feed.next_bars() for _ in range(2)]
    assert isinstance(after[0], BarBatch) and after[0].open_ms == T0 + 6 * MIN and after[0].complete
    assert after[1].kind == "fresh" and not feed.stale
    assert feed.stats["stale_events"] == 1 and feed.stats["rejected_out_of_order"] == 0


def test_open_feed_picks_the_websocket_where_ccxt_pro_streams(stepped):
    ex = stepped
    assert type(open_feed(client(ex), ["BTC/USDT"], "1m", mode="rest")) is CandleFeed
    with open_feed(client(ex), ["BTC/USDT"], "1m", url=ex.url) as auto:
        assert isinstance(auto, WebsocketCandleFeed)
    with pytest.raises(ValueError, match="mode must be"):
        open_feed(client(ex), ["BTC/USDT"], "1m", mode="socket")


def test_a_failed_catch_up_fetch_skips_nothing():
    """The stream skipped two candles and the REST fetch for them fails: no hole is declared,
    the later candle waits, and the next poll delivers all in order."""
    t = [T0 + k * MIN for k in range(4)]

    class Flaky(CraftedExchange):
        def fetch_ohlcv(self, symbol, timeframe, since=None, limit=None):
            if not self.pages:
                raise ccxt.NetworkError("connection reset")
            return super().fetch_ohlcv(symbol, timeframe, since, limit)

    rest = Flaky([], now=t[3] + 30_000)
    stream = FakeStream([bar(t[0]), bar(t[3]), bar(t[3] + MIN)])
    with WebsocketCandleFeed(rest, ["BTC/USDT"], "1m", ws_exchange=stream, since_ms=t[0],
                             retry=RetryPolicy(max_retries=0)) as feed:
        first = feed.poll()
        assert [b.open_ms for b in batches(first)] == [t[0]] and events(first) == []
        rest.pages = [[bar(t[1]), bar(t[2])]]
        second = feed.poll()
    assert [b.open_ms for b in batches(second)] == t[1:]
    assert feed.stats["holes"] == 0 and feed.stats["errors"] == 1
