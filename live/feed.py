"""Closed candles for the live runner, polled over REST or streamed over a websocket with ccxt.

A :class:`CandleFeed` turns an exchange's candles into one :class:`BarBatch` per bar open time
(one row per symbol), in time order, plus :class:`FeedEvent` notices (stale / fresh, a rejected
bar, a hole in the exchange's data). The rules, the same on both paths:

- **Closed only.** A candle is closed when ``open + timeframe <= now`` on the *exchange's* clock
  (``fetch_time``; replays run in the past). A forming candle is never delivered.
- **Checked.** Each bar passes the data layer's row checks (:func:`framework.data.check_bar`:
  finite positive prices, high/low containing open/close, volume not negative) and must sit on
  the timeframe's grid. A bad bar is rejected with a logged reason (logger
  ``tradpal.live.feed``), counted, announced by a ``rejected`` event and skipped: the feed moves
  past it and its slot is missing in that bar's batch.
- **Once and in order.** A bar with the open time of one already accepted is a duplicate:
  dropped and counted (``stats["duplicates"]``), not logged as a problem. A bar older than the
  feed's position for its symbol is out of order: rejected, logged, counted, announced.
- **No silent gaps.** The feed asks for every candle from the last one it accepted on: after a
  failed poll, an outage or a websocket reconnect the missed candles are fetched over REST and
  delivered, in order, before any later bar (``stats["backfilled"]``). Candles the exchange
  itself does not have (it answers with a later one) are a *hole*: logged, counted, announced
  by a ``hole`` event, and the feed continues after it.
- **Batches.** The batch for open time ``t`` is emitted once every symbol has its bar for
  ``t``, or has moved past ``t`` (a hole, a rejected bar), or is stale. Symbols without a bar
  are in ``BarBatch.missing`` with NaN prices. The runner decides what to do with them:
  skipping such batches reproduces a backtest on inner-aligned data
  (:func:`framework.data.align_ohlcv`). A symbol's bar arriving after its batch went out is
  rejected as out of order.
- **Stale.** A symbol is stale when its last closed candle ended more than two timeframes ago
  on the exchange's clock (or, while the exchange cannot be reached, on that clock as last read
  plus the local time since). The feed then emits a ``stale`` event naming the stale symbols
  (again when that set changes), ahead of the batches it lets through without them, and a
  ``fresh`` event once all have caught up, after the catch-up batches; the runner blocks
  entries while :attr:`CandleFeed.stale` and keeps managing exits. An estimated clock only
  ever decides staleness, never whether a candle has closed.

Network errors are retried briefly (``retry``); a poll that still fails is logged and counted
(``stats["errors"]``) and the next poll tries again, so the feed itself never dies of a flaky
connection. Errors that retrying cannot fix (an unknown symbol, bad credentials) are raised, as
is a :class:`~framework.download.DownloadError` when the very first poll cannot read the
exchange's clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import ccxt
import ccxt.pro
import numpy as np
import pandas as pd

from framework.data import check_bar, timeframe_to_ms
from framework.download import DownloadError, call_with_retries, download_ohlcv
from framework.exchange import RetryPolicy, point_exchange_at

log = logging.getLogger("tradpal.live.feed")

EventKind = Literal["stale", "fresh", "rejected", "hole"]
#: Network retries inside one poll: short, so that a runner waiting on the feed stays responsive.
FEED_RETRY = RetryPolicy(max_retries=2, base_delay_s=0.5, max_delay_s=5.0)
STALE_AFTER_BARS = 2  # timeframes of silence after which a symbol is stale
#: Candles asked for per ``fetch_ohlcv`` request (Binance's maximum): a feed behind the
#: exchange's clock (a restart after downtime, a replay) catches up 1000 bars per request.
FETCH_LIMIT = 1000
_MONDAY_MS = 4 * 86_400_000  # weekly candles open on Mondays; the epoch was a Thursday
_RECENT = 64  # accepted open times remembered per symbol to tell duplicates from late bars


@dataclass(frozen=True)
class BarBatch:
    """The closed bars of every symbol for one open time.

    ``ohlcv`` has one row per symbol, in the feed's symbol order, columns open, high, low,
    close, volume; rows of ``missing`` symbols are NaN. ``backfilled`` lists the symbols whose
    bar came from a catch-up fetch (after an outage or a reconnect) rather than the live poll
    or stream.
    """

    open_ms: int
    timeframe_ms: int
    symbols: tuple[str, ...]
    ohlcv: np.ndarray
    missing: frozenset[str] = frozenset()
    backfilled: frozenset[str] = frozenset()

    @property
    def close_ms(self) -> int:
        """Close time of the bars: their open plus one timeframe."""
        return self.open_ms + self.timeframe_ms

    @property
    def timestamp(self) -> pd.Timestamp:
        """Open time as a UTC Timestamp (the index a backtest gives this bar)."""
        return pd.Timestamp(self.open_ms, unit="ms", tz="UTC")

    @property
    def day(self) -> int:
        """UTC day number of the open time (days since 1970-01-01), as the core's step takes."""
        return self.open_ms // 86_400_000

    @property
    def complete(self) -> bool:
        return not self.missing

    def row(self, symbol: str) -> np.ndarray:
        """``[open, high, low, close, volume]`` of one symbol (NaN when missing)."""
        return self.ohlcv[self.symbols.index(symbol)]

    @property
    def open(self) -> np.ndarray:
        return self.ohlcv[:, 0]

    @property
    def high(self) -> np.ndarray:
        return self.ohlcv[:, 1]

    @property
    def low(self) -> np.ndarray:
        return self.ohlcv[:, 2]

    @property
    def close(self) -> np.ndarray:
        return self.ohlcv[:, 3]

    @property
    def volume(self) -> np.ndarray:
        return self.ohlcv[:, 4]


