"""How TradPal compiles its kernels: ``@njit(cache=True)``, and ``bar_njit`` for per-bar ones.

``bar_njit`` is for the kernels called once per bar per column, deep inside the backtest loop
and from the live runner: indicator updates, the simulation step and its helpers, a strategy's
``decide_nb``. They never allocate, so they are compiled without numba's reference-counting
runtime (NRT). With it, numba wraps every array argument of every call in an atomic reference
count increment and decrement; at a few nanoseconds each, that bookkeeping was most of the
per-bar time (research/bench_core.py measures it). A ``bar_njit`` kernel that tries to
allocate an array fails to compile, loudly, rather than silently slowing down.

Kernels that allocate (``*_init_nb``, array loops over history, record builders) stay on
plain ``@njit(cache=True)``.

``_nrt`` is a numba compiler option with a leading underscore, so this module is the one place
that names it; numba is pinned in ``pyproject.toml`` and every kernel test exercises it.
``bar_njit_inline`` additionally inlines the function into its callers at numba-IR level; it is
kept for the few calls where that measurably pays (``fill_nb``/``order_nb`` into the per-bar
kernel), because it multiplies compile time by the number of callers.
"""

from __future__ import annotations

from numba import njit

#: decorator for per-bar kernels: cached to disk, no reference counting (no allocation inside)
bar_njit = njit(cache=True, _nrt=False)
#: the same, inlined into its callers at numba-IR level: for small helpers of a per-bar kernel
bar_njit_inline = njit(cache=True, _nrt=False, inline="always")
