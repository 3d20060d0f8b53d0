"""Vectorised strategies: signals written with pandas over the whole frame, run by the one simulator.

    class SmaCrossVec(VectorStrategy):
        fast = Param(10, low=1, high=100_000)
        slow = Param(30, low=2, high=100_000)

        def signals(self, df, params):
            diff = df.close.rolling(params.fast).mean() - df.close.rolling(params.slow).mean()
            prev = diff.shift(1)
            return pd.DataFrame({"entries": (prev <= 0) & (diff > 0),
                                 "short_entries": (prev >= 0) & (diff < 0)})

``signals(df, params)`` gets one instrument's bars (columns open, high, low, close, volume on a
UTC DatetimeIndex named ``timestamp``) and the parameters (``params.fast``), and returns, on the
same index, either

- a DataFrame with any of the boolean columns ``entries``, ``exits`` (open / close a long),
  ``short_entries``, ``short_exits`` (open / close a short): an entry reverses an opposite
  position; an entry together with an exit of the same side, or both entries, at one bar is an
  error naming the bar; or
- a target position: a Series, or a DataFrame with the one column ``target``, of 1 (long),
  -1 (short), 0 (flat) or NaN (no opinion: keep what is held). A target is pursued at every
  close where the position differs, so an entry the simulator rejects is tried again.

There is no compile step: the signals become one float code per bar (``CODE_*``) that a single
generic numba strategy, :class:`SignalKernel`, turns into intents. Its drivers are compiled once
and shared by every vectorised strategy (``Strategy.driver_class``), so sizing, stops, risk
limits, fills and fees are the one simulator's (``framework.runner``).

**Backtest.** ``Backtest`` computes the signals once over each instrument's frame and passes
the codes to the drivers as the kernel's parameter rows (``kernel_params``).

**Live.** A :class:`~framework.runner.BarStepper` (the live runner's core) keeps the bars it
stepped (:class:`SignalFeed`, saved in its snapshot) and, at each close, recomputes the signals
over every bar since the run's first one and feeds the last row to the kernel. Live therefore
equals a backtest from the same first bar exactly (with causal signals, checked below). A
strategy may set ``window = N`` to recompute over the last N bars only (faster, bounded
memory); its signals then equal the backtest's once its indicators have converged within N
bars (tests/test_vector.py shows the tolerance for an EMA cross).

**Causality.** :func:`check_causality` recomputes the signals on the data cut at random bars and
compares them with the full run's up to the cut; a difference raises :class:`CausalityError`
naming the first differing bar it finds. ``Backtest.run`` checks before it simulates and the live
runner before it starts (promotion). ``Backtest(check_causality=False)`` skips the check in a
backtest; ``causality_cuts = 0`` on the strategy class skips it everywhere (not recommended:
a look-ahead makes a backtest that live trading cannot repeat).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from numba import njit

from framework.enums import ACTION_EXIT, ACTION_LONG, ACTION_SHORT, INTENT_ACTION
from framework.jit import bar_njit
from framework.strategy import Strategy

#: the signal codes the kernel reads, one per bar (NaN: no signal)
CODE_NONE = 0.0
CODE_LONG = 1.0  # go long unless long (an entry; target 1)
CODE_SHORT = -1.0  # go short unless short
CODE_EXIT_LONG = 2.0  # close a long
CODE_EXIT_SHORT = 3.0  # close a short
CODE_FLAT = 4.0  # close any position (both exits; target 0)

OHLCV = ("open", "high", "low", "close", "volume")
SIGNAL_COLUMNS = ("entries", "exits", "short_entries", "short_exits")


@njit(cache=True)
def init_nb(p):
    """The kernel's state: the codes (a backtest's, one per bar; live, slot 0 is the code of the
    bar being stepped, written by ``SignalFeed``) and a cursor, the index of the next code."""
    return (p.copy(), np.zeros(1))


@bar_njit
def decide_nb(state, o, h, l, c, v, pos, p, intent):
    codes, cursor = state
    i = int(cursor[0])
    cursor[0] = i + 1
    if i >= codes.shape[0]:
        return
    code = codes[i]
    if code == CODE_LONG:
        intent[INTENT_ACTION] = ACTION_LONG
    elif code == CODE_SHORT:
        intent[INTENT_ACTION] = ACTION_SHORT
    elif (code == CODE_EXIT_LONG and pos > 0.0) or (code == CODE_EXIT_SHORT and pos < 0.0) or (
            code == CODE_FLAT and pos != 0.0):
        intent[INTENT_ACTION] = ACTION_EXIT


class SignalKernel(Strategy):
    """The numba strategy that runs every vectorised strategy: it acts on precomputed codes."""

    name = "signal_kernel"
    init_nb = staticmethod(init_nb)
    decide_nb = staticmethod(decide_nb)


class CausalityError(ValueError):
    """A vectorised strategy's signals at some bar change when later bars are cut off."""