@dataclass(frozen=True)
class FeedEvent:
    """A notice from the feed.

    ``kind``: ``"stale"`` (``symbols`` have had no closed candle for more than two timeframes;
    block entries), ``"fresh"`` (all symbols caught up again), ``"rejected"`` (a bad or
    out-of-order bar of ``symbols[0]`` at ``open_ms`` was dropped), ``"hole"`` (the exchange has
    no candles of ``symbols[0]`` from ``open_ms`` to ``end_ms``). ``at_ms`` is the exchange time
    when the feed noticed; ``message`` says it in words.
    """

    kind: EventKind
    at_ms: int
    symbols: tuple[str, ...]
    message: str
    open_ms: int | None = None
    end_ms: int | None = None


FeedItem = BarBatch | FeedEvent


@dataclass
class _SymbolState:
    next_ms: int | None = None  # open time of the next bar expected (the feed's position)
    heard_ms: int | None = None  # close of the latest candle the exchange gave (staleness)
    pending: dict[int, tuple[np.ndarray, bool]] = field(default_factory=dict)  # open -> (row, backfilled)
    recent: deque = field(default_factory=lambda: deque(maxlen=_RECENT))  # accepted open times


def _stats() -> dict[str, int]:
    return {"polls": 0, "requests": 0, "bars": 0, "batches": 0, "backfilled": 0,
            "rejected_bad": 0, "rejected_out_of_order": 0, "duplicates": 0, "holes": 0,
            "missing": 0, "errors": 0, "stale_events": 0, "reconnects": 0}


