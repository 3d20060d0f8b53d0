"""No look-ahead: what a strategy decided at or before bar t cannot depend on bars after t."""

import numpy as np
import pytest

from framework import enums
from framework.backtest import Backtest
from framework.runner import BarStepper, utc_day_numbers
from framework.synthetic import generate_ohlcv
from strategies import STRATEGIES

SETTINGS = dict(allow_short=True, sl_pct=0.04, trail_pct=0.08, tp_pct=0.1)


def with_new_future(data, t, seed):
    """The same bars up to t; a different random path after it."""
    other = generate_ohlcv(len(data), seed=seed, start_price=float(data["close"].iloc[t]) * 1.3)
    changed = data.copy()
    changed.iloc[t + 1:] = other.iloc[t + 1:].to_numpy()
    return changed


def pending_after(strategy, data, t, p):
    """The order queued at the close of bar t (decision state), via the bar stepper."""
    stepper = BarStepper(strategy, p)
    day = utc_day_numbers(data.index)
    cols = [data[c].to_numpy() for c in ("open", "high", "low", "close", "volume")]
    for i in range(t + 1):
        stepper.step(day[i], *(c[i] for c in cols))
    pend = [enums.C_PEND_ACTION, enums.C_PEND_TYPE, enums.C_PEND_PRICE, enums.C_PEND_NOTIONAL, enums.C_PEND_QTY]
    return stepper.cs[0, pend]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_future_bars_change_nothing_decided_before(name):
    data = generate_ohlcv(2500, freq="1h", seed=11)
    strategy = STRATEGIES[name]()
    base = Backtest(strategy, data, **SETTINGS).run()
    assert len(base.fills) > 4
    for t in (300, 1200, 2100):
        changed = Backtest(strategy, with_new_future(data, t, seed=t), **SETTINGS).run()
        before = base.fills[base.fills["bar"] <= t]
        np.testing.assert_array_equal(changed.fills[changed.fills["bar"] <= t], before)
        np.testing.assert_array_equal(changed.equity.to_numpy()[: t + 1], base.equity.to_numpy()[: t + 1])
        p = base.settings.vector(base.ann_factor)
        np.testing.assert_array_equal(
            pending_after(strategy, data, t, p), pending_after(strategy, with_new_future(data, t, seed=t), t, p)
        )