def ohlcv_frame(values: np.ndarray, times_ns: np.ndarray) -> pd.DataFrame:
    """The frame ``signals`` receives: (bars, 5) float64 OHLCV ``values`` on the UTC times
    ``times_ns`` (int64 ns). Backtest and live build it alike, so they hand over equal frames."""
    index = pd.DatetimeIndex(pd.to_datetime(np.asarray(times_ns, dtype=np.int64), unit="ns", utc=True),
                             name="timestamp")
    return pd.DataFrame(np.array(values, dtype=np.float64), index=index, columns=list(OHLCV))


def as_ohlcv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A validated OHLCV frame (open..close, optional volume) in the form ``ohlcv_frame`` makes."""
    values = np.column_stack([frame[c].to_numpy(np.float64) if c in frame else np.full(len(frame), np.nan)
                              for c in OHLCV])
    return ohlcv_frame(values, frame.index.as_unit("ns").asi8)


class VectorStrategy(Strategy):
    """Base class of vectorised strategies: declare ``Param``s and write ``signals`` (see the
    module docstring). Promote it like any strategy: ``Backtest``, ``tradpal backtest
    --strategy file.py:Class``, ``tradpal paper``."""

    #: recompute live over the last ``window`` bars instead of every bar since the run's first
    window: ClassVar[int | None] = None
    #: random cuts ``check_causality`` tries before a backtest and before promotion (0: skip)
    causality_cuts: ClassVar[int] = 8

    def signals(self, df: pd.DataFrame, params: Any) -> pd.DataFrame | pd.Series:
        """Entries/exits or a target position on ``df.index`` (see the module docstring)."""
        raise NotImplementedError(f"{type(self).__name__} must define signals(self, df, params)")

    @classmethod
    def driver_class(cls) -> type[Strategy]:
        return SignalKernel

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        w = cls.window
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 2):
            raise TypeError(f"{cls.__name__}.window must be None or a whole number of bars >= 2, got {w!r}")
        c = cls.causality_cuts
        if isinstance(c, bool) or not isinstance(c, int) or c < 0:
            raise TypeError(f"{cls.__name__}.causality_cuts must be a whole number >= 0, got {c!r}")

    def signal_output(self, df: pd.DataFrame) -> pd.DataFrame:
        """``signals(df, params)`` checked: a DataFrame of the known columns on ``df.index``
        (a Series becomes the column ``target``)."""
        out = self.signals(df, _Params(self.params))
        who = f"{type(self).__name__}.signals"
        if isinstance(out, pd.Series):
            out = out.to_frame("target")
        if not isinstance(out, pd.DataFrame):
            raise TypeError(f"{who} must return a DataFrame (columns {', '.join(SIGNAL_COLUMNS)}, "
                            f"or target) or a Series of target positions, got {type(out).__name__}")
        if not out.index.equals(df.index):
            raise ValueError(f"{who} returned {len(out)} rows on another index than the {len(df)} "
                             "bars it was given; return one row per bar, on df.index")
        cols = list(out.columns)
        unknown = [c for c in cols if c not in (*SIGNAL_COLUMNS, "target")]
        if unknown or not cols or ("target" in cols and len(cols) > 1):
            raise ValueError(f"{who} returned columns {cols}; expected any of "
                             f"{', '.join(SIGNAL_COLUMNS)}, or target alone")
        return out

    def codes(self, df: pd.DataFrame) -> np.ndarray:
        """The kernel's code for every bar of ``df`` (float64)."""
        return signal_codes(self.signal_output(df), type(self).__name__)

    def kernel_params(self, prices: list[np.ndarray], times_ns: np.ndarray) -> np.ndarray:
        """A backtest's kernel rows: each instrument's codes over all bars."""
        o, h, l, c, v = prices
        return np.ascontiguousarray(np.stack([
            self.codes(ohlcv_frame(np.column_stack([x[:, j] for x in (o, h, l, c, v)]), times_ns))
            for j in range(c.shape[1])]))

    def verify_causality(self, frame: pd.DataFrame, seed: int = 0) -> None:
        """``check_causality`` with the class's ``causality_cuts`` (nothing when 0)."""
        if self.causality_cuts:
            check_causality(self, frame, cuts=self.causality_cuts, seed=seed)

    def bar_feed(self, n_columns: int) -> SignalFeed:
        return SignalFeed(self, n_columns)