class CandleFeed:
    """Closed candles of ``symbols`` polled over REST, timed by the exchange's clock.

    Args:
        exchange: a ccxt exchange (``framework.download.create_exchange``).
        symbols: unified symbols, ``["BTC/USDT", "ETH/USDT"]``; batches keep this order.
        timeframe: ccxt timeframe of fixed length (``"1m"``, ``"1h"``, ``"1d"``, ``"1w"``).
        since_ms: open time of the first bar to deliver (e.g. the bar after the warm-up
            history, or after the store's last bar on a restart); default: the candle forming
            when the feed first polls, so the first batch arrives when it closes.
        poll_interval_s: longest sleep between two polls in :meth:`next_bars`; the feed wakes
            earlier when, by the exchange's clock, the next candle should have closed. Default:
            a quarter of the timeframe, at most 5 s.
        clock: local monotonic time in seconds (timeouts; estimating the exchange's time while
            it cannot be reached).
        sleep: how to wait (tests pass one that moves a replay clock instead).
        retry: backoff for network errors within one poll.
    """

    def __init__(
        self,
        exchange: Any,
        symbols: Sequence[str],
        timeframe: str,
        *,
        since_ms: int | None = None,
        poll_interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        retry: RetryPolicy = FEED_RETRY,
    ) -> None:
        if isinstance(symbols, str) or not symbols or not all(isinstance(s, str) and s for s in symbols):
            raise ValueError(f"symbols must be a non-empty list of symbols such as ['BTC/USDT'], "
                             f"got {symbols!r}")
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols are repeated: {list(symbols)}")
        self.tf_ms = timeframe_to_ms(timeframe)  # validates the string
        if timeframe[-1] in "My":
            raise ValueError(f"timeframe {timeframe!r}: the feed takes candles of fixed length "
                             "(s, m, h, d or w), not months or years")
        if poll_interval_s is None:
            poll_interval_s = min(self.tf_ms / 4000.0, 5.0)
        if not (isinstance(poll_interval_s, (int, float)) and 0 < poll_interval_s < float("inf")):
            raise ValueError(f"poll_interval_s must be a number of seconds > 0, got {poll_interval_s!r}")
        self.exchange = exchange
        self.symbols = tuple(symbols)
        self.timeframe = timeframe
        self.poll_interval_s = float(poll_interval_s)
        self.clock, self.sleep, self.retry = clock, sleep, retry
        self.stats: dict[str, int] = _stats()
        self._origin = _MONDAY_MS if timeframe.endswith("w") else 0
        self._state = {s: _SymbolState() for s in self.symbols}
        self._since_ms = None if since_ms is None else self._check_since(since_ms)
        self._start_ms: int | None = None  # exchange time of the first poll
        self._emitted_ms: int | None = None  # open time of the last batch emitted
        self._stale: frozenset[str] = frozenset()  # as of the last poll
        self._stale_told: frozenset[str] = frozenset()  # as of the last item handed out
        self._ready: deque[FeedItem] = deque()
        self._time_read: tuple[int, float] | None = None  # (exchange ms, local s) when last read
        self._markets_loaded = False

    # --- public ------------------------------------------------------------------------------
    @property
    def stale(self) -> bool:
        """True while some symbol is stale (block entries; keep managing exits), as of the
        last item :meth:`next_bars` returned (callers of :meth:`poll` read the events)."""
        return bool(self._stale_told)

    @property
    def stale_symbols(self) -> frozenset[str]:
        return self._stale_told

    @property
    def position_ms(self) -> int | None:
        """Open time of the oldest candle the feed is waiting for (None before the first poll)."""
        return None if self._start_ms is None else min(st.next_ms for st in self._state.values())

    @property
    def backlog(self) -> int:
        """Batches and events already fetched and waiting to be handed out: more than zero
        while the feed is catching up (:meth:`next_bars` returns them without a request). A
        runner may then defer its commit (``live.runner``); at zero it is caught up."""
        return len(self._ready)

    def start_from(self, since_ms: int) -> None:
        """Deliver bars from open time ``since_ms`` on (before the first poll only): e.g. the
        bar after the warm-up history, or after the last bar the store recorded."""
        if self._start_ms is not None:
            raise RuntimeError("start_from() must be called before the feed's first poll")
        self._since_ms = self._check_since(since_ms)

    def next_bars(self, timeout_s: float | None = None) -> FeedItem | None:
        """The next batch or event, polling and sleeping as needed; None if ``timeout_s``
        seconds (local time) pass first. ``timeout_s=0`` polls once without sleeping."""
        deadline = None if timeout_s is None else self.clock() + timeout_s
        while not self._ready:
            self._ready.extend(self.poll())
            if self._ready:
                break
            wait = self._wait_s()
            if deadline is not None:
                left = deadline - self.clock()
                if left <= 0:
                    return None
                wait = min(wait, left)
            self._wait(wait)
        item = self._ready.popleft()
        if isinstance(item, FeedEvent) and item.kind in ("stale", "fresh"):
            self._stale_told = frozenset(item.symbols)
        return item

    def close(self) -> None:
        """Release connections (nothing to do for REST polling)."""

    def __enter__(self) -> CandleFeed:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[FeedItem]:
        """Batches and events, forever (see :meth:`next_bars`)."""
        while True:
            item = self.next_bars()
            if item is not None:
                yield item

    def poll(self) -> list[FeedItem]:
        """One round without sleeping: read the exchange's clock, fetch every candle closed since
        the feed's position, and return the batches and events that are complete, in order."""
        self.stats["polls"] += 1
        before = self._time_read
        closed_now, now = self._times()
        if self._start_ms is None:
            self._begin(closed_now)
        # a replay clock that moves only with market-data requests (the local exchange's fast
        # mode) reads the same twice: ask for candles anyway, which moves it on
        nudge = before is not None and self._time_read is not before and before[0] == closed_now
        events: list[FeedItem] = []
        end = self._closed_end(closed_now)
        for symbol in self.symbols:
            st = self._state[symbol]
            if st.next_ms >= end and not nudge:
                continue  # the next candle has not closed yet
            try:
                rows = self._fetch(symbol, st.next_ms, end)
            except DownloadError as e:
                self._poll_failed(symbol, e)
                continue
            events += self._take(symbol, rows, closed_now, backfill=False)
        return self._finish(events, now)

    def history(self, symbol: str, limit: int | None = None, since_ms: int | None = None,
                until_ms: int | None = None) -> pd.DataFrame:
        """Closed candles of ``symbol`` as a frame indexed by UTC open time (paged through
        :func:`framework.download.download_ohlcv`, without its cache, checked with the data
        layer's rules: bad rows are dropped).

        ``limit``: the last ``limit`` closed candles before ``until_ms`` (default: now), or the
        first ``limit`` from ``since_ms``; ``since_ms``/``until_ms``: a range of open times,
        ``until_ms`` exclusive. Where the exchange has holes there are fewer rows.
        """
        if limit is None and since_ms is None:
            raise ValueError("history() needs limit=N (the last N closed candles) or since_ms=")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be a whole number >= 1, got {limit!r}")
        if since_ms is None:
            until_ms = self._closed_end(self._read_time()) if until_ms is None \
                else self._grid(until_ms - 1) + self.tf_ms
            since_ms = until_ms - limit * self.tf_ms
        elif limit is not None:
            first = self._grid(since_ms + self.tf_ms - 1)
            until_ms = first + limit * self.tf_ms if until_ms is None else min(until_ms, first + limit * self.tf_ms)
        result = download_ohlcv(self.exchange, symbol, self.timeframe, since_ms, until_ms,
                                cache=False, retry=self.retry, progress=False)
        self.stats["requests"] += result.requests
        if not result.report.ok:
            log.warning("history of %s: %s", symbol, result.report.summary())
        return result.data

    # --- exchange access --------------------------------------------------------------------
    def _call(self, fn, *args, what: str, **kwargs):
        self.stats["requests"] += 1
        return call_with_retries(fn, *args, retry=self.retry, what=what, exchange=self.exchange,
                                 sleep=self.sleep, **kwargs)

    def _read_time(self) -> int:
        """Now on the exchange's clock (``fetch_time``, or ccxt's local time where the exchange
        has no clock endpoint); DownloadError when it cannot be read."""
        if self.exchange.has.get("fetchTime"):
            now = int(self._call(self.exchange.fetch_time, what=f"{self.exchange.id} fetch_time"))
        else:
            now = int(self.exchange.milliseconds())
        self._time_read = (now, self.clock())
        return now

    def _times(self, *, refresh: bool = True) -> tuple[int, int]:
        """``(closed_now, now)``: the exchange's clock as last read (read again if ``refresh``),
        which decides which candles are closed, so an estimate can never let a forming one
        through; and the time that decides staleness: the same, or while the clock cannot be
        read, the last reading plus the local time since."""
        if refresh or self._time_read is None:
            try:
                now = self._read_time()
                return now, now
            except DownloadError as e:
                if self._time_read is None:
                    raise  # nothing to estimate from: the first poll needs the exchange
                self.stats["errors"] += 1
                log.warning("cannot read the exchange's clock (%s); estimating it from the local "
                            "clock", e)
                server_ms, local_s = self._time_read
                return server_ms, server_ms + int((self.clock() - local_s) * 1000)
        return self._time_read[0], self._time_read[0]

    def _fetch(self, symbol: str, start_ms: int, end_ms: int) -> list[list]:
        """Candles of ``symbol`` with open times in ``[start_ms, end_ms)``, paged (at least one
        request, even for an empty range)."""
        if not self._markets_loaded:
            self._call(self.exchange.load_markets, what=f"{self.exchange.id} load_markets")
            self._markets_loaded = True
        rows: list[list] = []
        cursor = start_ms
        while True:
            page = self._call(self.exchange.fetch_ohlcv, symbol, self.timeframe, since=cursor,
                              limit=FETCH_LIMIT, what=f"{self.exchange.id} fetch_ohlcv {symbol} {self.timeframe} "
                                   f"since {_iso(cursor)}")
            page = [r for r in page if r and r[0] is not None and r[0] < end_ms]
            if not page:
                break
            rows += page
            last = max(int(r[0]) for r in page)
            if last < cursor:
                break  # an exchange answering with older candles only: stop, they get rejected
            cursor = last + self.tf_ms
            if cursor >= end_ms:
                return rows
        return rows

    def _wait(self, seconds: float) -> None:
        self.sleep(seconds)

    def _poll_failed(self, symbol: str, error: Exception) -> None:
        self.stats["errors"] += 1
        log.warning("%s: poll failed, will try again: %s", symbol, error)

    # --- the rules ---------------------------------------------------------------------------
    def _check_since(self, since_ms: Any) -> int:
        if isinstance(since_ms, bool) or not isinstance(since_ms, (int, np.integer)):
            raise ValueError(f"since_ms must be an open time in ms since the epoch, got {since_ms!r}")
        return self._grid(int(since_ms) + self.tf_ms - 1)  # the first candle opening at or after it

    def _grid(self, ms: int) -> int:
        """Open time of the candle containing ``ms``."""
        return self._origin + (ms - self._origin) // self.tf_ms * self.tf_ms

    def _closed_end(self, now_ms: int) -> int:
        """Exclusive bound on the open times of candles closed at ``now_ms``."""
        return self._grid(now_ms)  # the forming candle's open: open + timeframe > now

    def _begin(self, now_ms: int) -> None:
        self._start_ms = now_ms
        first = self._since_ms if self._since_ms is not None else self._grid(now_ms)
        for st in self._state.values():
            st.next_ms = first

    def _take(self, symbol: str, rows: list[list], now_ms: int, *, backfill: bool) -> list[FeedEvent]:
        """Run fetched or streamed candles of one symbol through the rules; accepted bars wait
        in ``pending`` for their batch. Returns the events raised."""
        st = self._state[symbol]
        events: list[FeedEvent] = []
        end = self._closed_end(now_ms)
        for raw in rows:
            t = int(raw[0])
            if t >= end:
                continue  # still forming: never delivered
            if (t - self._origin) % self.tf_ms:
                events.append(self._reject(symbol, t, now_ms, "bad",
                                           f"its open time is not on the {self.timeframe} grid"))
                continue
            if t in st.recent:
                self.stats["duplicates"] += 1
                log.debug("%s: duplicate candle %s dropped", symbol, _iso(t))
                continue
            if t < st.next_ms or (self._emitted_ms is not None and t <= self._emitted_ms):
                why = (f"it is older than the feed's position {_iso(st.next_ms)}" if t < st.next_ms
                       else f"its batch was already emitted at {_iso(self._emitted_ms)} "
                            f"without {symbol}")
                events.append(self._reject(symbol, t, now_ms, "out_of_order",
                                           f"out of order: {why}"))
                continue
            if t > st.next_ms:
                filled, more = self._gap(symbol, st.next_ms, t, now_ms, backfill=backfill)
                events += more
                if not filled:
                    break  # the catch-up fetch failed: this candle and later ones wait
            st.next_ms = t + self.tf_ms  # even a bad bar moves the feed past its slot
            st.heard_ms = max(st.heard_ms or 0, t + self.tf_ms)  # the exchange is not silent
            problem = self._problem(raw)
            if problem is not None:
                events.append(self._reject(symbol, t, now_ms, "bad", problem))
                continue
            st.recent.append(t)
            st.pending[t] = (np.array([_num(x) for x in raw[1:6]], dtype=np.float64), backfill)
            self.stats["bars"] += 1
            self.stats["backfilled"] += backfill
        return events

    def _gap(self, symbol: str, start: int, stop: int, now_ms: int, *,
             backfill: bool) -> tuple[bool, list[FeedEvent]]:
        """Candles ``[start, stop)`` of ``symbol`` were skipped by the source. Over REST the
        answer that skipped them was already the fetch from ``start``: the exchange has none
        there (a hole). A stream that skipped them is backfilled over REST first. Returns
        False (and nothing is skipped) when that fetch failed, and the events raised."""
        events: list[FeedEvent] = []
        if self._streams_gaps and not backfill:
            try:
                rows = self._fetch(symbol, start, stop)
            except DownloadError as e:
                self._poll_failed(symbol, e)
                return False, []
            events = self._take(symbol, rows, now_ms, backfill=True)
            start = self._state[symbol].next_ms
            if start >= stop:
                return True, events
        n = (stop - start) // self.tf_ms
        self.stats["holes"] += 1
        message = (f"{symbol}: the exchange has no candles from {_iso(start)} to {_iso(stop)} "
                   f"({n} missing); continuing after the hole")
        log.warning(message)
        return True, events + [FeedEvent("hole", now_ms, (symbol,), message, open_ms=start, end_ms=stop)]

    _streams_gaps = False  # True where candles arrive pushed (a stream can skip some)

    def _problem(self, raw: list) -> str | None:
        if len(raw) < 6:
            return f"it has {len(raw) - 1} of the 5 values open, high, low, close, volume"
        o, h, lo, c, v = (np.array([_num(x)]) for x in raw[1:6])
        return check_bar(o, h, lo, c, v)

    def _reject(self, symbol: str, t: int, now_ms: int, why: str, problem: str) -> FeedEvent:
        self.stats["rejected_bad" if why == "bad" else "rejected_out_of_order"] += 1
        message = f"{symbol}: candle {_iso(t)} rejected: {problem}"
        log.warning(message)
        return FeedEvent("rejected", now_ms, (symbol,), message, open_ms=t)

    def _finish(self, events: list[FeedItem], now_ms: int) -> list[FeedItem]:
        """A poll's items in order: its events, then a ``stale`` notice before the batches it
        lets through with symbols missing, or a ``fresh`` one after the catch-up batches."""
        stale = self._check_stale(now_ms)
        batches = self._emit_ready(now_ms)
        if stale and stale[0].kind == "stale":
            return events + stale + batches
        return events + batches + stale

    def _emit_ready(self, now_ms: int) -> list[BarBatch]:
        """The batches every symbol is ready for, oldest first."""
        out: list[BarBatch] = []
        stale = self._stale_at(now_ms)
        while True:
            # bars are accepted in time order, so a symbol's oldest pending bar is its first
            opens = [next(iter(st.pending)) for st in self._state.values() if st.pending]
            if not opens:
                return out
            t = min(opens)
            if not all(t in st.pending or st.next_ms > t or s in stale
                       for s, st in self._state.items()):
                return out  # a symbol may still bring its bar for t
            rows, missing, backfilled = [], set(), set()
            for s, st in self._state.items():
                row, from_backfill = st.pending.pop(t, (None, False))
                if row is None:
                    missing.add(s)
                    rows.append(np.full(5, np.nan))
                    st.next_ms = max(st.next_ms, t + self.tf_ms)
                else:
                    rows.append(row)
                    if from_backfill:
                        backfilled.add(s)
            self._emitted_ms = t
            self.stats["batches"] += 1
            self.stats["missing"] += len(missing)
            out.append(BarBatch(t, self.tf_ms, self.symbols, np.vstack(rows), frozenset(missing),
                                frozenset(backfilled)))

    def _stale_at(self, now_ms: int) -> frozenset[str]:
        limit = STALE_AFTER_BARS * self.tf_ms
        return frozenset(s for s, st in self._state.items()
                         if now_ms - max(self._start_ms, st.heard_ms or 0) > limit)

    def _check_stale(self, now_ms: int) -> list[FeedEvent]:
        stale = self._stale_at(now_ms)
        if stale == self._stale:
            return []
        self._stale = stale
        if stale:
            self.stats["stale_events"] += 1
            message = (f"feed stale: no closed candle of {', '.join(sorted(stale))} for more than "
                       f"{STALE_AFTER_BARS} x {self.timeframe} (exchange time {_iso(now_ms)}); "
                       "entries are blocked")
            log.warning(message)
            return [FeedEvent("stale", now_ms, tuple(sorted(stale)), message)]
        message = f"feed fresh again at {_iso(now_ms)}: every symbol is up to date"
        log.info(message)
        return [FeedEvent("fresh", now_ms, (), message)]

    def _wait_s(self) -> float:
        """Local seconds until the next candle should close (by the exchange's clock as last
        read, assuming it runs with the local one), at most ``poll_interval_s``."""
        if self._time_read is None or self.position_ms is None:
            return self.poll_interval_s
        server_ms, local_s = self._time_read
        now = server_ms + (self.clock() - local_s) * 1000
        due = (self.position_ms + self.tf_ms - now) / 1000
        return min(max(due, 0.01), self.poll_interval_s)


