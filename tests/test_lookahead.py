"""No look-ahead (DESIGN.md): a decision at bar t sees only the bars up to t's close.

The check (``lookahead_violations``) gives a run a different future after bar t -- keeping
``open[t+1]``, the price at which the orders decided at t fill -- and reports anything decided
at or before t that changed: the fills at bars <= t, the equity up to t, and the market fills at
bar t+1. Every market order is decided at the previous close, so those fills belong to bar t;
the stop-loss, take-profit and limit/stop fills at t+1 may rightly depend on t+1's range and
are left out. Leaving out the t+1 market fills too would make the check blind to a one-bar
look-ahead (a decision at t filled at t+1 is exactly what such a bug changes):
``tests/lookahead_planted.py`` plants that bug and asserts the check reports it (run as plain
Python by ``tests/test_no_jit.py``).
"""

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pytest

from framework.backtest import Backtest, BacktestResult
from framework.enums import ORDER_MARKET
from framework.synthetic import generate_ohlcv
from strategies import STRATEGIES

SETTINGS = dict(allow_short=True, sl_pct=0.04, trail_pct=0.08, tp_pct=0.1)
#: other futures after bar t: bar t+1 flat at its open and nothing after; a jump up; a crash
FUTURES = ("flat_end", "jump_up", "crash")


def with_new_future(data: pd.DataFrame, t: int, future: str, seed: int = 0) -> pd.DataFrame:
    """``data`` with bars 0..t and the open of bar t+1 unchanged, and a different path after
    that open (one of ``FUTURES``)."""
    o = float(data["open"].iloc[t + 1])
    if future == "flat_end":
        changed = data.iloc[: t + 2].copy()
        changed.iloc[-1, changed.columns.get_indexer(["high", "low", "close"])] = o
        return changed
    jump = {"jump_up": 1.25, "crash": 0.8}[future]
    n = len(data) - t - 1
    other = generate_ohlcv(max(2, n), seed=seed, start_price=o * jump)[:n]
    changed = data.copy()
    changed.iloc[t + 1:] = other[data.columns].to_numpy()
    # bar t+1 opens where it did and reaches the new path within the bar
    changed.iloc[t + 1, changed.columns.get_loc("open")] = o
    changed.iloc[t + 1, changed.columns.get_loc("high")] = max(o, changed["high"].iloc[t + 1])
    changed.iloc[t + 1, changed.columns.get_loc("low")] = min(o, changed["low"].iloc[t + 1])
    return changed


def decided_by(fills: np.ndarray, t: int) -> np.ndarray:
    """The fills decided at or before the close of bar t: those at bars <= t and the market
    fills at t+1 (orders queued at t's close)."""
    bar = fills["bar"]
    return fills[(bar <= t) | ((bar == t + 1) & (fills["order_type"] == ORDER_MARKET))]


def lookahead_violations(
    run: Callable[[pd.DataFrame], BacktestResult], data: pd.DataFrame, ts: Sequence[int]
) -> list[str]:
    """What a run decided at or before bar t that changed when the future after t changed, for
    each t in ``ts`` and each of ``FUTURES``; empty when nothing did."""
    base = run(data)
    problems = []
    for t in ts:
        for i, future in enumerate(FUTURES):
            other = run(with_new_future(data, t, future, seed=t + i))
            if not np.array_equal(decided_by(other.fill_records, t), decided_by(base.fill_records, t)):
                before = np.array_equal(other.fill_records[other.fill_records["bar"] <= t],
                                        base.fill_records[base.fill_records["bar"] <= t])
                where = "market fills at t+1" if before else "fills at bars <= t"
                problems.append(f"t={t}, {future}: {where} changed")
            if not np.array_equal(other.group_equity[: t + 1], base.group_equity[: t + 1]):
                problems.append(f"t={t}, {future}: equity at bars <= t changed")
    return problems


def decision_bars(result: BacktestResult, n: int = 6) -> list[int]:
    """Up to ``n`` bars spread over the run whose close decided a market order: the bars where
    a look-ahead would change something."""
    fills = result.fill_records[result.fill_records["order_type"] == ORDER_MARKET]
    bars = np.unique(fills["bar"] - 1)
    return [int(b) for b in bars[np.linspace(0, len(bars) - 1, min(n, len(bars))).astype(int)]]


DATA = generate_ohlcv(2500, freq="1h", seed=11)
FIXED_TS = [300, 1200, 2100]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_future_bars_change_nothing_decided_before(name):
    strategy = STRATEGIES[name]()

    def run(data):
        return Backtest(strategy, data, **SETTINGS).run()

    base = run(DATA)
    ts = sorted(set(FIXED_TS + decision_bars(base)))
    # it trades, and decides near the chosen bars: the check has something to see
    assert len(base.fill_records) > 4 and len(ts) >= len(FIXED_TS) + 4
    assert lookahead_violations(run, DATA, ts) == []
