"""A cold cache's first backtest, compiled in two processes at once.

The longest compile of a first backtest is the simulator's bar loop
(``framework.drivers_nb._group_bars_nb`` with the simulator's helpers, about 6 s on this 2-core
machine); the strategy's kernels and those of the result (trades, the replay of cash and
positions, the statistics) take about 4.5 s more. On a cold cache ``Backtest.run`` therefore
starts ``python -m framework.compile_aside`` and sends it the numba types of the arguments the
bar loop will be called with (``drivers_nb.group_bars_types``); that process compiles the bar
loop into the kernel cache while the first compiles the strategy's kernels and the result's
(``framework.backtest.compile_result_kernels``, on a made-up result with the types of a real
one), then waits for it and loads the bar loop from the cache.

Which process compiles a kernel never changes what it computes; if the second process fails,
the first compiles the bar loop itself. ``TRADPAL_COMPILE_ASIDE=0`` turns it off; it is off on
one core, in a ``multiprocessing`` worker and where ``sys.executable`` is no Python interpreter.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
from pathlib import Path

from framework._kernel_cache import is_cached

#: set in the second process, which must not start another
_ASIDE_ENV = "TRADPAL_COMPILE_ASIDE"


def compile_aside(o, h, l, c, v, ts, sp, simp) -> subprocess.Popen | None:
    """On a cold cache, start ``python -m framework.compile_aside`` to compile the
    simulator's bar loop (``framework.drivers_nb._group_bars_nb``, the longest compile) for the
    arguments ``backtest_nb`` will pass it with these prices, times, parameter and settings
    rows, and return it: the caller compiles the strategy's kernels and the result's
    (``framework.backtest.compile_result_kernels``) meanwhile, then waits for it and loads the
    bar loop from the cache. None when there is nothing to gain: the bar loop compiled here or
    cached, one core, a worker of a ``multiprocessing`` pool, ``TRADPAL_COMPILE_ASIDE=0``, or
    this is that second process. Which process compiles a kernel never changes what it
    computes; if the second one fails, the first compiles the bar loop itself, as without it."""
    from numba.core import config

    from framework import drivers_nb

    if config.DISABLE_JIT or os.environ.get(_ASIDE_ENV, "1") == "0" or (os.cpu_count() or 1) < 2:
        return None
    if multiprocessing.parent_process() is not None:  # a pool's worker: its siblings use the cores
        return None
    if getattr(sys, "frozen", False) or not Path(sys.executable or "-").name.lower().startswith("python"):
        return None  # embedded or frozen: sys.executable is not an interpreter to start
    loop = drivers_nb._group_bars_nb
    if loop.overloads or is_cached(loop):
        return None
    try:
        argument_types = pickle.dumps(drivers_nb.group_bars_types(o, h, l, c, v, ts, sp, simp))
    except Exception:  # noqa: BLE001 (an argument numba cannot type, or pickle: compile here)
        return None
    env = dict(os.environ, **{_ASIDE_ENV: "0"})
    root = str(Path(__file__).resolve().parents[1])  # framework importable as here
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "framework.compile_aside"], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        with proc.stdin:  # type: ignore[union-attr]
            proc.stdin.write(argument_types)  # type: ignore[union-attr]
    except OSError:  # no process to spare (or it died at once): compile here, as without it
        return None
    return proc


def wait(proc: subprocess.Popen, timeout_s: float = 600.0) -> None:
    """Wait for ``compile_aside``'s process; one that hangs is stopped (the bar loop is then
    compiled here, as without it)."""
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _compile_bar_loop() -> None:
    """The second process: the bar loop for the argument types on stdin."""
    from framework import drivers_nb

    drivers_nb._group_bars_nb.compile(pickle.load(sys.stdin.buffer))


if __name__ == "__main__":
    _compile_bar_loop()
