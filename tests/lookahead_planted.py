"""A test of the look-ahead test: plant a one-bar look-ahead, and the check must report it.

Not collected by the normal run (the name does not start with ``test_``): compiling a second
simulator takes about 35 s, so ``tests/test_no_jit.py`` runs this file as plain Python
(``NUMBA_DISABLE_JIT=1``), where it takes a few seconds.
"""

from pathlib import Path
from types import ModuleType

import pytest

from framework import drivers_nb, runner
from framework.backtest import Backtest
from research.mutation_check import LOOKAHEAD
from strategies.sma_cross import SmaCross
from tests.test_lookahead import DATA, FIXED_TS, SETTINGS, decision_bars, lookahead_violations


@pytest.fixture
def lookahead_drivers(monkeypatch):
    """The simulator's drivers with the planted one-bar look-ahead
    (``research.mutation_check.LOOKAHEAD``), in memory; the real ones come back afterwards."""
    planted = ModuleType("planted_drivers_nb")
    source = LOOKAHEAD.apply(Path(drivers_nb.__file__).read_text())
    exec(compile(source, "<planted drivers_nb>", "exec"), planted.__dict__)
    monkeypatch.setattr(runner, "drivers_nb", planted)
    monkeypatch.setattr(runner, "_loaded", {})


def test_the_check_catches_a_driver_that_reads_the_next_close(lookahead_drivers):
    def run(data):
        return Backtest(SmaCross(), data, **SETTINGS).run()

    ts = sorted(set(FIXED_TS + decision_bars(run(DATA))))
    problems = lookahead_violations(run, DATA, ts)
    assert problems, "a driver handing decide_nb the next close must be reported"
    # nothing at bars <= t moved: a check that left out the fills at t+1 would pass this bug
    assert all("market fills at t+1" in p for p in problems), problems
