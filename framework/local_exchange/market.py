"""The replayed market: historical candles per symbol and the price path inside each candle.

Inside a candle the price is assumed to move in straight lines open -> low -> high -> close
for an up candle (close >= open) and open -> high -> low -> close for a down candle, each leg
taking a third of the candle. That path gives a last price at any instant, the values of the
still-open candle, and the order in which resting orders are touched. Between the close of one
candle and the open of the next the price jumps (a gap); orders crossed by a jump fill at the
new open, as in the backtester.

Times are integer ms (candle open times); prices float.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from framework.data import (
    DATA_DIR,
    bundled_datasets,
    infer_spacing,
    read_ohlcv_file,
    timeframe_to_ms,
    validate_ohlcv,
)

_STEM_RE = re.compile(r"^([A-Za-z0-9]+)_([A-Za-z0-9]+)-(\d+[smhdw])$")
_WEEK_OFFSET_MS = 4 * 86_400_000  # Binance weeks start on Monday; the epoch was a Thursday


@dataclass
class Series:
    """One symbol's candles as arrays (``t``: open times in ms)."""

    symbol: str  # unified, "BTC/USDT"
    base: str
    quote: str
    tf_ms: int
    t: np.ndarray
    o: np.ndarray
    h: np.ndarray
    lo: np.ndarray
    c: np.ndarray
    v: np.ndarray
    _agg_cache: dict = field(default_factory=dict, repr=False)

    @property
    def market_id(self) -> str:
        return self.base + self.quote

    @property
    def end_ms(self) -> int:
        return int(self.t[-1]) + self.tf_ms

    def bar_index(self, ms: int) -> int:
        """Index of the last candle opened at or before ``ms`` (-1 before the first)."""
        return int(np.searchsorted(self.t, ms, side="right")) - 1

    def vertices(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Times and prices of candle ``i``'s path (open, two extremes, close)."""
        t0, o, c = int(self.t[i]), self.o[i], self.c[i]
        a, b = (self.lo[i], self.h[i]) if c >= o else (self.h[i], self.lo[i])
        third = self.tf_ms / 3.0
        return (np.array([t0, t0 + third, t0 + 2 * third, t0 + self.tf_ms - 1e-6]),
                np.array([o, a, b, c]))

    def price_at(self, ms: int) -> float:
        """Last price at ``ms``: on the path inside a candle, the last close between candles."""
        i = self.bar_index(ms)
        if i < 0:
            return float(self.o[0])
        if ms >= int(self.t[i]) + self.tf_ms:
            return float(self.c[i])
        times, prices = self.vertices(i)
        return float(np.interp(ms, times, prices))

    def partial_bar(self, i: int, ms: int) -> tuple[float, float, float, float, float]:
        """Candle ``i`` as seen at ``ms`` (open, high, low, close, volume so far)."""
        times, prices = self.vertices(i)
        if ms >= int(self.t[i]) + self.tf_ms:
            return (float(self.o[i]), float(self.h[i]), float(self.lo[i]), float(self.c[i]),
                    float(self.v[i]))
        seen = prices[times <= ms]
        now = float(np.interp(ms, times, prices))
        frac = (ms - int(self.t[i])) / self.tf_ms
        return (float(self.o[i]), max(seen.max(), now), min(seen.min(), now), now,
                float(self.v[i]) * frac)

    def path(self, start_ms: int, end_ms: int) -> list[tuple[float, float, bool]]:
        """Points ``(time, price, jumped)`` of the price path over ``[start_ms, end_ms]``;
        ``jumped`` marks a discontinuous move from the previous point (a candle opening)."""
        points = [(float(start_ms), self.price_at(start_ms), False)]
        i = max(self.bar_index(start_ms), 0)
        while i < len(self.t) and self.t[i] <= end_ms:
            times, prices = self.vertices(i)
            for k in range(4):
                if start_ms < times[k] <= end_ms:
                    points.append((float(times[k]), float(prices[k]), k == 0))
            i += 1
        if points[-1][0] < end_ms:
            points.append((float(end_ms), self.price_at(end_ms), False))
        return points

    def candles(self, interval_ms: int, now_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """All candles of ``interval_ms`` opened at or before ``now_ms``: ``(times, ohlcv)``
        where ``ohlcv`` is an (n, 5) array; the last one may still be open (partial)."""
        if interval_ms % self.tf_ms:
            raise ValueError(f"interval {interval_ms} ms is not a multiple of the data's "
                             f"{self.tf_ms} ms candles")
        last = self.bar_index(now_ms)
        if last < 0:
            return np.empty(0, np.int64), np.empty((0, 5))
        if interval_ms not in self._agg_cache:
            self._agg_cache[interval_ms] = _aggregate(self, interval_ms, slice(0, len(self.t)))
        times, ohlcv, first_base = self._agg_cache[interval_ms]
        n = int(np.searchsorted(times, now_ms, side="right"))
        times, ohlcv = times[:n], ohlcv[:n].copy()
        if n and times[-1] + interval_ms > now_ms:  # the bin holding "now" is still open
            lo = first_base[n - 1]
            partial = np.array(self.partial_bar(last, now_ms))
            if lo < last:
                closed = _aggregate(self, interval_ms, slice(lo, last))[1][0]
                partial = np.array([closed[0], max(closed[1], partial[1]), min(closed[2], partial[2]),
                                    partial[3], closed[4] + partial[4]])
            ohlcv[-1] = partial
        return times, ohlcv


def _aggregate(s: Series, interval_ms: int, sl: slice):
    """Bins of ``interval_ms`` over base candles ``sl``: (bin open times, ohlcv, first base index)."""
    t = s.t[sl]
    if len(t) == 0:
        return np.empty(0, np.int64), np.empty((0, 5)), np.empty(0, np.int64)
    offset = _WEEK_OFFSET_MS if interval_ms % 604_800_000 == 0 else 0
    bins = (t - offset) // interval_ms
    starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    ends = np.r_[starts[1:], len(t)] - 1
    base0 = sl.start or 0
    ohlcv = np.column_stack([
        s.o[sl][starts], np.maximum.reduceat(s.h[sl], starts), np.minimum.reduceat(s.lo[sl], starts),
        s.c[sl][ends], np.add.reduceat(s.v[sl], starts)])
    return bins[starts] * interval_ms + offset, ohlcv, starts + base0


class MarketData:
    """All replayed symbols, keyed by unified symbol (``"BTC/USDT"``) and by market id."""

    def __init__(self, series: list[Series]):
        if not series:
            raise ValueError("the local exchange needs at least one symbol's candles")
        self.by_symbol = {s.symbol: s for s in series}
        self.by_id = {s.market_id: s for s in series}

    @property
    def start_ms(self) -> int:
        return min(int(s.t[0]) for s in self.by_symbol.values())

    @property
    def end_ms(self) -> int:
        return max(s.end_ms for s in self.by_symbol.values())

    @property
    def step_ms(self) -> int:
        return min(s.tf_ms for s in self.by_symbol.values())

    @classmethod
    def from_frames(cls, frames: Mapping[str, pd.DataFrame]) -> MarketData:
        """From ``{"BTC/USDT": ohlcv_frame}``; each frame's timeframe is its typical spacing."""
        out = []
        for symbol, df in frames.items():
            if "/" not in symbol:
                raise ValueError(f"symbol {symbol!r} must look like BASE/QUOTE, e.g. 'BTC/USDT'")
            frame, _ = validate_ohlcv(df, name=symbol, calendar="24/7", policy="drop")
            spacing = infer_spacing(frame.index)
            if spacing is None:
                raise ValueError(f"{symbol}: need at least two candles to know the timeframe")
            base, quote = symbol.split("/")
            t = (frame.index.asi8 // 1_000_000).astype(np.int64)  # ns -> ms
            vol = frame["volume"].to_numpy() if "volume" in frame else np.ones(len(frame))
            out.append(Series(symbol, base, quote, int(spacing / pd.Timedelta(milliseconds=1)), t,
                              frame["open"].to_numpy(), frame["high"].to_numpy(),
                              frame["low"].to_numpy(), frame["close"].to_numpy(), vol))
        return cls(out)

    @classmethod
    def from_path(cls, path: str | Path) -> MarketData:
        """From a file or folder of files named ``BASE_QUOTE-TF.csv|.parquet`` (e.g.
        ``BTC_USDT-1h.csv``), or a bundled dataset name. With several timeframes of one
        symbol the finest is used (coarser candles are aggregated from it)."""
        p = Path(path)
        if not p.exists() and str(path) in bundled_datasets():
            p = next(DATA_DIR.glob(f"{path}.*"))
        if not p.exists():
            raise FileNotFoundError(f"no data file or folder {str(path)!r}; give a file named "
                                    "like BTC_USDT-1h.csv, a folder of them, or a bundled name")
        files = sorted(p.iterdir()) if p.is_dir() else [p]
        chosen: dict[str, tuple[int, Path]] = {}
        for f in files:
            m = _STEM_RE.match(f.stem)
            if not m or f.suffix not in (".csv", ".parquet"):
                continue
            symbol = f"{m.group(1).upper()}/{m.group(2).upper()}"
            tf = timeframe_to_ms(m.group(3))
            if symbol not in chosen or tf < chosen[symbol][0]:
                chosen[symbol] = (tf, f)
        if not chosen:
            raise ValueError(f"{p}: no file named like BASE_QUOTE-TF.csv (e.g. BTC_USDT-1h.csv)")
        return cls.from_frames({s: read_ohlcv_file(f) for s, (_, f) in chosen.items()})
