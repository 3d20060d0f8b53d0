"""Compile the kernels of ``make demo``'s backtest ahead of it, into the kernel cache.

The install step of the ``Makefile`` runs ``python -m framework.warmup`` last. It backtests the
demo's strategy on the demo's data cut to one year, through the demo's own command, so what it
compiles is what the demo would compile: the simulator (compiled once for every strategy,
``framework.drivers_nb``), the SMA crossover's kernels and the statistics, with the same
argument types. They are cached on disk (``framework._kernel_cache``, under
``TRADPAL_CACHE_HOME``), and the first ``make demo`` after the install loads them. Another
strategy then compiles only its own kernels, a second or two.

This moves the compile, it does not shorten it: a fresh cache still pays it once (see
``research/bench_compile.py``, which reports both figures); what shortens it on a cold cache is
``framework.compile_aside``.

    python -m framework.warmup
"""

from __future__ import annotations

import contextlib
import io
import sys
import time

#: ``make demo``'s command line (without the program name)
DEMO_ARGS = ["backtest", "sma_cross", "--data", "BTC_USDT-1d"]
#: the warm-up: the same command on one year of the same bars
WARM_UP_ARGS = [*DEMO_ARGS, "--start", "2023-01-01", "--end", "2023-12-31"]


def main() -> int:
    """Run the warm-up quietly; one line on stderr says how long it took."""
    from framework import cli

    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(WARM_UP_ARGS)
    print(f"tradpal: compiled the demo's kernels in {time.perf_counter() - started:.1f} s "
          "(cached for later runs)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