class WebsocketCandleFeed(CandleFeed):
    """The same feed, with candles pushed by ccxt's ``watch_ohlcv_for_symbols`` (ccxt.pro).

    A streamed candle counts as closed once the stream has moved on to a later one for that
    symbol (the exchange opens a candle only after closing the previous one; its last update
    before that carries the final values). REST fills in: the exchange's clock is read every
    ``poll_interval_s``, and a candle that closed more than ``grace_s`` ago (exchange time,
    at most one timeframe) without the stream bringing it, or one the stream skipped (after a
    reconnect), is fetched over REST before any later bar is delivered. A dropped connection
    is counted (``stats["reconnects"]``) and reopened by the next wait, after a backoff.

    Args:
        exchange: the ccxt (REST) exchange: clock, backfill and :meth:`history`.
        ws_exchange: its ccxt.pro counterpart; default one of the same id, pointed at ``url``.
        url: base URL of both APIs when not the exchange's own (the local exchange's).
        grace_s: see above; default 30 s.
        Other arguments as :class:`CandleFeed`.
    """

    _streams_gaps = True

    def __init__(self, exchange: Any, symbols: Sequence[str], timeframe: str, *,
                 ws_exchange: Any = None, url: str | None = None, grace_s: float = 30.0,
                 **kwargs: Any) -> None:
        super().__init__(exchange, symbols, timeframe, **kwargs)
        if not (isinstance(grace_s, (int, float)) and 0 <= grace_s < float("inf")):
            raise ValueError(f"grace_s must be a number of seconds >= 0, got {grace_s!r}")
        self.grace_ms = min(int(grace_s * 1000), self.tf_ms)
        self._loop = asyncio.new_event_loop()
        self.ws = ws_exchange if ws_exchange is not None else _pro_exchange(exchange.id, url)
        if not self.ws.has.get("watchOHLCVForSymbols"):
            raise ValueError(f"{self.ws.id} has no watch_ohlcv_for_symbols in ccxt.pro; use the "
                             "REST CandleFeed")
        self._task: asyncio.Task | None = None
        self._failures = 0  # consecutive stream failures (reconnect backoff)
        self._retry_at = 0.0  # local time before which the stream is not reopened

    def poll(self) -> list[FeedItem]:
        """Take what the stream brought (without waiting), fill in over REST what it did not,
        and return the batches and events that are complete, in order."""
        self.stats["polls"] += 1
        self._pump(0.0)
        due = self._time_read is None or self.clock() - self._time_read[1] >= self.poll_interval_s
        closed_now, now = self._times(refresh=due)
        if self._start_ms is None:
            self._begin(closed_now)
        streamed = {s: self._streamed(s) for s in self.symbols}
        # a streamed candle proves the exchange's time has reached its open
        newest = max([closed_now] + [rows[-1][0] for rows in streamed.values() if rows])
        closed_now, now = newest, max(now, newest)
        events: list[FeedItem] = []
        for symbol, rows in streamed.items():
            st = self._state[symbol]
            closed = [r for r in rows if r[0] < rows[-1][0]]  # the stream moved past them
            errors = self.stats["errors"]
            events += self._take(symbol, closed, closed_now, backfill=False)
            late = st.next_ms + self.tf_ms + self.grace_ms <= closed_now
            if late and self.stats["errors"] == errors:  # the stream is late: ask REST (once)
                try:
                    fetched = self._fetch(symbol, st.next_ms, self._closed_end(closed_now))
                except DownloadError as e:
                    self._poll_failed(symbol, e)
                    continue
                events += self._take(symbol, fetched, closed_now, backfill=True)
        return self._finish(events, now)

    def close(self) -> None:
        """Close the websocket connection and the feed's event loop."""
        if self._loop.is_closed():
            return
        self._loop.run_until_complete(self._shutdown())
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.ws.close()

    def _streamed(self, symbol: str) -> list[list]:
        """Streamed candles of ``symbol`` from the feed's position on, oldest first."""
        cached = (getattr(self.ws, "ohlcvs", None) or {}).get(symbol, {}).get(self.timeframe) or []
        nxt = self._state[symbol].next_ms
        return sorted((list(r) for r in cached if r and r[0] is not None and r[0] >= nxt),
                      key=lambda r: r[0])

    def _wait(self, seconds: float) -> None:
        self._pump(seconds)

    def _pump(self, seconds: float) -> None:
        """Run the stream for up to ``seconds``: until it brings an update, fails, or the time
        is up. A failure drops the candles ccxt cached (they may be stale) and backs off."""
        if self._task is None:
            if self.clock() < self._retry_at:
                self.sleep(min(seconds, self._retry_at - self.clock()))
                return
            pairs = [[s, self.timeframe] for s in self.symbols]
            self._task = self._loop.create_task(self.ws.watch_ohlcv_for_symbols(pairs))
        self._loop.run_until_complete(asyncio.wait({self._task}, timeout=max(seconds, 0.0)))
        if not self._task.done():
            return
        task, self._task = self._task, None
        error = task.exception()
        if error is None:
            self._failures = 0
            return
        if not isinstance(error, ccxt.NetworkError):
            raise error
        self.stats["reconnects"] += 1
        self._failures += 1
        backoff = self.retry.delay(self._failures - 1)
        self._retry_at = self.clock() + backoff
        for symbol in self.symbols:
            (getattr(self.ws, "ohlcvs", None) or {}).pop(symbol, None)
        log.warning("candle stream failed (%s: %s); reconnecting in %.1f s, then backfilling "
                    "over REST", type(error).__name__, error, backoff)


