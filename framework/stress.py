"""Stress tests: a strategy replayed through historical episodes and hypothetical shocks.

``stress_test(strategy, data, **settings)`` returns one row per scenario with the loss, the
drawdown, the worst bar, whether a risk limit fired and buy-and-hold over the same bars.

Historical episodes are named UTC date ranges. Each one inside the data runs as
``Backtest(strategy, data, start=<warmup bars before the episode>, trade_from=<episode start>,
end=<episode end>, **settings)``: the warm-up bars feed indicators without trading. An episode
not wholly inside the data is reported with ``covered=False`` and no figures.

Hypothetical shocks transform the whole price history and run the full backtest on it:

* ``("gap", x, at)``: from the bar at (or first after) time ``at`` on (default: the middle
  bar), every open, high, low and close is multiplied by ``1 - x``: an overnight gap of
  ``-x`` between the close before ``at`` and its open; the returns after it are unchanged.
* ``("vol", k)``: volatility times ``k``. Log close-to-close returns ``r`` become
  ``m + k (r - m)`` (``m``: their mean, so the drift is kept), the first close stays, and each
  bar's open, high and low keep their place around its close scaled by ``k`` in log terms,
  ``log(x'/c') = k log(x/c)``, which keeps ``high >= max(open, close)`` and
  ``low <= min(open, close)``. ``k = 1`` leaves the data unchanged (to rounding).
* ``("correlation",)``: correlation -> 1 for several instruments. Every instrument follows the
  first one: ``x'_j = x_1 * close_j[0] / close_1[0]`` for open, high, low and close (each
  keeps its own first close). With one instrument it is reported as not applicable.

Volume is never changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from framework.backtest import Backtest, DataInput, TimeInput, _check_time, load_instruments
from framework.strategy import Strategy

PRICES = ("open", "high", "low", "close")
#: (name, first day, last day) in UTC, both inclusive
DEFAULT_EPISODES: tuple[tuple[str, str, str], ...] = (
    ("covid_crash_2020", "2020-02-13", "2020-03-31"),
    ("may_2021_crash", "2021-05-08", "2021-06-30"),
    ("luna_may_2022", "2022-05-01", "2022-06-30"),
    ("ftx_nov_2022", "2022-11-05", "2022-11-30"),
)
DEFAULT_SHOCKS: tuple[tuple[Any, ...], ...] = (("gap", 0.2), ("vol", 2.0), ("correlation",))
#: fill reasons that mean a risk limit acted
RISK_REASONS = ("max_drawdown", "daily_loss", "emergency_stop", "liquidation")
ROW_COLUMNS = ("scenario", "kind", "covered", "start", "end", "return", "max_drawdown",
               "worst_bar", "risk_limit_fired", "risk_reasons", "buy_and_hold_return", "note")


def gap_shock(frames: dict[str, pd.DataFrame], x: float, at: TimeInput | None = None) -> dict[str, pd.DataFrame]:
    """Every price from the bar at (or first after) ``at`` on times ``1 - x`` (default: from the
    middle bar): an overnight gap of ``-x``."""
    if not 0.0 < x < 1.0:
        raise ValueError(f"gap x must be a fraction between 0 and 1 (0.2: a 20 % gap down), got {x!r}")
    index = next(iter(frames.values())).index
    bar = len(index) // 2 if at is None else int(index.searchsorted(_check_time(at, "at"), side="left"))
    if not 1 <= bar < len(index):
        raise ValueError(f"gap time at={at!r} must fall after the first bar and by the last, "
                         f"{index[0]} .. {index[-1]}")
    out = {}
    for name, frame in frames.items():
        frame = frame.copy()
        for col in PRICES:
            values = frame[col].to_numpy(dtype=np.float64).copy()
            values[bar:] *= 1.0 - x
            frame[col] = values
        out[name] = frame
    return out


def vol_shock(frames: dict[str, pd.DataFrame], k: float) -> dict[str, pd.DataFrame]:
    """Volatility times ``k`` around the mean log return, OHLC rebuilt consistently (module
    docstring)."""
    if not (np.isfinite(k) and k > 0):
        raise ValueError(f"vol k must be a number > 0 (2: twice the volatility), got {k!r}")
    out = {}
    for name, frame in frames.items():
        close = frame["close"].to_numpy(dtype=np.float64)
        r = np.diff(np.log(close))
        m = r.mean() if len(r) else 0.0
        new_log_close = np.log(close[0]) + np.concatenate(([0.0], np.cumsum(m + k * (r - m))))
        frame = frame.copy()
        for col in ("open", "high", "low"):
            offset = np.log(frame[col].to_numpy(dtype=np.float64) / close)
            frame[col] = np.exp(new_log_close + k * offset)
        frame["close"] = np.exp(new_log_close)
        out[name] = frame
    return out


def correlation_shock(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Every instrument follows the first one, scaled to its own first close."""
    first = next(iter(frames.values()))
    out = {}
    for name, frame in frames.items():
        scale = frame["close"].iloc[0] / first["close"].iloc[0]
        frame = frame.copy()
        for col in PRICES:
            frame[col] = first[col].to_numpy(dtype=np.float64) * scale
        out[name] = frame
    return out


