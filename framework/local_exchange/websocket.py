"""Binance's kline websocket streams, driven by the replay clock (standard library only).

Endpoints, on the same port as the REST API: ``/ws`` and ``/ws/<anything>`` (raw streams;
``/ws/btcusdt@kline_1m`` subscribes at connect, ``/ws/0`` is what ccxt opens before sending
``SUBSCRIBE``) and ``/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m`` (combined: each
message wrapped as ``{"stream": name, "data": event}``). Requests ``SUBSCRIBE``,
``UNSUBSCRIBE`` and ``LIST_SUBSCRIPTIONS`` are answered as Binance does
(``{"result": ..., "id": ...}``); only ``<symbol>@kline_<interval>`` streams exist here.

What is pushed, as the replay clock moves: for each subscribed stream, every candle that
closed since the last push, in order, with ``"x": true`` (Binance pushes one per interval;
a replay jumping ahead pushes each closed candle, at most the last 1000), then the candle
forming now with ``"x": false`` whenever it changed, at most every 0.25 s of wall time.
Candles hidden by a ``candle_gap`` fault are not pushed. The stream does not move the clock:
in ``fast`` mode time moves with REST market-data requests only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

import numpy as np

from framework.data import timeframe_to_ms

from .market import Series
from .server import INTERVALS, _fmt  # the server imports this module only when a stream opens

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455
_TICK_S = 0.05  # how often a connection looks at the clock
FORMING_EVERY_S = 0.25  # least wall time between two pushes of a forming candle
MAX_CATCH_UP = 1000  # closed candles pushed at most after a jump of the clock
MAX_MESSAGE = 1 << 16
_WEEK_MS, _MONDAY_MS = 604_800_000, 4 * 86_400_000


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final frame (server to client)."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


@dataclass
class _Stream:
    name: str
    series: Series
    interval: str
    interval_ms: int
    next_open: int  # open time of the next closed candle to push
    forming_sent: tuple | None = None  # (open, values) of the forming candle last pushed
    forming_wall: float = 0.0


class KlineSession:
    """One websocket connection after the handshake: reads requests, pushes klines."""

    def __init__(self, exchange, sock: socket.socket, *, combined: bool, streams: list[str]):
        self.ex, self.sock, self.combined = exchange, sock, combined
        self.streams: dict[str, _Stream] = {}
        self._buf = bytearray()
        self._closed = threading.Event()
        self._problems = [p for p in map(self._subscribe, streams) if p]  # told once connected

    def close(self) -> None:
        """End the connection from outside (a test dropping websockets)."""
        self._closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def run(self) -> None:
        """Serve until the client leaves, the connection is dropped, or a write times out (the
        handler's socket timeout: a client that stopped reading)."""
        try:
            for problem in self._problems:
                self._send_json({"error": {"code": 2, "msg": f"Invalid request: {problem}"}, "id": None})
            while not self._closed.is_set():
                readable, _, _ = select.select([self.sock], [], [], _TICK_S)
                if readable:
                    data = self.sock.recv(65536)
                    if not data:
                        return
                    self._buf += data
                    if not self._read_frames():
                        return
                self._push(self.ex.clock.now_ms())
        except (OSError, ValueError):  # the client went away, or the socket was shut down
            return

    # --- client frames ----------------------------------------------------------------------
    def _read_frames(self) -> bool:
        """Handle every complete frame in the buffer; False when the connection should end."""
        while True:
            if len(self._buf) < 2:
                return True
            b0, b1 = self._buf[0], self._buf[1]
            opcode, masked, n, pos = b0 & 0x0F, b1 & 0x80, b1 & 0x7F, 2
            if n == 126:
                if len(self._buf) < 4:
                    return True
                n, pos = struct.unpack("!H", self._buf[2:4])[0], 4
            elif n == 127:
                if len(self._buf) < 10:
                    return True
                n, pos = struct.unpack("!Q", self._buf[2:10])[0], 10
            if n > MAX_MESSAGE or not masked or not b0 & 0x80:  # RFC 6455: clients mask
                self._send(8, struct.pack("!H", 1009 if n > MAX_MESSAGE else 1002))
                return False
            if len(self._buf) < pos + 4 + n:
                return True
            mask = self._buf[pos:pos + 4]
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self._buf[pos + 4:pos + 4 + n]))
            del self._buf[:pos + 4 + n]
            if opcode == 8:  # close: echo it
                self._send(8, payload[:2])
                return False
            if opcode == 9:
                self._send(10, payload)
            elif opcode == 1:
                self._request(payload)

    def _request(self, payload: bytes) -> None:
        try:
            msg = json.loads(payload)
            method, params, rid = msg["method"], msg.get("params", []), msg.get("id")
            if not isinstance(params, list):
                raise ValueError("params must be a list of stream names")
        except (ValueError, KeyError, TypeError) as e:
            self._send_json({"error": {"code": 3, "msg": f"Invalid JSON: {e}"}, "id": None})
            return
        if method == "LIST_SUBSCRIPTIONS":
            self._send_json({"result": sorted(self.streams), "id": rid})
            return
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
            self._send_json({"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"},
                             "id": rid})
            return
        for name in params:
            if method == "UNSUBSCRIBE":
                self.streams.pop(name, None)
                continue
            problem = self._subscribe(name)
            if problem:
                self._send_json({"error": {"code": 2, "msg": f"Invalid request: {problem}"}, "id": rid})
                return
        self._send_json({"result": None, "id": rid})

    def _subscribe(self, name: object) -> str | None:
        """Add a stream; the reason when it does not exist here."""
        if not isinstance(name, str) or "@kline_" not in name:
            return f"stream {name!r}: only <symbol>@kline_<interval> streams are served"
        market_id, interval = name.split("@kline_", 1)
        series = self.ex.market.by_id.get(market_id.upper())
        if series is None:
            return f"stream {name!r}: unknown symbol {market_id!r}"
        if interval not in INTERVALS or timeframe_to_ms(interval) % series.tf_ms:
            return f"stream {name!r}: invalid interval {interval!r}"
        if name not in self.streams:
            iv = timeframe_to_ms(interval)
            now = self.ex.clock.now_ms()
            self.streams[name] = _Stream(name, series, interval, iv, _grid(now, iv))
        return None

    # --- pushes -----------------------------------------------------------------------------
    def _push(self, now: int) -> None:
        wall = time.monotonic()
        for st in list(self.streams.values()):
            closed_end = _grid(now, st.interval_ms)
            forming_due = (st.forming_sent is None or st.forming_sent[0] != closed_end
                           or wall - st.forming_wall >= FORMING_EVERY_S)
            if closed_end <= st.next_open and not forming_due:
                continue  # nothing to say yet: spare the candle lookup
            times, ohlcv = st.series.candles(st.interval_ms, now)
            st.next_open = max(st.next_open, closed_end - MAX_CATCH_UP * st.interval_ms)
            lo = int(np.searchsorted(times, st.next_open, side="left"))
            hi = int(np.searchsorted(times, closed_end, side="left"))
            for i in range(lo, hi):
                self._kline(st, now, int(times[i]), ohlcv[i], closed=True)
            st.next_open = max(st.next_open, closed_end)
            if hi < len(times) and int(times[hi]) == closed_end:  # the candle forming now
                values = (closed_end, tuple(ohlcv[hi]))
                if forming_due and values != st.forming_sent:
                    self._kline(st, now, closed_end, ohlcv[hi], closed=False)
                    st.forming_sent = values
            if forming_due:
                st.forming_wall = wall

    def _kline(self, st: _Stream, now: int, t: int, row, *, closed: bool) -> None:
        mid = st.series.market_id
        if self.ex.faults.hides(mid, t):
            return
        o, h, lo, c, v = (float(x) for x in row)
        event = {"e": "kline", "E": now, "s": mid, "k": {
            "t": t, "T": t + st.interval_ms - 1, "s": mid, "i": st.interval, "f": -1, "L": -1,
            "o": _fmt(o), "c": _fmt(c), "h": _fmt(h), "l": _fmt(lo), "v": _fmt(v), "n": 0,
            "x": closed, "q": _fmt(v * c), "V": "0", "Q": "0", "B": "0"}}
        self._send_json({"stream": st.name, "data": event} if self.combined else event)

    def _send_json(self, body: dict) -> None:
        self._send(1, json.dumps(body).encode())

    def _send(self, opcode: int, payload: bytes) -> None:
        self.sock.sendall(frame(opcode, payload))


def session_for(exchange, sock: socket.socket, path: str, query: str) -> KlineSession:
    """The session for a handshake on ``path``: raw (``/ws...``) or combined (``/stream``)."""
    if path == "/stream":
        names = dict(parse_qsl(query)).get("streams", "")
        return KlineSession(exchange, sock, combined=True, streams=[n for n in names.split("/") if n])
    rest = path[len("/ws/"):] if path.startswith("/ws/") else ""
    return KlineSession(exchange, sock, combined=False,
                        streams=[n for n in rest.split("/") if "@" in n])


def _grid(ms: int, interval_ms: int) -> int:
    origin = _MONDAY_MS if interval_ms % _WEEK_MS == 0 else 0
    return origin + (ms - origin) // interval_ms * interval_ms