def open_feed(exchange: Any, symbols: Sequence[str], timeframe: str, *,
              mode: Literal["auto", "rest", "ws"] = "auto", url: str | None = None,
              **kwargs: Any) -> CandleFeed:
    """A :class:`WebsocketCandleFeed` (``mode="ws"``, or ``"auto"`` where ccxt.pro streams
    candles of this exchange) or a REST :class:`CandleFeed`; ``url`` as for the websocket
    feed, ``kwargs`` for either."""
    if mode not in ("auto", "rest", "ws"):
        raise ValueError(f"mode must be 'auto', 'rest' or 'ws', got {mode!r}")
    streams = exchange.id in getattr(ccxt.pro, "exchanges", [])
    if mode == "ws" or (mode == "auto" and streams):
        return WebsocketCandleFeed(exchange, symbols, timeframe, url=url, **kwargs)
    return CandleFeed(exchange, symbols, timeframe, **kwargs)


def _pro_exchange(exchange_id: str, url: str | None) -> Any:
    """The ccxt.pro exchange ``exchange_id``, pointed at ``url`` (REST and websocket) if given."""
    if exchange_id not in getattr(ccxt.pro, "exchanges", []):
        raise ValueError(f"ccxt.pro has no websocket client for {exchange_id!r}; use the REST CandleFeed")
    pro = getattr(ccxt.pro, exchange_id)({"enableRateLimit": True})
    if url:
        point_exchange_at(pro, url)  # the streams too: ws://host:port/ws on the local exchange
    return pro


def _num(x: Any) -> float:
    """A candle value as a float (ccxt gives None for a missing one; NaN then fails the checks)."""
    try:
        return float(x) if x is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()


__all__ = ["BarBatch", "CandleFeed", "FeedEvent", "FeedItem", "FEED_RETRY", "FETCH_LIMIT", "STALE_AFTER_BARS",
           "WebsocketCandleFeed", "open_feed"]
