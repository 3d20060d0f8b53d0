"""The kernels run as plain Python with ``NUMBA_DISABLE_JIT=1`` (README "Testing"), and a
strategy's ``decide_nb`` alone with ``Backtest(..., jit=False)``.

``NUMBA_DISABLE_JIT=1`` is how coverage of the kernels is measured, so a subprocess runs the
simulator's tests that way: its hand-computed cases (both sides), replay parity, and the test
that plants a look-ahead in the driver and asserts the look-ahead check reports it (too costly
to compile a second simulator for in the main run). ``jit=False`` is how a strategy is stepped
through in a debugger: its fills must be the compiled run's, bit for bit.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import njit
from numba.core import config as numba_config

from framework import runner
from framework.backtest import Backtest
from framework.enums import ACTION_LONG, INTENT_ACTION
from framework.strategy import Strategy
from framework.synthetic import generate_ohlcv
from strategies import STRATEGIES
from tests.records import assert_records_equal
from tests.scripted import Scripted
from tests.test_parity import CONFIGS

ROOT = Path(__file__).resolve().parents[1]

SELECTION = [
    "tests/test_sim.py",
    "tests/test_sim_sides.py",
    "tests/test_parity.py",
    "tests/lookahead_planted.py",
]


def test_simulator_lookahead_and_parity_tests_pass_without_jit():
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SELECTION],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    # everything selected ran (nothing skipped: the planted look-ahead test needs no JIT)
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 100 and "skipped" not in summary, summary


@pytest.mark.skipif(numba_config.DISABLE_JIT, reason="any function is a kernel without JIT")
def test_compiled_drivers_still_refuse_a_plain_python_decide():
    class Plain(Scripted):
        decide_nb = staticmethod(Scripted.decide_nb.py_func)

    with pytest.raises(TypeError, match="Plain.decide_nb must be a numba @njit function"):
        runner.drivers(Plain)


@pytest.mark.parametrize("config", ["defaults", "stops_shorts_limits", "portfolio"])
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_python_decide_gives_the_compiled_runs_fills_bit_for_bit(name, config):
    settings = CONFIGS[config]
    data = generate_ohlcv(1500, 2 if settings.get("cash_sharing") else 1, freq="1h", seed=len(name) * 7)
    compiled = Backtest(STRATEGIES[name](), data, **settings).run()
    debug = Backtest(STRATEGIES[name](), data, jit=False, **settings).run()
    assert len(compiled.fill_records) >= 4  # the comparison covers trades, not an idle run
    assert_records_equal(debug.fill_records, compiled.fill_records)
    assert_records_equal(debug.event_records, compiled.event_records)
    np.testing.assert_array_equal(debug.group_equity, compiled.group_equity)


@njit(cache=True)
def _init_one(p):
    return (np.zeros(1),)


@njit(cache=True)
def _decide_past_the_end(state, o, h, l, c, v, pos, p, intent):
    flag = state[0]
    if c > 0.0:
        intent[INTENT_ACTION] = ACTION_LONG + 0.0 * flag[3]  # three past the end of a 1-array


class PastTheEnd(Strategy):
    name = "past_the_end"
    init_nb = staticmethod(_init_one)
    decide_nb = staticmethod(_decide_past_the_end)


def test_python_decide_checks_bounds():
    """Compiled, the read past the end would go unnoticed (numba does not check bounds)."""
    data = generate_ohlcv(50, 1, freq="1h", seed=3)
    with pytest.raises(IndexError):
        Backtest(PastTheEnd(), data, jit=False).run()
    with pytest.raises(ValueError, match="jit must be True or False"):
        Backtest(PastTheEnd(), data, jit="no")
