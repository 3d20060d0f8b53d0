"""Download OHLCV through ccxt: pagination, rate limits, retries, and an incremental Parquet cache.

- Pagination: pages of ``page_limit`` candles from ``since`` until ``until`` (or the last
  closed candle), each page starting one timeframe after the last candle received.
- Rate limit: ccxt's own limiter (``enableRateLimit=True``, spacing ``exchange.rateLimit`` ms
  times the endpoint's cost) paces the requests.
- Retries (:mod:`framework.exchange`): ccxt's ``NetworkError`` family (``RequestTimeout``, ``RateLimitExceeded``,
  ``DDoSProtection``, ``ExchangeNotAvailable``, ...) is retried with exponential backoff, at
  least as long as the server's ``Retry-After``; after ``max_retries`` a :class:`DownloadError`
  says what failed. A ``Retry-After`` longer than ``max_delay_s`` is not waited out: it ends
  the download at once with a :class:`DownloadError` naming the requested wait. Other ccxt
  errors (bad symbol, authentication) are not retried.
- Failures keep what was fetched: when a download stops midway (retries exhausted, a long
  ``Retry-After``, an error that retrying cannot fix, Ctrl-C), every page already received is
  written to the cache, whose coverage then records only the range actually fetched; the error
  says how many candles were saved, and running the same download again resumes there.
- Cache: one Parquet file per (exchange, symbol, timeframe) under ``data/cache/`` (override
  with ``cache_dir`` or ``TRADPAL_CACHE_DIR``), checked to be writable before anything is
  fetched. It records which time ranges it covers, so a later download of an overlapping range
  only fetches what is missing. Coverage holds only the spans where candles arrived: candles
  the exchange left out (an outage, a range before the listing) are not claimed, and the next
  download asks for them again (``DownloadResult.holes``). Only closed candles
  are stored: "now" is the exchange's own clock (``fetch_time``), read before fetching, and a
  candle is closed when ``open + timeframe <= now``.

Times: ``since``/``until`` accept epoch ms, ISO 8601 strings or Timestamps (naive = UTC);
``until`` is exclusive and refers to candle open times.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import ccxt
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from .data import DATA_DIR, ValidationReport, align_ohlcv, timeframe_to_ms, to_ms, validate_ohlcv
from .exchange import (
    RETRYABLE,
    ExchangeAccessError,
    RetryPolicy,
    create_exchange,
    load_credentials,
    point_exchange_at,
)
from .exchange import call_with_retries as _call_with_retries
from .exchange import retry_after_s as _retry_after_s  # noqa: F401 - the old private name

# exchange access lives in framework.exchange; these names stay importable from here
__all__ = ["RETRYABLE", "DownloadError", "DownloadResult", "RetryPolicy", "cache_path",
           "call_with_retries", "closed_candles_end", "create_exchange", "default_cache_dir",
           "download_many", "download_ohlcv", "load_credentials", "point_exchange_at",
           "read_cache"]

T = TypeVar("T")
_META_KEY = b"tradpal"


class DownloadError(ExchangeAccessError):
    """A download failed for good (retries exhausted, a server asking for a longer wait than
    the retry policy allows, or an error that retrying cannot fix).

    Attributes (set by :func:`download_ohlcv`): ``saved``, the candles of this call written to
    the cache before the failure; ``path``, the cache file; ``resume_from``, the open time (ms)
    from which the next call of the same download fetches, or None.
    """

    def __init__(self, message: str, *, saved: int = 0, path: Path | None = None,
                 resume_from: int | None = None) -> None:
        super().__init__(message)
        self.saved, self.path, self.resume_from = saved, path, resume_from


def call_with_retries(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """:func:`framework.exchange.call_with_retries` raising :class:`DownloadError` when it
    gives up (the same arguments)."""
    kwargs.setdefault("error", DownloadError)
    return _call_with_retries(fn, *args, **kwargs)


# --- cache --------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    return Path(os.environ.get("TRADPAL_CACHE_DIR") or DATA_DIR / "cache")


def cache_path(cache_dir: Path, exchange_id: str, symbol: str, timeframe: str) -> Path:
    """``<cache_dir>/<exchange>/<BASE_QUOTE>-<tf>.parquet`` (``/`` and ``:`` become ``_``)."""
    safe = symbol.replace("/", "_").replace(":", "_")
    return Path(cache_dir) / exchange_id / f"{safe}-{timeframe}.parquet"


def _merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in sorted(r for r in ranges if r[1] > r[0]):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _subtract(start: int, end: int, covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Parts of ``[start, end)`` outside the ``covered`` half-open ranges."""
    missing, cursor = [], start
    for a, b in _merge_ranges(covered):
        if b <= cursor or a >= end:
            continue
        if a > cursor:
            missing.append((cursor, a))
        cursor = max(cursor, b)
    if cursor < end:
        missing.append((cursor, end))
    return missing