def _row(result: Any, name: str, kind: str, note: str = "") -> dict[str, Any]:
    """The figures of one scenario over its traded bars (from ``trade_from``)."""
    t0 = result.trade_from
    equity = result.equity.iloc[t0:]
    orders = result.fills[result.fills["time"] >= equity.index[0]]
    fired = sorted(set(orders["reason"]) & set(RISK_REASONS))
    bh = result.benchmark[0]
    return {
        "scenario": name, "kind": kind, "covered": True,
        "start": equity.index[0], "end": equity.index[-1],
        "return": equity.iloc[-1] / equity.iloc[0] - 1.0,
        "max_drawdown": float((equity / equity.cummax() - 1.0).min()),
        "worst_bar": float(equity.pct_change().min()) if len(equity) > 1 else 0.0,
        "risk_limit_fired": bool(fired), "risk_reasons": ",".join(fired),
        "buy_and_hold_return": bh.iloc[-1] / bh.iloc[0] - 1.0, "note": note,
    }


def _missing(name: str, kind: str, start: Any, end: Any, note: str) -> dict[str, Any]:
    return {"scenario": name, "kind": kind, "covered": False, "start": start, "end": end,
            "return": np.nan, "max_drawdown": np.nan, "worst_bar": np.nan,
            "risk_limit_fired": False, "risk_reasons": "", "buy_and_hold_return": np.nan,
            "note": note}


def _shock_frames(frames: dict[str, pd.DataFrame], shock: Sequence[Any]) -> tuple[str, dict | None, str]:
    """(scenario name, transformed frames or None when not applicable, note)."""
    kind, *args = shock
    if kind == "gap":
        return f"gap -{args[0]:.0%}", gap_shock(frames, *args), ""
    if kind == "vol":
        return f"vol x{args[0]:g}", vol_shock(frames, *args), ""
    if kind == "correlation":
        if len(frames) < 2:
            return "correlation -> 1", None, "needs several instruments"
        return "correlation -> 1", correlation_shock(frames), ""
    raise ValueError(f"unknown shock {shock!r}; valid: ('gap', x[, at]), ('vol', k), ('correlation',)")


def stress_test(strategy: Strategy | type[Strategy] | str, data: DataInput, *,
                episodes: Sequence[tuple[str, TimeInput, TimeInput]] = DEFAULT_EPISODES,
                shocks: Sequence[Sequence[Any]] = DEFAULT_SHOCKS, warmup: int = 200,
                **settings: Any) -> pd.DataFrame:
    """One row per scenario: historical ``episodes`` (name, start, end; UTC, inclusive) then
    hypothetical ``shocks`` (module docstring), run with ``Backtest(strategy, ..., **settings)``.

    Args:
        warmup: bars before each episode's start that warm up indicators without trading
            (fewer when the data starts later).

    Columns: scenario, kind (historical/hypothetical), covered (False: outside the data or not
    applicable, no figures), start, end (traded bars), return, max_drawdown (<= 0), worst_bar
    (worst bar-to-bar equity return), risk_limit_fired and risk_reasons (fills for
    max_drawdown, daily_loss, emergency_stop or liquidation), buy_and_hold_return, note.
    """
    if not (isinstance(warmup, (int, np.integer)) and warmup >= 0):
        raise ValueError(f"warmup must be a whole number of bars >= 0, got {warmup!r}")
    load_kw = {k: settings[k] for k in ("policy", "calendar") if k in settings}
    frames = load_instruments(data, **load_kw)
    index = next(iter(frames.values())).index
    rows = []
    for name, start, end in episodes:
        lo, hi = _check_time(start, "episode start"), _check_time(end, "episode end")
        if hi <= lo:
            raise ValueError(f"episode {name!r}: end {hi} must be after start {lo}")
        if lo < index[0] or hi > index[-1]:
            rows.append(_missing(name, "historical", lo, hi,
                                 f"outside the data, which spans {index[0]} .. {index[-1]}"))
            continue
        first = int(index.searchsorted(lo, side="left"))
        warm_start = index[max(first - warmup, 0)]
        result = Backtest(strategy, frames, start=warm_start, trade_from=lo, end=hi, **settings).run()
        rows.append(_row(result, name, "historical"))
    for shock in shocks:
        name, shocked, note = _shock_frames(frames, shock)
        if shocked is None:
            rows.append(_missing(name, "hypothetical", index[0], index[-1], note))
            continue
        rows.append(_row(Backtest(strategy, shocked, **settings).run(), name, "hypothetical"))
    return pd.DataFrame(rows, columns=list(ROW_COLUMNS))
