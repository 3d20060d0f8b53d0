"""The kernels run as plain Python with ``NUMBA_DISABLE_JIT=1`` (README "Testing").

That is how a strategy is stepped through in a debugger and how coverage of the kernels is
measured, so a subprocess runs the simulator's tests that way: its hand-computed cases (both
sides), replay parity, and the test that plants a look-ahead in the driver and asserts the
look-ahead check reports it (too costly to compile a second set of drivers for in the main run).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from numba.core import config as numba_config

from framework import runner
from tests.scripted import Scripted

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
