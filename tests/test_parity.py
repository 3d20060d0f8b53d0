"""Replay parity (DESIGN.md): bars fed one at a time through the bar stepper (the live runner's
core, paper broker) give the backtest's fills, positions, cash and equity to the last bit."""

import zlib

import numpy as np
import pytest

from framework.backtest import Backtest
from framework.runner import BarStepper, utc_day_numbers
from framework.synthetic import generate_ohlcv
from strategies import STRATEGIES

CONFIGS = {
    "defaults": {},
    "stops_shorts_limits": dict(
        allow_short=True, sl_pct=0.03, tp_pct=0.06, trail_atr=3.0, slippage=0.0005, cooldown_bars=3,
        max_trades_per_day=5, daily_loss=0.05, max_drawdown=0.5, max_position_notional=20_000.0,
    ),
    "portfolio": dict(cash_sharing=True, max_positions=2, size=0.3, allow_short=True, max_exposure=0.9),
    "separate_columns": dict(size=0.5),
}


def replay(bt: Backtest):
    """Step every bar of every cash group through BarStepper; returns fills, and equity and cash
    per group and positions per column at every close."""
    cols = list(bt.frames)
    groups = [cols] if bt.settings.cash_sharing or len(cols) == 1 else [[c] for c in cols]
    day = utc_day_numbers(bt.index)
    p = bt.settings.vector(bt.ann_factor)
    fills, equity, cash, positions = [], [], [], []
    for gi, group in enumerate(groups):
        stepper = BarStepper(bt.strategy, p, n_columns=len(group))
        pos = np.empty((len(bt.index), len(group)))
        eq, ca = np.empty(len(bt.index)), np.empty(len(bt.index))
        arrays = [np.column_stack([bt.frames[c][f].to_numpy() for c in group])
                  for f in ("open", "high", "low", "close", "volume")]
        for t in range(len(bt.index)):
            stepper.step(day[t], *(a[t] for a in arrays))
            eq[t], ca[t], pos[t] = stepper.equity, stepper.cash, stepper.positions
        f = stepper.fills
        f["col"] += cols.index(group[0])  # a lone stepper numbers its columns from 0
        fills.append(f)
        positions.append(pos)
        equity.append(eq)
        cash.append(ca)
    return np.concatenate(fills), np.column_stack(equity), np.column_stack(cash), np.column_stack(positions)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_replay_parity(name, config):
    settings = CONFIGS[config]
    n_assets = 1 if config in ("defaults", "stops_shorts_limits") else 3
    data = generate_ohlcv(3000, n_assets, freq="1h", seed=zlib.crc32(f"{name}/{config}".encode()) % 1000)
    bt = Backtest(STRATEGIES[name](), data, **settings)
    result = bt.run()
    fills, equity, cash, positions = replay(bt)
    assert len(result.fills) > 4, "the strategy should trade on this data for the test to mean anything"
    if len(bt.frames) > 1 and not settings.get("cash_sharing"):
        order = np.lexsort((result.fills["id"], result.fills["col"]))  # backtest runs group by group
        np.testing.assert_array_equal(fills, result.fills[order])
    else:
        np.testing.assert_array_equal(fills, result.fills)
    np.testing.assert_array_equal(positions, result.positions.to_numpy())
    np.testing.assert_array_equal(equity, result.group_equity)
    # the backtest keeps no cash series: it replays it from its fills, which must give the cash
    # the live state held at every close
    np.testing.assert_array_equal(cash, result._cash_and_positions[0])
