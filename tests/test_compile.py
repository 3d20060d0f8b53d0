"""What a first compile costs: one specialisation per argument type, no Python wrappers for the
kernels only kernels call, and the install's warm-up compiling what ``make demo`` needs."""

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from numba.core import config

from framework.jit import njit
from framework.warmup import DEMO_ARGS

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(config.DISABLE_JIT, reason="about numba's compiled specialisations")


def _callee_and_caller(**options):
    @njit(**options)
    def callee(x, k):
        return x * k

    @njit
    def caller(x):
        return callee(x, 0) + callee(x, 1) + callee(x, 2)  # three constants

    return callee, caller


def test_a_kernel_is_compiled_once_per_argument_types_not_per_constant():
    callee, caller = _callee_and_caller()
    assert caller(2.0) == 2.0 * 0 + 2.0 * 1 + 2.0 * 2
    assert len(callee.overloads) == 1
    callee, caller = _callee_and_caller(per_constant=True)  # numba's own way, where asked for
    assert caller(2.0) == 6.0
    assert len(callee.overloads) == 3


def test_an_internal_kernel_is_called_by_kernels_only():
    callee, caller = _callee_and_caller(internal=True)
    assert caller(3.0) == 9.0
    with pytest.raises(TypeError):  # no CPython wrapper: not callable from Python
        callee(3.0, 1)


# the demo's backtest in a fresh process, counting numba's compiles
COUNT_COMPILES = textwrap.dedent('''
    import contextlib, io, json, sys
    from numba.core import event
    compiled = []
    class Count(event.Listener):
        def on_start(self, ev):
            pass
        def on_end(self, ev):
            compiled.append(ev.data["dispatcher"].py_func.__qualname__)
    event.register("numba:compile", Count())
    from framework.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(sys.argv[1:])
    print(json.dumps({"code": code, "compiled": compiled, "out": out.getvalue()}))
''')


def test_the_warm_up_compiles_what_the_demo_needs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "TRADPAL_KERNEL_CACHE")}
    env.update(TRADPAL_CACHE_HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    warm = subprocess.run([sys.executable, "-m", "framework.warmup"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert warm.returncode == 0, warm.stderr
    assert "compiled the demo's kernels" in warm.stderr
    demo = subprocess.run([sys.executable, "-c", COUNT_COMPILES, *DEMO_ARGS], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert demo.returncode == 0, demo.stderr
    result = json.loads(demo.stdout)
    assert result["code"] == 0 and "fills" in result["out"]
    assert result["compiled"] == []  # every kernel came from the warm-up's cache


def _demo_cold(cache: Path, **env_extra: str) -> dict:
    """``make demo``'s backtest in a fresh process on the empty cache ``cache``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "TRADPAL_KERNEL_CACHE", "TRADPAL_COMPILE_ASIDE")}
    env.update(TRADPAL_CACHE_HOME=str(cache), PYTHONPATH=str(ROOT), **env_extra)
    run = subprocess.run([sys.executable, "-c", COUNT_COMPILES, *DEMO_ARGS], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["code"] == 0
    # the figures, without the line that says how long it ran
    result["out"] = [line for line in result["out"].splitlines() if " ran in " not in line]
    return result


def test_a_cold_backtest_compiles_its_bar_loop_in_a_second_process(tmp_path):
    aside = _demo_cold(tmp_path / "aside")
    alone = _demo_cold(tmp_path / "alone", TRADPAL_COMPILE_ASIDE="0")
    assert aside["out"] == alone["out"]  # the same figures, whoever compiled what
    if (os.cpu_count() or 1) < 2:  # off on one core: the first process compiles everything
        assert aside["compiled"] == alone["compiled"]
        return
    # the second process compiled the bar loop (and the simulator's helpers it calls) for the
    # argument types of the real call, so the first loaded it from the cache
    assert "_group_bars_nb" in alone["compiled"] and "_group_bars_nb" not in aside["compiled"]
    assert {"_fill_pending", "_check_exits", "book_fill_nb"} <= set(alone["compiled"]) - set(aside["compiled"])
    # while the first compiled the strategy's kernels and the result's
    assert {"decide_nb", "trades_from_fills_nb", "replay_fills_nb", "stats_state_1d_nb"} <= set(aside["compiled"])
    # and no kernel more often than alone (a made-up result of other types would compile twice)
    assert not Counter(aside["compiled"]) - Counter(alone["compiled"])
