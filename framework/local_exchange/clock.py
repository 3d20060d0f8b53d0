"""The replay clock: what "now" is on the local exchange.

Times are integer milliseconds since the epoch (UTC), like Binance's. Three modes:

- ``"stepped"``: time moves only when the caller says so (:meth:`ReplayClock.step`,
  :meth:`ReplayClock.advance_to`, or ``POST /_tradpal/clock``). Deterministic; for tests.
- ``"realtime"``: replay time runs with the wall clock, ``speed`` times faster
  (``speed=60`` replays one 1m candle per second).
- ``"fast"``: as fast as the client consumes data: every market-data request (klines,
  tickers, order book) advances time by one ``step_ms``; a klines request from a start time
  (``startTime``, ``limit``) advances it to the close of the last candle it asks for, if that
  is later, so a client catching up reads up to 1000 closed candles per request.

The clock never runs past ``end_ms`` (the close of the last candle in the dataset).
"""

from __future__ import annotations

import threading
import time
from typing import Literal

from .checks import number, one_of

ClockMode = Literal["stepped", "realtime", "fast"]
CLOCK_MODES = ("stepped", "realtime", "fast")


class ReplayClock:
    """Replay time in ms; thread-safe."""

    def __init__(
        self,
        start_ms: int,
        *,
        mode: ClockMode = "stepped",
        speed: float = 1.0,
        step_ms: int = 60_000,
        end_ms: int | None = None,
    ) -> None:
        self.mode: ClockMode = one_of(mode, "mode", CLOCK_MODES)
        self.speed = check_speed(speed)
        self.step_ms = number(step_ms, "step_ms", low=0, low_open=True, integer=True)
        self.end_ms = end_ms
        self._lock = threading.Lock()
        self._base_ms = int(start_ms)
        self._wall_base = time.monotonic()

    def _clamp(self, ms: int) -> int:
        return ms if self.end_ms is None else min(ms, self.end_ms)

    def now_ms(self) -> int:
        """Current replay time in ms."""
        with self._lock:
            if self.mode == "realtime":
                elapsed = (time.monotonic() - self._wall_base) * 1000.0 * self.speed
                return self._clamp(self._base_ms + int(elapsed))
            return self._base_ms

    def _rebase(self, ms: int) -> None:
        self._base_ms = self._clamp(ms)
        self._wall_base = time.monotonic()

    def advance_to(self, ms: int) -> int:
        """Jump to ``ms`` (never backwards); returns the new time. Works in every mode."""
        now = self.now_ms()
        with self._lock:
            self._rebase(max(now, int(ms)))
            return self._base_ms

    def step(self, n: int = 1) -> int:
        """Advance by ``n`` steps of ``step_ms``; returns the new time."""
        number(n, "step", low=0, integer=True)  # the replay clock only moves forward
        return self.advance_to(self.now_ms() + n * self.step_ms)

    def on_market_request(self, until_ms: int | None = None) -> None:
        """Called by the server on every market-data request; moves time in ``fast`` mode: one
        step, or to ``until_ms`` (the close of the last candle asked for) if that is later."""
        if self.mode == "fast":
            now = self.step(1)
            if until_ms is not None and until_ms > now:
                self.advance_to(until_ms)

    def set_mode(self, mode: ClockMode, speed: float | None = None) -> None:
        """Switch mode keeping the current time (both arguments are checked before either
        is applied)."""
        one_of(mode, "mode", CLOCK_MODES)
        speed = self.speed if speed is None else check_speed(speed)
        now = self.now_ms()
        with self._lock:
            self.mode, self.speed = mode, speed
            self._rebase(now)

    @property
    def finished(self) -> bool:
        """True once the clock has reached the end of the dataset."""
        return self.end_ms is not None and self.now_ms() >= self.end_ms


def check_speed(speed: float) -> float:
    """A realtime speed-up: a finite number > 0 (a negative one would run time backwards)."""
    return number(speed, "speed", low=0, low_open=True)
