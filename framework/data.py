"""OHLCV data access: load CSV/Parquet or a bundled dataset, validate and repair, resample, align.

Conventions used throughout:

- A frame has a UTC ``DatetimeIndex`` named ``timestamp`` (nanosecond unit) holding each candle's
  *open* time, and float64 columns ``open, high, low, close`` plus ``volume`` when the source has it.
- Timeframes are ccxt strings (``"1m"``, ``"4h"``, ``"1d"``, ``"1w"``, ``"1M"``); durations in
  integer milliseconds are named ``*_ms``.

Validation rules (see :func:`validate_ohlcv`):

=====================  ========  ==========================================================
issue                  severity  meaning
=====================  ========  ==========================================================
``missing_timestamp``  error     the timestamp is empty / NaT
``no_rows``            error     the data has no rows (a file with only a header); raised
                                 under every policy
``nan``                error     a NaN in open/high/low/close/volume
``infinite``           error     +inf or -inf in open/high/low/close/volume
``non_positive``       error     a price <= 0
``negative_volume``    error     volume < 0
``ohlc_inconsistent``  error     high below open/close/low, or low above open/close
``duplicate``          error     a timestamp seen in an earlier row
``out_of_order``       error     a timestamp earlier than one in an earlier row
``misaligned``         error     24/7 series: a timestamp off the grid of the typical spacing
                                 (e.g. an hourly bar at 02:30 among bars on the hour)
``gap``                error     24/7 series: a candle missing (spacing > the typical spacing)
``gap``                warning   session series: data missing for more than 5 days
``spike``              warning   an outlier bar (robust z-score of returns or wicks above
                                 ``spike_threshold``); an error when ``strict=True``
=====================  ========  ==========================================================

The calendar decides how gaps are judged: a series is ``"24/7"`` when at least 5% of its bars
fall on Saturdays (crypto), otherwise ``"sessions"`` (stocks, forex), where nights, weekends and
holidays are normal closures. Pass ``calendar=`` to override the guess.

Speed: clean data of ``COMPILED_MIN_ROWS`` rows or more, evenly spaced and in order, is
certified by one compiled pass (``framework.data_nb.clean_scan_nb``, about 6 ms for a million
bars) that reads the frame's arrays in place; only when that pass finds something, or cannot rule
it out, do the detailed checks below run and write the report. Both give the same result
(``tests/test_data.py``). Smaller frames go straight to the detailed checks, which take a few
milliseconds there, less than loading the compiled pass from the kernel cache and far less than
its first compile (about 8 s, most of it numba's sorts): a fresh install's first backtest on the
bundled data does not pay it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from framework import data_nb

log = logging.getLogger(__name__)

#: frames from this many rows on are first checked by the compiled pass (see the module docstring)
COMPILED_MIN_ROWS = 100_000

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV_COLUMNS = (*PRICE_COLUMNS, "volume")
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
POLICIES = ("raise", "drop", "fill")
_TIMESTAMP_NAMES = ("timestamp", "date", "datetime", "time")
_SESSION_GAP_WARN = pd.Timedelta(days=5)
_MAX_ROWS_IN_MESSAGE = 5

Policy = Literal["raise", "drop", "fill"]
Calendar = Literal["auto", "24/7", "sessions"]


_CACHE_NAME = re.compile(r"^([A-Za-z0-9]+)_([A-Za-z0-9]+)(?:_([A-Za-z0-9]+))?-[0-9]+[a-zA-Z]+$")


def symbol_from_name(name: str) -> str | None:
    """The unified symbol a dataset name encodes as ``framework.download.cache_path`` writes it: ``BTC_USDT-1h``
    -> ``BTC/USDT``, ``BTC_USDT_USDT-1h`` -> ``BTC/USDT:USDT``; None for other names."""
    m = _CACHE_NAME.match(name)
    if m is None:
        return None
    return f"{m[1]}/{m[2]}" + (f":{m[3]}" if m[3] else "")


# --- timeframes ---------------------------------------------------------------------------------

_TF_RE = re.compile(r"^(\d+)([smhdwMy])$")
_TF_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
          "M": 2_592_000_000, "y": 31_536_000_000}  # M and y as ccxt counts them (30 d, 365 d)


def timeframe_to_ms(timeframe: str) -> int:
    """Length of a ccxt timeframe string in milliseconds (``"1h"`` -> 3_600_000).

    Months and years count 30 and 365 days, as in ccxt.
    """
    m = _TF_RE.match(timeframe)
    if not m or int(m.group(1)) == 0:
        raise ValueError(
            f"unknown timeframe {timeframe!r}: expected a number and a unit, "
            "e.g. '1m', '15m', '1h', '4h', '1d', '1w', '1M'"
        )
    return int(m.group(1)) * _TF_MS[m.group(2)]


def to_ms(value: int | str | pd.Timestamp) -> int:
    """Epoch milliseconds from ms, an ISO 8601 string, a datetime or a Timestamp (naive = UTC)."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
    return int(ts.as_unit("ns").value // 1_000_000)


def _format_spacing(td: pd.Timedelta | None) -> str:
    if td is None:
        return "unknown"
    ms = int(td / pd.Timedelta(milliseconds=1))
    for unit in ("w", "d", "h", "m", "s"):
        if ms % _TF_MS[unit] == 0:
            return f"{ms // _TF_MS[unit]}{unit}"
    return str(td)


# --- report ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Issue:
    """One finding: ``row`` is the 0-based position in the data as given (None for whole-frame
    issues); ``timestamp`` the row's time (for a gap: the last candle before it)."""

    kind: str
    severity: Literal["error", "warning"]
    row: int | None
    timestamp: pd.Timestamp | None
    detail: str

    def describe(self) -> str:
        where = [] if self.row is None else [f"row {self.row}"]
        if self.timestamp is not None and not pd.isna(self.timestamp):
            where.append(self.timestamp.isoformat())
        loc = f" ({', '.join(where)})" if where else ""
        return f"{self.kind}{loc}: {self.detail}"


@dataclass
class ValidationReport:
    """What :func:`validate_ohlcv` found and did. ``ok`` is True when there is no error."""

    n_rows: int
    spacing: pd.Timedelta | None = None
    calendar: str = "unknown"
    policy: str = "raise"
    issues: list[Issue] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    name: str = "data"

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def rows(self, kind: str) -> list[int]:
        """Row positions of the issues of one kind (e.g. ``report.rows("duplicate")``)."""
        return [i.row for i in self.issues if i.kind == kind and i.row is not None]

    def to_frame(self) -> pd.DataFrame:
        """All issues as a table (columns kind, severity, row, timestamp, detail)."""
        return pd.DataFrame(
            [(i.kind, i.severity, i.row, i.timestamp, i.detail) for i in self.issues],
            columns=["kind", "severity", "row", "timestamp", "detail"],
        )

    def summary(self, max_rows: int = _MAX_ROWS_IN_MESSAGE) -> str:
        """Human-readable report: one line per kind with its first ``max_rows`` offending rows."""
        head = (
            f"{self.name}: {self.n_rows} rows, spacing {_format_spacing(self.spacing)}, "
            f"calendar {self.calendar}: {len(self.errors)} error(s), "
            f"{len(self.warnings)} warning(s)"
        )
        lines = [head]
        by_kind: dict[tuple[str, str], list[Issue]] = {}
        for issue in self.issues:
            by_kind.setdefault((issue.severity, issue.kind), []).append(issue)
        for (severity, kind), items in sorted(by_kind.items()):
            lines.append(f"  {severity:<7} {kind:<18} {len(items)}")
            for issue in items[:max_rows]:
                lines.append(f"      {issue.describe()}")
            if len(items) > max_rows:
                lines.append(f"      ... and {len(items) - max_rows} more")
        lines += [f"  action: {a}" for a in self.actions]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class DataValidationError(ValueError):
    """Raised when OHLCV data fails validation; ``.report`` holds every finding.

    ``.findings`` is the message without advice; ``.repairable`` says whether
    ``policy="drop"``/``"fill"`` can load the data (row problems, not a structural one such as
    a missing column). The message advises in Python terms; the command line words its own
    advice from these two.
    """

    def __init__(self, report: ValidationReport, message: str | None = None):
        self.report = report
        self.repairable = message is None
        if message is None:
            first = "; ".join(i.describe() for i in report.errors[:_MAX_ROWS_IN_MESSAGE])
            more = len(report.errors) - _MAX_ROWS_IN_MESSAGE
            self.findings = (
                f"{report.name} failed validation with {len(report.errors)} error(s): {first}"
                + (f"; ... and {more} more" if more > 0 else "")
            )
            message = (
                f"{self.findings}. Fix the source, or pass policy='drop' to drop the offending "
                "rows (and sort out-of-order ones) or policy='fill' to repair them and fill "
                "missing candles with flat ones. The full list is in the exception's .report."
            )
        else:
            self.findings = message
        super().__init__(message)


# --- loading -------------------------------------------------------------------------------------

#: warnings found in bundled datasets that were reviewed and are real market moves (see
#: data/README.md), by dataset and (kind, UTC time): loading that bundled file does not log them;
#: any other finding in it still is
REVIEWED_WARNINGS: dict[str, frozenset[tuple[str, str]]] = {
    "BTC_USDT-1h": frozenset({("spike", "2020-03-13T01:00:00+00:00"), ("spike", "2020-03-15T21:00:00+00:00"),
                              ("spike", "2021-05-19T13:00:00+00:00")}),
}


def bundled_datasets() -> list[str]:
    """Names of the sample datasets shipped in the repository's ``data/`` folder."""
    if not DATA_DIR.is_dir():
        return []
    return sorted(
        p.stem for p in DATA_DIR.iterdir() if p.is_file() and p.suffix in (".csv", ".parquet")
    )


def resolve_source(source: str | Path) -> Path:
    """Turn a file path or a bundled dataset name (``"BTC_USDT-1d"``) into an existing path."""
    path = Path(source)
    if path.is_file():
        return path
    if isinstance(source, str) and not path.suffix and path.name == source:
        for suffix in (".csv", ".parquet"):
            candidate = DATA_DIR / f"{source}{suffix}"
            if candidate.is_file():
                return candidate
    names = ", ".join(bundled_datasets()) or "(none found)"
    raise FileNotFoundError(
        f"no OHLCV file or bundled dataset named {str(source)!r}. Give a path to a .csv or "
        f".parquet file, or one of the bundled datasets: {names}"
    )


def read_ohlcv_file(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file into the standard shape, without validating its rows.

    Column names are matched case-insensitively; the time column may be called timestamp, date,
    datetime or time (or be the Parquet index). Times are ISO 8601 strings (naive ones are taken
    as UTC) or epoch numbers in seconds, milliseconds, microseconds or nanoseconds, the unit
    read from their magnitude (a number below 1e8, or a column mixing units, raises
    ``ValueError``). A value that is not a number raises ``ValueError`` naming the column, the
    row and the file line.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        line_offset = 2  # header line + 1-based lines
    elif suffix in (".parquet", ".pq"):
        raw = pd.read_parquet(path)
        if isinstance(raw.index, pd.DatetimeIndex):
            raw = raw.reset_index(names=raw.index.name or "timestamp")
        line_offset = None
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")
    return _standardise(raw, name=str(path), line_offset=line_offset)


def _standardise(raw: pd.DataFrame, *, name: str, line_offset: int | None) -> pd.DataFrame:
    """Lower-case columns, parse the time column into a UTC index, and make prices float64."""
    lowered = [str(c).strip().lower() for c in raw.columns]
    dupes = sorted({c for c in lowered if lowered.count(c) > 1})
    if dupes:
        raise ValueError(f"{name}: columns {dupes} appear more than once (names are case-insensitive)")
    raw = raw.set_axis(lowered, axis=1)

    def where(i: int) -> str:
        return f"row {i}" + (f" (line {i + line_offset})" if line_offset is not None else "")

    if isinstance(raw.index, pd.DatetimeIndex):
        index = raw.index
    else:
        tcol = next((c for c in _TIMESTAMP_NAMES if c in raw.columns), None)
        if tcol is None:
            raise DataValidationError(
                ValidationReport(n_rows=len(raw), name=name),
                f"{name}: no time column; expected one named {' / '.join(_TIMESTAMP_NAMES)} "
                f"(or a DatetimeIndex); found columns {list(raw.columns)}",
            )
        index = _parse_times(raw[tcol], name=name, where=where)
        raw = raw.drop(columns=[tcol])
    missing = [c for c in PRICE_COLUMNS if c not in raw.columns]
    if missing:
        report = ValidationReport(n_rows=len(raw), name=name)
        report.issues.append(Issue("missing_columns", "error", None, None, f"missing {missing}"))
        raise DataValidationError(
            report,
            f"{name}: missing column(s) {missing}; OHLCV data needs open, high, low, close "
            f"(volume optional); found {list(raw.columns)}",
        )
    cols = [c for c in OHLCV_COLUMNS if c in raw.columns]
    out = {}
    for col in cols:
        values = raw[col]
        if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
            out[col] = values.to_numpy(dtype="float64", na_value=np.nan)
            continue
        parsed = pd.to_numeric(values, errors="coerce")
        bad = np.flatnonzero(parsed.isna().to_numpy() & values.notna().to_numpy())
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{name}: column {col!r} {where(i)} holds {values.iloc[i]!r}, which is not a "
                f"number ({bad.size} such value(s)); fix the file — nothing is coerced silently"
            )
        out[col] = parsed.to_numpy(dtype="float64", na_value=np.nan)
    index = _to_utc_index(index)
    return pd.DataFrame(out, index=index)


def _parse_times(col: pd.Series, *, name: str, where) -> pd.DatetimeIndex:
    if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(col.dtype):
        return pd.DatetimeIndex(col)
    if pd.api.types.is_numeric_dtype(col.dtype):
        return _parse_epoch(col, name=name, where=where)
    as_str = col.astype("string")
    digits = as_str.str.fullmatch(r"\d{9,19}").dropna()
    if len(digits) and digits.all():  # epoch numbers written as text (missing cells allowed)
        return _parse_epoch(pd.to_numeric(as_str), name=name, where=where)
    parsed = pd.to_datetime(as_str, utc=True, errors="coerce", format="ISO8601")
    bad = np.flatnonzero(parsed.isna().to_numpy() & as_str.notna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{name}: time {as_str.iloc[i]!r} at {where(i)} is not an ISO 8601 date/time "
            f"({bad.size} such value(s)); expected e.g. 2024-01-31T00:00:00Z"
        )
    return pd.DatetimeIndex(parsed)


# epoch units told apart by magnitude: each covers March 1973 to the year 5138
_EPOCH_UNITS = ("s", "ms", "us", "ns")
_EPOCH_UNIT_NAMES = ("seconds", "milliseconds", "microseconds", "nanoseconds")
_EPOCH_BOUNDS = np.array([1e8, 1e11, 1e14, 1e17])


def _parse_epoch(col: pd.Series, *, name: str, where) -> pd.DatetimeIndex:
    """Epoch numbers to times, the unit (seconds, ms, µs or ns) read from their magnitude.

    The four units' plausible ranges (1973 to 5138) do not overlap, so the magnitude decides;
    a number below 1e8 (before March 1973 even in seconds) or a column mixing units is refused
    rather than guessed."""
    values = col.to_numpy(dtype="float64", na_value=np.nan)
    present = np.flatnonzero(~np.isnan(values))
    if present.size == 0:
        return pd.DatetimeIndex(pd.to_datetime(col, unit="ms", utc=True))  # all missing: NaT
    unit_of = np.searchsorted(_EPOCH_BOUNDS, np.abs(values[present]), side="right") - 1
    unit_of[values[present] < 0] = -1
    if (unit_of < 0).any():
        i = int(present[np.flatnonzero(unit_of < 0)[0]])
        raise ValueError(
            f"{name}: time {col.iloc[i]} at {where(i)} is not an epoch time: epoch seconds, "
            "milliseconds, microseconds and nanoseconds since 1970 are all >= 1e8 from March "
            "1973 on. Expected epoch times or ISO 8601 date/times, e.g. 2024-01-31T00:00:00Z"
        )
    first = int(unit_of[0])
    other = np.flatnonzero(unit_of != first)
    if other.size:
        i, j = int(present[0]), int(present[other[0]])
        raise ValueError(
            f"{name}: the time column mixes epoch units: {col.iloc[i]} at {where(i)} reads as "
            f"{_EPOCH_UNIT_NAMES[first]} but {col.iloc[j]} at {where(j)} as "
            f"{_EPOCH_UNIT_NAMES[unit_of[other[0]]]}; write every time in one unit"
        )
    return pd.DatetimeIndex(pd.to_datetime(col, unit=_EPOCH_UNITS[first], utc=True))


def _to_utc_index(index: pd.Index) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(index)
    # naive times are read as UTC (documented); aware ones are converted, which is lossless
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    return index.as_unit("ns").rename("timestamp")


def load_ohlcv(
    source: str | Path | pd.DataFrame,
    *,
    policy: Policy = "raise",
    **validate_kwargs,
) -> pd.DataFrame:
    """Load and validate OHLCV data.

    Args:
        source: a path to a ``.csv`` / ``.parquet`` file, the name of a bundled dataset (a file
            stem in the repository's ``data/`` folder, e.g. ``"BTC_USDT-1d"``), or a DataFrame.
        policy: what to do with errors, see :func:`validate_ohlcv`.
        **validate_kwargs: passed to :func:`validate_ohlcv` (``calendar``, ``strict``, ...).

    Returns:
        The validated (and, under ``drop``/``fill``, repaired) frame. Warnings are logged,
        except those of a bundled dataset listed in ``REVIEWED_WARNINGS``.

    Raises:
        FileNotFoundError: unknown path or name (the message lists the bundled datasets).
        DataValidationError: the data has errors and ``policy="raise"``.
    """
    if isinstance(source, pd.DataFrame):
        frame, report = validate_ohlcv(source, policy=policy, **validate_kwargs)
    else:
        path = resolve_source(source)
        validate_kwargs.setdefault("name", str(path))
        frame, report = validate_ohlcv(read_ohlcv_file(path), policy=policy, **validate_kwargs)
    reviewed = frozenset()
    if not isinstance(source, pd.DataFrame) and path.resolve().parent == DATA_DIR.resolve():
        reviewed = REVIEWED_WARNINGS.get(path.stem, frozenset())
    if any((i.kind, None if i.timestamp is None else i.timestamp.isoformat()) not in reviewed
           for i in report.warnings):
        log.warning("%s", report.summary())
    return frame


# --- validation ------------------------------------------------------------------------------------

def infer_spacing(index: pd.DatetimeIndex) -> pd.Timedelta | None:
    """The most common positive distance between consecutive timestamps (None if < 2 rows)."""
    if len(index) < 2:
        return None
    diffs = np.diff(index.asi8)
    diffs = diffs[diffs > 0]
    if diffs.size == 0:
        return None
    values, counts = np.unique(diffs, return_counts=True)
    return pd.Timedelta(int(values[np.argmax(counts)]), unit=index.unit)


def infer_calendar(index: pd.DatetimeIndex) -> str:
    """``"24/7"`` when at least 5% of the bars fall on a Saturday, ``"sessions"`` when the data
    spans a week or more with fewer; shorter data cannot show a weekend and counts as 24/7."""
    if len(index) < 2 or index[-1] - index[0] < pd.Timedelta(days=7):
        return "24/7"
    return "24/7" if float(np.mean(index.dayofweek == 5)) >= 0.05 else "sessions"


def ohlc_inconsistent(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> np.ndarray:
    """True where high/low do not contain open/close (beyond float noise of 1e-9 x |high|, which
    exported files carry and which is not an inconsistency)."""
    tol = 1e-9 * np.abs(h)
    return (h < np.maximum(o, c) - tol) | (lo > np.minimum(o, c) + tol) | (h < lo - tol)


def check_bar(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> str | None:
    """Why one closed bar (one value per instrument) is unusable, or None if it is fine.

    The row rules of ``validate_ohlcv`` for a driver that receives bars one at a time (the live
    runner's core, ``framework.runner.BarStepper``): NaN, infinite or non-positive prices,
    high/low not containing open/close, negative or infinite volume. A NaN volume means "no
    volume" and is accepted.
    """
    prices = np.stack([o, h, lo, c])
    with np.errstate(invalid="ignore"):
        if np.isnan(prices).any():
            return "a price is NaN: " + _bar_text(o, h, lo, c)
        if np.isinf(prices).any():
            return "a price is infinite: " + _bar_text(o, h, lo, c)
        if (prices <= 0).any():
            return "a price is <= 0: " + _bar_text(o, h, lo, c)
        if ohlc_inconsistent(o, h, lo, c).any():
            return "high/low do not contain open/close: " + _bar_text(o, h, lo, c)
        if np.isinf(v).any():
            return f"infinite volume {v.tolist()}"
        if (v < 0).any():
            return f"negative volume {v.tolist()}"
    return None


def _bar_text(o, h, lo, c) -> str:
    return f"open {o.tolist()}, high {h.tolist()}, low {lo.tolist()}, close {c.tolist()}"


def validate_ohlcv(
    df: pd.DataFrame,
    *,
    policy: Policy = "raise",
    calendar: Calendar = "auto",
    spike_threshold: float = 25.0,
    strict: bool = False,
    name: str = "data",
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check OHLCV data and, depending on ``policy``, raise, drop or repair what is wrong.

    The rules are listed in the module docstring. Row numbers in the report are 0-based
    positions in ``df`` as given.

    Args:
        df: a frame with a DatetimeIndex (or a timestamp/date column) and open, high, low,
            close (and optionally volume) columns, any case.
        policy: ``"raise"`` (default) raises :class:`DataValidationError` if there is any
            error; ``"drop"`` drops the offending rows, sorts out-of-order ones and keeps the
            first of duplicated timestamps (gaps stay); ``"fill"`` does the same but replaces
            bad rows, and in a 24/7 series missing candles, by flat candles at the previous
            close with zero volume.
        calendar: ``"auto"`` guesses from the data; ``"24/7"`` makes every gap an error;
            ``"sessions"`` tolerates closures (only gaps > 5 days are reported, as warnings).
        spike_threshold: outlier threshold in robust standard deviations (median absolute
            deviation x 1.4826) of log close-to-close returns and of wick lengths.
        strict: treat warnings (spikes, long session gaps) as errors.
        name: what to call the data in messages (a file name, a symbol).

    Returns:
        ``(frame, report)``: the frame in the standard shape (see module docstring) and the
        :class:`ValidationReport`.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; use one of {POLICIES}")
    if calendar not in ("auto", "24/7", "sessions"):
        raise ValueError(f"unknown calendar {calendar!r}; use 'auto', '24/7' or 'sessions'")
    frame = _standard_view(df)
    if frame is None:
        frame = _standardise(df, name=name, line_offset=None)
    fast = None
    if len(frame) >= COMPILED_MIN_ROWS:
        fast = _fast_validate(frame, calendar=calendar, spike_threshold=spike_threshold,
                              policy=policy, name=name)
    if fast is not None:
        return frame, fast
    n = len(frame)
    report = ValidationReport(n_rows=n, policy=policy, name=name)
    if n == 0:  # under every policy: there is nothing to repair
        report.issues.append(Issue("no_rows", "error", None, None, "the data has no rows"))
        raise DataValidationError(
            report, f"{name}: no rows; the data holds no candle (a file with only a header?)")
    idx = frame.index
    ts = idx.asi8
    warn_or_error = "error" if strict else "warning"

    def add(kind: str, rows: np.ndarray, detail, severity: str = "error") -> None:
        for r in rows:
            r = int(r)
            report.issues.append(Issue(kind, severity, r, idx[r], detail(r) if callable(detail) else detail))

    bad = np.zeros(n, dtype=bool)  # rows whose values are unusable
    nat = np.asarray(idx.isna())
    add("missing_timestamp", np.flatnonzero(nat), "no timestamp")
    values = frame.to_numpy()
    nan_rows = np.isnan(values).any(axis=1) & ~nat
    add("nan", np.flatnonzero(nan_rows),
        lambda r: "NaN in " + ", ".join(c for c in frame.columns if np.isnan(frame[c].iloc[r])))
    inf_rows = np.isinf(values).any(axis=1) & ~nat
    add("infinite", np.flatnonzero(inf_rows),
        lambda r: "infinite " + ", ".join(f"{c}={frame[c].iloc[r]}" for c in frame.columns
                                         if np.isinf(frame[c].iloc[r])))
    o, h, lo, c = (frame[k].to_numpy() for k in PRICE_COLUMNS)
    with np.errstate(invalid="ignore"):
        # an infinite row is reported as such, not again as non-positive or inconsistent
        nonpos = (values[:, :4] <= 0).any(axis=1) & ~inf_rows
        incons = ohlc_inconsistent(o, h, lo, c) & ~nonpos & ~inf_rows
        neg_vol = ((frame["volume"].to_numpy() < 0) & ~inf_rows if "volume" in frame
                   else np.zeros(n, bool))
    add("non_positive", np.flatnonzero(nonpos),
        lambda r: "price <= 0: " + _row_text(frame, r))
    add("ohlc_inconsistent", np.flatnonzero(incons),
        lambda r: "high/low do not contain open/close: " + _row_text(frame, r))
    add("negative_volume", np.flatnonzero(neg_vol), lambda r: f"volume {frame['volume'].iloc[r]}")
    bad |= nat | nan_rows | inf_rows | nonpos | incons | neg_vol

    # order and duplicates, judged on rows that have a timestamp
    ts_valid = np.where(nat, np.iinfo(np.int64).min, ts)
    running_max = np.maximum.accumulate(ts_valid) if n else ts_valid
    prev_max = np.concatenate(([np.iinfo(np.int64).min], running_max[:-1])) if n else running_max
    out_of_order = (ts_valid < prev_max) & ~nat
    dup = np.asarray(idx.duplicated(keep="first")) & ~nat
    if dup.any():  # the sort behind np.unique is only worth it when there is something to name
        _, first_idx, inverse = np.unique(ts, return_index=True, return_inverse=True)
        add("duplicate", np.flatnonzero(dup), lambda r: f"same timestamp as row {first_idx[inverse[r]]}")
    add("out_of_order", np.flatnonzero(out_of_order & ~dup),
        lambda r: "earlier than a previous row; the data is not sorted by time")

    # the clean subset: sorted, unique, valid rows; gaps and spikes are judged on it
    keep = ~bad & ~dup
    clean_pos = _time_order(np.flatnonzero(keep), ts)
    clean = frame if len(clean_pos) == n and (n == 0 or clean_pos[-1] == n - 1) else frame.iloc[clean_pos]
    # gaps: judged on every row with a timestamp, so a bad row is not also counted as a gap
    times_pos = _time_order(np.flatnonzero(~nat & ~dup), ts)
    times = idx[times_pos]
    spacing = infer_spacing(times)
    cal = infer_calendar(times) if calendar == "auto" else calendar
    report.spacing, report.calendar = spacing, cal
    if spacing is not None and spacing < pd.Timedelta(days=28):  # months are irregular
        if cal == "24/7":
            # a row off the grid of the typical spacing is misaligned, not a gap of 0 candles
            off = _off_grid(times.asi8, spacing.value)
            if off.any():
                anchor = times.asi8[np.flatnonzero(~off)[0]]
                add("misaligned", times_pos[off], lambda r: (
                    f"off the {_format_spacing(spacing)} grid of the other rows by "
                    f"{_format_spacing(pd.Timedelta(int((ts[r] - anchor) % spacing.value)))}"))
                bad[times_pos[off]] = True
                keep_ = ~off
                times_pos, times = times_pos[keep_], times[keep_]
                clean_pos = clean_pos[~bad[clean_pos]]
                clean = frame.iloc[clean_pos]
            diffs = np.diff(times.asi8)
            for g in np.flatnonzero(diffs > spacing.value):
                missing = diffs[g] // spacing.value - 1
                report.issues.append(Issue(
                    "gap", "error", int(times_pos[g]), times[g],
                    f"{missing} candle(s) missing before {times[g + 1].isoformat()} "
                    "(for a market that closes at times, use the 'sessions' calendar)"))
        else:
            diffs = np.diff(times.asi8)
            for g in np.flatnonzero(diffs > max(spacing, _SESSION_GAP_WARN).value):
                report.issues.append(Issue(
                    "gap", warn_or_error, int(times_pos[g]), times[g],
                    f"no data for {pd.Timedelta(int(diffs[g]), unit=times.unit)} "
                    f"until {times[g + 1].isoformat()}"))
    spike_local = _spikes(clean, spike_threshold)
    for j, why in spike_local:
        report.issues.append(Issue("spike", warn_or_error, int(clean_pos[j]), clean.index[j], why))

    if report.ok:
        return _repair(frame, report, clean_pos, spike_local, spacing, cal, policy="drop",
                       quiet=True), report
    if policy == "raise":
        raise DataValidationError(report)
    return _repair(frame, report, clean_pos, spike_local, spacing, cal, policy=policy), report


def _standard_view(df: pd.DataFrame) -> pd.DataFrame | None:
    """``df`` in the standard shape without copying its data, when it already has a
    DatetimeIndex and float64 OHLC(V) columns (any case); None otherwise (then ``_standardise``
    does the general conversion). The result is what ``_standardise`` would build, as a lazy
    copy: pandas' copy-on-write keeps the caller's frame and the result independent."""
    if not isinstance(df.index, pd.DatetimeIndex):
        return None
    lowered = [str(c).strip().lower() for c in df.columns]
    if len(set(lowered)) != len(lowered) or not all(c in lowered for c in PRICE_COLUMNS):
        return None  # _standardise raises the detailed error
    cols = [c for c in OHLCV_COLUMNS if c in lowered]
    positions = [lowered.index(c) for c in cols]
    if any(df.dtypes.iloc[p] != np.float64 for p in positions):
        return None
    out = df.iloc[:, positions].set_axis(cols, axis=1)
    return out.set_axis(_to_utc_index(df.index), axis=0)


def _fast_validate(frame: pd.DataFrame, *, calendar: str, spike_threshold: float, policy: str,
                   name: str) -> ValidationReport | None:
    """The report of clean data, from one compiled pass (``data_nb.clean_scan_nb``) instead of
    the detailed checks; None when the pass finds anything (or cannot rule it out), and then the
    detailed checks run and write the report."""
    n = len(frame)
    if n < 2:
        return None
    k = float(spike_threshold)
    check_spikes = n >= 20 and bool(np.isfinite(k))
    o, h, lo, c = (frame[col].to_numpy() for col in PRICE_COLUMNS)
    has_volume = "volume" in frame
    v = frame["volume"].to_numpy() if has_volume else c
    ts = frame.index.asi8
    status, spacing_ns = data_nb.clean_scan_nb(ts, o, h, lo, c, v, has_volume, check_spikes,
                                               k if check_spikes else 0.0)
    if status != data_nb.CLEAN:
        return None
    if calendar != "auto":
        cal = calendar
    elif ts[-1] - ts[0] < pd.Timedelta(days=7).value:
        cal = "24/7"  # as infer_calendar: too short to show a weekend
    else:
        saturdays = data_nb.saturday_count_nb(int(ts[0]), int(spacing_ns), n)
        cal = "24/7" if saturdays / n >= 0.05 else "sessions"
    return ValidationReport(n_rows=n, spacing=pd.Timedelta(int(spacing_ns), unit="ns"),
                            calendar=cal, policy=policy, name=name)


def _off_grid(t: np.ndarray, spacing_ns: int) -> np.ndarray:
    """True for the times whose offset modulo ``spacing_ns`` differs from the most common
    offset (the grid the series is on)."""
    phase = t % spacing_ns
    if (phase == phase[0]).all():
        return np.zeros(len(t), dtype=bool)
    values, counts = np.unique(phase, return_counts=True)
    return phase != values[np.argmax(counts)]


def _time_order(pos: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """``pos`` sorted by timestamp (stable); usually already sorted, which is checked in O(n)."""
    t = ts[pos]
    if len(t) < 2 or (t[1:] >= t[:-1]).all():
        return pos
    return pos[np.argsort(t, kind="stable")]


def _row_text(frame: pd.DataFrame, r: int) -> str:
    return ", ".join(f"{c}={frame[c].iloc[r]:g}" for c in PRICE_COLUMNS)


def _spikes(clean: pd.DataFrame, k: float) -> list[tuple[int, str]]:
    """Outlier bars in a clean, sorted frame: a close that jumps and comes straight back, or a
    wick far longer than usual. Scales are robust (MAD), so the outliers do not hide themselves."""
    if len(clean) < 20 or not np.isfinite(k):
        return []
    close = clean["close"].to_numpy()
    body_hi = np.maximum(clean["open"].to_numpy(), close)
    body_lo = np.minimum(clean["open"].to_numpy(), close)
    found: dict[int, str] = {}

    def robust_scale(x: np.ndarray) -> float:
        return 1.4826 * float(np.median(np.abs(x - np.median(x))))

    r = np.diff(np.log(close))
    s = robust_scale(r)
    if s > 0:
        z = (r - np.median(r)) / s
        # bar j+1 spikes when the return into it and out of it are both extreme and opposite
        hit = np.flatnonzero((np.abs(z[:-1]) > k) & (np.abs(z[1:]) > k) & (np.sign(z[:-1]) != np.sign(z[1:])))
        for j in hit:
            found[int(j + 1)] = (f"close jumps {_pct(np.expm1(r[j]))} then "
                                 f"{_pct(np.expm1(r[j + 1]))} (|z| > {k:g})")
        # a wick that sticks out beyond both neighbours' wicks by more than k return-scales
        hi, lo = clean["high"].to_numpy(), clean["low"].to_numpy()
        up = np.log(hi[1:-1] / np.maximum.reduce([hi[:-2], hi[2:], body_hi[1:-1]]))
        down = np.log(np.minimum.reduce([lo[:-2], lo[2:], body_lo[1:-1]]) / lo[1:-1])
        for label, excess in (("high", up), ("low", down)):
            for j in np.flatnonzero(excess > k * s):
                size = _pct(np.expm1(excess[j]))[1:]  # unsigned: the label says the side
                found.setdefault(int(j + 1), f"{label} sticks out {size} beyond "
                                             f"its neighbours (> {k:g} robust sd)")
    return sorted(found.items())


def _pct(x: float) -> str:
    """A simple percentage change, ``0.052`` -> ``+5.2%``; huge ones in scientific notation."""
    return f"{x:+.1%}" if abs(x) < 1e4 else f"{100 * x:+.3g}%"


def _repair(frame, report, clean_pos, spikes, spacing, cal, *, policy, quiet=False):
    """Build the output frame from the clean rows; under ``fill`` insert flat candles."""
    drop_spikes = any(i.kind == "spike" and i.severity == "error" for i in report.issues)
    pos = clean_pos
    if drop_spikes:
        spike_set = {j for j, _ in spikes}
        pos = np.array([p for j, p in enumerate(clean_pos) if j not in spike_set], dtype=np.int64)
    out = frame.iloc[pos].copy()
    if not quiet:
        dropped = len(frame) - len(out)
        if not np.all(np.diff(clean_pos) > 0):
            report.actions.append("sorted rows by time")
        if dropped:
            report.actions.append(f"dropped {dropped} row(s)")
    if policy == "fill" and len(out):
        # replace dropped rows / missing candles by flat candles at the previous close
        if cal == "24/7" and spacing is not None and spacing < pd.Timedelta(days=28):
            full = pd.date_range(out.index[0], out.index[-1], freq=spacing, name="timestamp")
        else:
            bad_times = frame.index[np.setdiff1d(np.arange(len(frame)), pos)]
            bad_times = bad_times[(~bad_times.isna()) & (bad_times > out.index[0])]
            full = out.index.union(bad_times).unique()
        added = len(full) - len(out)
        if added:
            out = out.reindex(full)
            prev_close = out["close"].ffill()
            for col in PRICE_COLUMNS:
                out[col] = out[col].fillna(prev_close)
            if "volume" in out:
                out["volume"] = out["volume"].fillna(0.0)
            report.actions.append(f"filled {added} candle(s) with the previous close")
    out.index = out.index.rename("timestamp")
    return out


# --- reshaping ---------------------------------------------------------------------------------------

def resample_ohlcv(df: pd.DataFrame, timeframe: str, *, drop_partial_last: bool = False) -> pd.DataFrame:
    """Aggregate candles to a higher timeframe: first open, max high, min low, last close,
    summed volume. Bins are labelled by their open time, aligned to the UTC epoch (days start
    at 00:00 UTC, weeks on Monday as on Binance, months on the 1st). Bins without any source
    candle are left out (a closure stays a closure).

    Args:
        df: a frame in the standard shape.
        timeframe: the target ccxt timeframe, e.g. ``"4h"`` or ``"1d"``.
        drop_partial_last: drop the last bin when the source data ends before the bin does
            (a still-forming candle). Only meaningful for 24/7 data.
    """
    m = _TF_RE.match(timeframe)
    if not m:
        timeframe_to_ms(timeframe)  # raises the standard message
    num, unit = int(m.group(1)), m.group(2)
    agg = {"open": "first", "high": "max", "low": "min", "close": "last"}
    if "volume" in df:
        agg["volume"] = "sum"
    idx = df.index
    if unit in ("M", "y"):
        months = num * (12 if unit == "y" else 1)
        k = ((idx.year - 1970) * 12 + idx.month - 1) // months * months
        labels = pd.DatetimeIndex(
            pd.to_datetime(pd.DataFrame({"year": 1970 + k // 12, "month": k % 12 + 1, "day": 1}))
        ).tz_localize("UTC")
        ends = labels + pd.DateOffset(months=months)
    else:
        width = pd.Timedelta(milliseconds=timeframe_to_ms(timeframe))
        origin = pd.Timestamp("1970-01-05" if unit == "w" else "1970-01-01", tz="UTC")  # weeks: Monday
        labels = origin + ((idx - origin) // width) * width
        ends = labels + width
    out = df.groupby(labels.as_unit("ns"), sort=True).agg(agg)
    if drop_partial_last and len(out):
        src_spacing = infer_spacing(idx) or pd.Timedelta(0)
        if idx[-1] + src_spacing < ends.max():
            out = out.iloc[:-1]
    out.index = out.index.rename("timestamp")
    return out


def align_ohlcv(frames: Mapping[str, pd.DataFrame], *, how: Literal["inner", "outer"] = "inner") -> pd.DataFrame:
    """Put several instruments on one time index.

    Returns a frame with two-level columns ``(field, symbol)``, so ``aligned["close"]`` is a
    frame with one column per symbol. ``how="inner"`` keeps the timestamps every symbol has;
    ``"outer"`` keeps all and leaves NaN where a symbol has no candle.
    """
    if not frames:
        raise ValueError("align_ohlcv needs at least one frame")
    fields = [c for c in OHLCV_COLUMNS if all(c in f.columns for f in frames.values())]
    index = None
    for f in frames.values():
        index = f.index if index is None else (
            index.intersection(f.index) if how == "inner" else index.union(f.index))
    parts = {(fld, sym): f[fld].reindex(index) for fld in fields for sym, f in frames.items()}
    out = pd.DataFrame(parts, index=index)
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["field", "symbol"])
    out.index = out.index.rename("timestamp")
    return out
