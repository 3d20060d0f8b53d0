"""Compile the kernels of ``make demo``'s backtest ahead of it, into the kernel cache.

The install step of the ``Makefile`` runs ``python -m framework.warmup`` last. It backtests the
demo's strategy on the demo's data cut to one year, through the demo's own command, so what it
compiles is what the demo would compile: the simulator (compiled once for every strategy,
``framework.drivers_nb``), the SMA crossover's kernels and the statistics, with the same
argument types. They are cached on disk (``framework._kernel_cache``, under
``TRADPAL_CACHE_HOME``), and the first ``make demo`` after the install loads them. Another
strategy then compiles only its own kernels, a second or two.

This moves the compile, it does not shorten it: a fresh cache still pays it once (see
``research/bench_compile.py``, which reports both figures). What shortens it: on a cold cache
``Backtest.run`` starts a second process (``compile_aside``) that compiles the simulator's bar
loop for the argument types of the run, while the first compiles the strategy's kernels and the
result's (trades, cash and positions, statistics: on a made-up result with the types of a real
one, ``compile_results``), then loads the bar loop from the cache.
``TRADPAL_COMPILE_ASIDE=0`` turns that off (it is off on a machine with one core).

    python -m framework.warmup
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

#: ``make demo``'s command line (without the program name)
DEMO_ARGS = ["backtest", "sma_cross", "--data", "BTC_USDT-1d"]
#: the warm-up: the same command on one year of the same bars
WARM_UP_ARGS = [*DEMO_ARGS, "--start", "2023-01-01", "--end", "2023-12-31"]


#: set in the second process, which must not start another
_ASIDE_ENV = "TRADPAL_COMPILE_ASIDE"


def _cached(kernel) -> bool:
    """Whether ``kernel`` (a dispatcher with TradPal's cache) has a compiled version on disk
    for its current code."""
    cache = getattr(kernel, "_cache", None)
    if not hasattr(cache, "_fresh"):
        return False
    cache._fresh()
    return bool(cache._cache_file._load_index())


def compile_aside(o, h, l, c, v, ts, sp, simp) -> subprocess.Popen | None:
    """On a cold cache, start ``python -m framework.warmup --simulator`` to compile the
    simulator's bar loop (``framework.drivers_nb._group_bars_nb``, the longest compile) for the
    arguments ``backtest_nb`` will pass it with these prices, times, parameter and settings rows,
    and return it: the caller compiles the strategy's kernels and the result's
    (``compile_results``) meanwhile, then waits for it and loads the bar loop from the cache.
    None when there is nothing to gain: the bar loop compiled here or cached, one core, a
    worker of a ``multiprocessing`` pool, ``TRADPAL_COMPILE_ASIDE=0``, or this is that second
    process. Which process compiles a
    kernel never changes what it computes; if the second one fails, the first compiles the bar
    loop itself, as without it."""
    from numba.core import config

    from framework import drivers_nb

    if config.DISABLE_JIT or os.environ.get(_ASIDE_ENV, "1") == "0" or (os.cpu_count() or 1) < 2:
        return None
    if multiprocessing.parent_process() is not None:  # a pool's worker: its siblings use the cores
        return None
    if getattr(sys, "frozen", False) or not Path(sys.executable or "-").name.lower().startswith("python"):
        return None  # embedded or frozen: sys.executable is not an interpreter to start
    loop = drivers_nb._group_bars_nb
    if loop.overloads or _cached(loop):
        return None
    try:
        argument_types = pickle.dumps(drivers_nb.group_bars_types(o, h, l, c, v, ts, sp, simp))
    except Exception:  # noqa: BLE001 (an argument numba cannot type, or pickle: compile here)
        return None
    env = dict(os.environ, **{_ASIDE_ENV: "0"})
    root = str(Path(__file__).resolve().parents[1])  # framework importable as here
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "framework.warmup", "--simulator"], env=env,
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
    """The second process of ``compile_aside``: the bar loop for the argument types on stdin."""
    from framework import drivers_nb

    drivers_nb._group_bars_nb.compile(pickle.load(sys.stdin.buffer))


def compile_results() -> None:
    """Compile the simulator's state set-up and the kernels of a backtest's result: build one
    from a made-up simulator output (a round trip on eight daily bars, arrays of the simulator's
    types) and read what ``tradpal backtest`` prints and keeps: statistics beside buy-and-hold,
    orders, fills, trades, positions."""
    import numpy as np
    import pandas as pd

    from framework import enums, sim_nb
    from framework.backtest import Backtest
    from framework.settings import SimSettings
    from strategies.sma_cross import SmaCross

    sim_nb.init_state_nb(1, SimSettings().vector(365.0))
    n = 8
    close = 100.0 + np.arange(n, dtype=np.float64)
    frame = pd.DataFrame({"open": close, "high": close + 1.0, "low": close - 1.0, "close": close,
                          "volume": np.full(n, 10.0)},
                         index=pd.date_range("2024-01-01", periods=n, freq="1D", tz="UTC"))
    bt = Backtest(SmaCross(fast=2, slow=3), frame)
    fills = np.zeros(2, dtype=enums.fill_dt)
    fills["order_id"] = [0, 1]
    fills["bar"] = [2, 5]
    fills["side"] = [1, -1]
    fills["qty"] = 1.0
    fills["price"] = close[[2, 5]]
    fills["fee_ccy"] = enums.FEE_QUOTE
    fills["order_type"] = enums.ORDER_MARKET
    fills["reason"] = enums.REASON_SIGNAL
    equity = np.full((n, 1), bt.settings.init_cash)
    result = bt.result_of(equity, fills, np.zeros(0, dtype=enums.event_dt), np.array([0, 1], dtype=np.int64))
    result.stats_table()
    result.orders, result.fills, result.trades, result.positions  # noqa: B018 (compiled when read)


def main() -> int:
    """Run the warm-up quietly; one line on stderr says how long it took. With ``--simulator``,
    the second process of ``compile_aside``."""
    if sys.argv[1:] == ["--simulator"]:
        _compile_bar_loop()
        return 0
    from framework import cli

    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(WARM_UP_ARGS)
    print(f"tradpal: compiled the demo's kernels in {time.perf_counter() - started:.1f} s "
          "(cached for later runs)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