class _Params(dict):
    """Parameters by key and as attributes: ``params["fast"]``, ``params.fast``."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"no parameter {key!r}; parameters: {', '.join(self)}") from None


def _bools(out: pd.DataFrame, col: str, who: str) -> np.ndarray:
    if col not in out:
        return np.zeros(len(out), dtype=bool)
    x = out[col]
    if x.dtype != bool:
        values = x.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~(np.isnan(values) | (values == 0) | (values == 1))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{who}: {col!r} must be True/False (or 1/0), got {x.iloc[i]!r} at "
                             f"bar {i} ({out.index[i]})")
        return values == 1
    return x.to_numpy()


def signal_codes(out: pd.DataFrame, who: str = "signals") -> np.ndarray:
    """One ``CODE_*`` per row of checked ``signals`` output (see ``VectorStrategy.signal_output``)."""
    n = len(out)
    if "target" in out:
        t = out["target"].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~(np.isnan(t) | np.isin(t, (-1.0, 0.0, 1.0)))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{who}: target must be 1, -1, 0 or NaN, got {float(t[i])!r} at bar {i} ({out.index[i]}); "
                             "sizing is the simulator's (--set size=...)")
        codes = np.where(t == 0.0, CODE_FLAT, t)
        return np.where(np.isnan(t), CODE_NONE, codes)
    le, lx, se, sx = (_bools(out, c, who) for c in SIGNAL_COLUMNS)
    for a, b, what in ((le, se, "entries and short_entries"), (le, lx, "entries and exits"),
                       (se, sx, "short_entries and short_exits")):
        both = a & b
        if both.any():
            i = int(np.argmax(both))
            raise ValueError(f"{who}: {what} are both True at bar {i} ({out.index[i]}); "
                             "give one signal per bar")
    codes = np.full(n, CODE_NONE)
    codes[lx & sx] = CODE_FLAT
    codes[lx & ~sx] = CODE_EXIT_LONG
    codes[sx & ~lx] = CODE_EXIT_SHORT
    codes[le] = CODE_LONG  # an entry reverses: it covers the other side's exit
    codes[se] = CODE_SHORT
    return codes


def _first_difference(part: pd.DataFrame, full: pd.DataFrame) -> tuple[int, str] | None:
    """(bar, column) of the first row where ``part`` differs from the first rows of ``full``
    (NaN equals NaN), or None."""
    n = len(part)
    first: tuple[int, str] | None = None
    for col in full.columns:
        if col not in part:
            return 0, col
        a = part[col].to_numpy()
        b = full[col].to_numpy()[:n]
        same = (a == b) | (pd.isna(a) & pd.isna(b))
        if not same.all():
            i = int(np.argmin(same))
            if first is None or i < first[0]:
                first = (i, col)
    return first


def check_causality(strategy: VectorStrategy, df: pd.DataFrame, cuts: int = 8, seed: int = 0) -> None:
    """Raise ``CausalityError`` unless ``strategy.signals`` on ``df`` cut after random bars
    equals the full run's signals up to the cut, exactly.

    ``cuts`` cut points are drawn from bars 1..len(df)-1 with ``numpy.random.default_rng(seed)``.
    When a cut differs, the earliest differing cut is narrowed by bisection between it and the
    largest passing cut below it, and the error names the first bar (position and time) whose
    signal changes at that cut, with both values: for a look-ahead that starts at some bar and
    persists (``shift(-1)``, a centred window) that is the bar where it starts.
    """
    frame = as_ohlcv_frame(df)
    n = len(frame)
    full = strategy.signal_output(frame)
    if n < 2 or cuts == 0:
        return
    rng = np.random.default_rng(seed)
    points = np.sort(rng.choice(np.arange(1, n), size=min(cuts, n - 1), replace=False))

    def diff(c: int) -> tuple[int, str, pd.DataFrame] | None:
        part = strategy.signal_output(frame.iloc[:c])
        found = _first_difference(part, full)
        return None if found is None else (*found, part)

    lo, hi, found = 0, None, None
    for c in points.tolist():
        found = diff(c)
        if found is not None:
            hi = c
            break
        lo = c
    if hi is None:
        return
    while hi - lo > 1:  # the earliest failing cut, when failing cuts are contiguous
        mid = (lo + hi) // 2
        at_mid = diff(mid)
        if at_mid is not None:
            hi, found = mid, at_mid
        else:
            lo = mid
    assert found is not None
    bar, col, part = found
    raise CausalityError(
        f"{type(strategy).__name__} looks ahead: its signal {col!r} at bar {bar} ({frame.index[bar]}) "
        f"is {_plain(part[col].iloc[bar])!r} when the data ends at bar {hi - 1} but "
        f"{_plain(full[col].iloc[bar])!r} "
        f"with all {n} bars. A signal may use only the bars up to its own (look for shift(-k), "
        "centred windows, statistics of the whole frame such as df.close.mean()). To skip this "
        "check: Backtest(check_causality=False), or causality_cuts = 0 on the class")


def _plain(x: Any) -> Any:
    """A NumPy scalar as the Python value it holds (``nan`` rather than ``np.float64(nan)``)."""
    return x.item() if isinstance(x, np.generic) else x


class SignalFeed:
    """The bars a ``BarStepper`` stepped, for a vectorised strategy: before each step it
    appends the bar, recomputes the signals over the bars kept (all since the first, or the
    strategy's last ``window``) and writes the last row's code into the kernel's state. Bars
    before the stepper's ``trade_from`` place no orders, so their signals are not computed.
    ``arrays`` / ``load`` put the bars in the stepper's snapshot."""

    def __init__(self, strategy: VectorStrategy, n_columns: int) -> None:
        self.strategy = strategy
        self.window = strategy.window
        self.values = np.empty((64, n_columns, len(OHLCV)))
        self.times = np.empty(64, dtype=np.int64)
        self.n = 0
        #: the kernel's parameter rows: slot 0 receives each bar's code, the parameters follow
        #: (so a snapshot is checked against them)
        self.sp = np.ascontiguousarray(np.tile(np.r_[np.nan, strategy.param_vector()], (n_columns, 1)))

    def before_step(self, states: tuple[np.ndarray, ...], t: int, trade_from: float,
                    time_ns: int | None, bar: list[np.ndarray]) -> None:
        """Keep bar ``t`` (time ``time_ns``, ``bar`` the (1, columns) o, h, l, c, v arrays) and
        write its code for every column into ``states``; raises (keeping nothing) if the
        signals fail or the time is missing or not after the last bar's."""
        if time_ns is None:
            raise ValueError(f"{type(self.strategy).__name__} is a vectorised strategy: step(..., "
                             "time=) must give the bar's UTC open time (int ns)")
        time_ns = int(time_ns)
        if self.n and time_ns <= self.times[self.n - 1]:
            raise ValueError(f"time={time_ns} is not after the previous bar's ({self.times[self.n - 1]})")
        k = self.n
        if k == len(self.times):  # room for one more (a window keeps window + 1 at most)
            self.values = np.concatenate([self.values, np.empty_like(self.values)])
            self.times = np.concatenate([self.times, np.empty_like(self.times)])
        self.values[k] = np.stack([x[0] for x in bar], axis=-1)
        self.times[k] = time_ns
        first = 0 if self.window is None else max(0, k + 1 - self.window)
        codes, cursor = states
        if not t < trade_from:  # NaN: trading from the first bar
            new = [self.strategy.codes(ohlcv_frame(self.values[first:k + 1, j], self.times[first:k + 1]))[-1]
                   for j in range(codes.shape[0])]  # all computed before anything changes
            codes[:, 0] = new
        cursor[:, 0] = 0.0
        if first:  # drop the bar that left the window
            self.values[:k] = self.values[1:k + 1]
            self.times[:k] = self.times[1:k + 1]
        self.n = k + 1 - first

    def arrays(self) -> dict[str, np.ndarray]:
        return {"signal_bars": self.values[:self.n], "signal_times": self.times[:self.n]}

    def load(self, data: dict[str, np.ndarray], t: int) -> None:
        """Take the bars from a snapshot's arrays (checked first, ``ValueError`` naming them)
        of a stepper that has stepped ``t`` bars."""
        bars, times = data.get("signal_bars"), data.get("signal_times")
        keep = t if self.window is None else min(t, self.window)
        if (bars is None or times is None or bars.dtype != np.float64 or times.dtype != np.int64
                or bars.shape != (keep, *self.values.shape[1:]) or times.shape != (keep,)):
            raise ValueError(f"snapshot's signal_bars/signal_times do not hold the last {keep} bars "
                             f"of {self.values.shape[1]} column(s) this vectorised strategy needs")
        self.values = np.concatenate([bars, np.empty((max(64, keep), *bars.shape[1:]))])
        self.times = np.concatenate([times, np.empty(max(64, keep), dtype=np.int64)])
        self.n = keep
