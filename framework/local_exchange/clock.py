"""The replay clock: what "now" is on the local exchange.

Times are integer milliseconds since the epoch (UTC), like Binance's. Three modes:

- ``"stepped"``: time moves only when the caller says so (:meth:`ReplayClock.step`,
  :meth:`ReplayClock.advance_to`, or ``POST /_tradpal/clock``). Deterministic; for tests.
- ``"realtime"``: replay time runs with the wall clock, ``speed`` times faster
  (``speed=60`` replays one 1m candle per second).
- ``"fast"``: as fast as the client consumes data: every market-data request (klines,
  tickers, order book) advances time by one ``step_ms``.

The clock never runs past ``end_ms`` (the close of the last candle in the dataset).
"""

from __future__ import annotations

import threading
import time
from typing import Literal

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
        if mode not in CLOCK_MODES:
            raise ValueError(f"unknown clock mode {mode!r}; use one of {CLOCK_MODES}")
        if speed <= 0:
            raise ValueError(f"speed must be > 0 (a multiple of real time), got {speed}")
        self.mode: ClockMode = mode
        self.speed = float(speed)
        self.step_ms = int(step_ms)
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
        if n < 0:
            raise ValueError("the replay clock only moves forward")
        return self.advance_to(self.now_ms() + n * self.step_ms)

    def on_market_request(self) -> None:
        """Called by the server on every market-data request; moves time in ``fast`` mode."""
        if self.mode == "fast":
            self.step(1)

    def set_mode(self, mode: ClockMode, speed: float | None = None) -> None:
        """Switch mode keeping the current time."""
        if mode not in CLOCK_MODES:
            raise ValueError(f"unknown clock mode {mode!r}; use one of {CLOCK_MODES}")
        now = self.now_ms()
        with self._lock:
            self.mode = mode
            if speed is not None:
                self.speed = float(speed)
            self._rebase(now)

    @property
    def finished(self) -> bool:
        """True once the clock has reached the end of the dataset."""
        return self.end_ms is not None and self.now_ms() >= self.end_ms