def read_cache(path: Path) -> tuple[pd.DataFrame, list[tuple[int, int]]]:
    """Candles and covered ranges ``[(start_ms, end_ms), ...]`` of a cache file."""
    if not path.exists():
        return _empty_frame(), []
    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
    frame = table.to_pandas()
    frame.index = pd.DatetimeIndex(frame.index).as_unit("ns").rename("timestamp")
    return frame, [tuple(r) for r in meta.get("coverage", [])]


def _write_cache(path: Path, frame: pd.DataFrame, coverage: list[tuple[int, int]], meta: dict) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=True)
    info = dict(meta, coverage=[list(r) for r in _merge_ranges(coverage)])
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(info).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache


def _check_writable(folder: Path) -> None:
    """Create ``folder`` and write a probe file in it; a DownloadError naming the folder if that
    fails (checked before downloading, so that nothing is fetched only to be lost)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise DownloadError(
            f"cannot write to the cache folder {folder} ({type(e).__name__}: {e}); nothing was "
            "downloaded. Choose a writable folder with cache_dir=... (--cache-dir on the command "
            "line, or TRADPAL_CACHE_DIR), or pass cache=False."
        ) from e


def _empty_frame() -> pd.DataFrame:
    index = pd.DatetimeIndex([], tz="UTC", name="timestamp").as_unit("ns")
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in ("open", "high", "low", "close", "volume")},
                        index=index)


def _to_frame(rows: list[list]) -> pd.DataFrame:
    if not rows:
        return _empty_frame()
    arr = np.asarray(rows, dtype="float64")
    index = pd.DatetimeIndex(pd.to_datetime(arr[:, 0].astype(np.int64), unit="ms", utc=True)).as_unit("ns")
    return pd.DataFrame(arr[:, 1:6], columns=["open", "high", "low", "close", "volume"],
                        index=index.rename("timestamp"))


# --- download ------------------------------------------------------------------------------

def closed_candles_end(now_ms: int, timeframe: str) -> int:
    """Exclusive bound on the open times of the candles that are closed at ``now_ms``: the open
    of the last closed candle plus 1 ms. Candles are aligned as on Binance (and as in
    :func:`framework.data.resample_ohlcv`): to the UTC epoch, weeks to Monday 00:00, months
    (``M``, ``y``) to the 1st of a calendar month. Ending just past the last closed candle,
    rather than at "now", keeps the cache from recording slivers of "no candle yet" between
    two calls inside the same candle."""
    m = re.match(r"^(\d+)([smhdwMy])$", timeframe)
    tf_ms = timeframe_to_ms(timeframe)  # validates the string
    num, unit = int(m.group(1)), m.group(2)
    if unit in ("M", "y"):
        months = num * (12 if unit == "y" else 1)
        now = pd.Timestamp(now_ms, unit="ms", tz="UTC")
        current = ((now.year - 1970) * 12 + now.month - 1) // months * months  # months since 1970
        last = current - months
        opened = pd.Timestamp(year=1970 + last // 12, month=last % 12 + 1, day=1, tz="UTC")
        return to_ms(opened) + 1
    origin = _MONDAY_MS if unit == "w" else 0
    current_open = origin + (now_ms - origin) // tf_ms * tf_ms
    return current_open - tf_ms + 1


_MONDAY_MS = 4 * 86_400_000  # 1970-01-05, the first Monday after the epoch

@dataclass
class DownloadResult:
    """``data``: the candles of the requested range; ``fetched``: candles received from the
    exchange in this call; ``requests``: OHLCV requests made (retries included); ``path``: the
    cache file (None without cache); ``report``: validation findings on ``data``; ``holes``:
    the ranges ``[(start_ms, end_ms), ...]`` of the request for which the exchange has sent no
    candle (before a listing, an outage); the cache does not count them as covered, so the next
    download of the range asks for them again."""

    data: pd.DataFrame
    fetched: int
    requests: int
    path: Path | None
    report: ValidationReport
    holes: list[tuple[int, int]] = field(default_factory=list)


def _page_limit(exchange: ccxt.Exchange) -> int:
    features = getattr(exchange, "features", None) or {}
    for kind in ("spot", "swap", "future"):
        limit = ((features.get(kind) or {}).get("fetchOHLCV") or {}).get("limit")
        if limit:
            return int(limit)
    return 500


def download_ohlcv(
    exchange: ccxt.Exchange,
    symbol: str,
    timeframe: str,
    since: int | str | pd.Timestamp,
    until: int | str | pd.Timestamp | None = None,
    *,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    retry: RetryPolicy = RetryPolicy(),
    page_limit: int | None = None,
    progress: bool | None = None,
) -> DownloadResult:
    """Download closed candles of ``symbol`` in ``[since, until)`` through ccxt, using and
    extending the cache.

    Args:
        exchange: a ccxt exchange (see :func:`create_exchange`).
        symbol: unified symbol, ``"BTC/USDT"``.
        timeframe: ccxt timeframe, ``"1h"``.
        since, until: range of candle open times; ``until`` defaults to now (exclusive).
        cache: read and write the Parquet cache.
        cache_dir: cache root; default ``data/cache`` (or ``TRADPAL_CACHE_DIR``).
        retry: backoff policy for network errors.
        page_limit: candles per request; default the exchange's maximum.
        progress: show a tqdm bar; default only when stderr is a terminal.
    """
    tf_ms = timeframe_to_ms(timeframe)
    since_ms = to_ms(since)
    counter = {"n": 0}

    def call(fn, *args, what, **kwargs):
        def counted(*a, **k):
            counter["n"] += 1
            return fn(*a, **k)
        return call_with_retries(counted, *args, retry=retry, what=what, exchange=exchange, **kwargs)

    path = None
    if cache:
        path = cache_path(Path(cache_dir or default_cache_dir()), exchange.id, symbol, timeframe)
        _check_writable(path.parent)  # before downloading anything that could not be kept
    call(exchange.load_markets, what=f"{exchange.id} load_markets")
    if symbol not in exchange.markets:
        raise DownloadError(f"{exchange.id} has no market {symbol!r}; it has e.g. "
                            f"{', '.join(sorted(exchange.markets)[:10])}")
    # the exchange's clock decides which candle is still open (replays run in the past)
    now_ms = (call(exchange.fetch_time, what=f"{exchange.id} fetch_time")
              if exchange.has.get("fetchTime") else exchange.milliseconds())
    closed_end = closed_candles_end(now_ms, timeframe)
    until_ms = closed_end if until is None else min(to_ms(until), closed_end)
    try:
        cached, coverage = read_cache(path) if path else (_empty_frame(), [])
    except Exception as e:  # a truncated or foreign file: say which, never overwrite it
        raise DownloadError(
            f"the cache file {path} cannot be read ({type(e).__name__}: {e}); move it away or "
            "delete it, then run the download again (or pass cache=False / another cache_dir)"
        ) from e
    missing = _subtract(since_ms, until_ms, coverage) if until_ms > since_ms else []
    limit = page_limit or _page_limit(exchange)
    show = sys.stderr.isatty() if progress is None else progress
    total = sum((b - a + tf_ms - 1) // tf_ms for a, b in missing)
    counter["n"] = 0  # count OHLCV requests only
    pages: list[pd.DataFrame] = []
    done: list[tuple[int, int]] = []  # the parts of ``missing`` fetched so far
    meta = {"exchange": exchange.id, "symbol": symbol, "timeframe": timeframe}
    try:
        desc = f"{symbol} {timeframe}"
        with tqdm(total=total, unit="candle", desc=desc, disable=not show) as bar:
            for start, end in missing:
                cursor = start
                while cursor < end:
                    rows = call(exchange.fetch_ohlcv, symbol, timeframe, since=cursor, limit=limit,
                                what=f"{exchange.id} fetch_ohlcv {symbol} {timeframe} since "
                                     f"{_iso(cursor)}")
                    rows = [r for r in rows if cursor <= r[0] < end]
                    if not rows:
                        break  # nothing more in this range (end of listing, or an outage)
                    pages.append(_to_frame(rows))
                    bar.update(len(rows))
                    done += _received_spans(cursor, end, [int(r[0]) for r in rows], timeframe)
                    # the next page starts one timeframe on; months vary in length, so for them
                    # just past the last candle (the exchange answers with opens >= since)
                    cursor = int(rows[-1][0]) + (1 if timeframe[-1] in "My" else tf_ms)
    except BaseException as e:  # noqa: BLE001 - keep every complete page, then re-raise
        _save_partial_and_raise(e, path, cached, pages, coverage, done, meta, missing)
    fetched = _empty_frame() if not pages else pd.concat(pages)
    merged = _merge_frames(cached, fetched)
    if path is not None and pages:
        try:
            _write_cache(path, merged, coverage + done, meta)
        except OSError as e:  # e.g. a full disk: name the file and the cause
            raise DownloadError(f"the {len(fetched)} candle(s) fetched could not be saved to "
                                f"{path}: {type(e).__name__}: {e}", path=path) from e
    lo, hi = pd.Timestamp(since_ms, unit="ms", tz="UTC"), pd.Timestamp(until_ms, unit="ms", tz="UTC")
    data = merged[(merged.index >= lo) & (merged.index < hi)]
    name = f"{exchange.id} {symbol} {timeframe}"
    # an empty range is said by the counts ("0 candle(s) in range"), not as a validation error
    report = (validate_ohlcv(data, policy="drop", name=name)[1] if len(data)
              else ValidationReport(n_rows=0, name=name))
    holes = _subtract(since_ms, until_ms, coverage + done) if until_ms > since_ms else []
    return DownloadResult(data, len(fetched), counter["n"], path, report, holes)


def _received_spans(cursor: int, end: int, opens: list[int],
                    timeframe: str) -> list[tuple[int, int]]:
    """The parts of ``[cursor, end)`` that one page of candle open times ``opens`` (ascending,
    inside the range, the exchange's answer from ``cursor`` on) shows complete: each run of
    consecutive candles. A slot the exchange skipped (an outage, a lagging server) is left out,
    so the cache does not claim it and the next download asks for it again."""
    if timeframe[-1] in "My":  # months vary in length: the page counts as one run
        return [(cursor, min(opens[-1] + 1, end))]
    tf_ms = timeframe_to_ms(timeframe)
    t = np.asarray(opens, dtype=np.int64)
    breaks = np.flatnonzero(np.diff(t) != tf_ms)
    firsts = np.r_[t[0], t[breaks + 1]]
    lasts = np.r_[t[breaks], t[-1]]
    # before the first candle no slot is missing if the first is the first slot at or after
    # ``cursor`` (less than a timeframe on); likewise after a run up to the next slot
    firsts[0] = cursor if t[0] - cursor < tf_ms else t[0]
    return [(int(a), int(min(b + tf_ms, end))) for a, b in zip(firsts, lasts)]


def _iso(ms_: int) -> str:
    return pd.Timestamp(ms_, unit="ms", tz="UTC").isoformat()


def _merge_frames(cached: pd.DataFrame, fetched: pd.DataFrame) -> pd.DataFrame:
    merged = pd.concat([cached, fetched]) if len(cached) else fetched
    return merged[~merged.index.duplicated(keep="last")].sort_index()


def _save_partial_and_raise(
    error: BaseException,
    path: Path | None,
    cached: pd.DataFrame,
    pages: list[pd.DataFrame],
    coverage: list[tuple[int, int]],
    done: list[tuple[int, int]],
    meta: dict,
    missing: list[tuple[int, int]],
) -> None:
    """A download stopped midway: write the pages received (closed candles only, as always)
    with coverage of just the ranges fetched, then raise ``error`` saying what was kept.

    A :class:`DownloadError` is raised again with the saved count and how to resume in its
    message; any other exception (a ccxt error retrying cannot fix, Ctrl-C) is re-raised as
    it is, with the same words added as a note."""
    saved = sum(len(p) for p in pages)
    resume = (_subtract(missing[0][0], missing[-1][1], coverage + done) if missing else [])
    resume_from = resume[0][0] if resume else None
    note, write_error = "", None
    if path is None:
        note = (f"{saved} candle(s) had been fetched but the cache is off, so nothing was kept."
                if saved else "")
    elif saved:
        try:
            _write_cache(path, _merge_frames(cached, pd.concat(pages)), coverage + done, meta)
        except Exception as w:  # noqa: BLE001 - e.g. a full disk: say so, keep the original error
            write_error = w
            note = (f"The {saved} candle(s) fetched could not be saved to {path}: "
                    f"{type(w).__name__}: {w}.")
        else:
            last = pages[-1].index[-1].isoformat()
            note = (f"Saved the {saved} candle(s) fetched before the failure (up to {last}) to "
                    f"{path}; running the same download (the same command) again resumes from "
                    f"{_iso(resume_from) if resume_from is not None else 'there'}.")
    else:
        note = "No new candle had been fetched, so nothing was saved; the cache is unchanged."
    if isinstance(error, DownloadError):
        message = f"{error} {note}".rstrip()
        raise DownloadError(message, saved=0 if write_error or path is None else saved,
                            path=path, resume_from=resume_from) from (error.__cause__ or error)
    if note:
        error.add_note(note)
    raise error


def download_many(
    exchange: ccxt.Exchange,
    symbols: Sequence[str],
    timeframe: str,
    since: int | str | pd.Timestamp,
    until: int | str | pd.Timestamp | None = None,
    *,
    how: str = "inner",
    **kwargs: Any,
) -> pd.DataFrame:
    """Download several symbols and align them on one index (see :func:`align_ohlcv`);
    ``kwargs`` go to :func:`download_ohlcv`."""
    frames = {s: download_ohlcv(exchange, s, timeframe, since, until, **kwargs).data for s in symbols}
    return align_ohlcv(frames, how=how)
