"""How TradPal compiles its kernels: ``njit`` (numba's, cached by dependency), and ``bar_njit``.

``njit`` takes numba's ``njit`` arguments; ``cache=True`` caches the kernel on disk with
``framework._kernel_cache.TradPalCache``, which is fresh as long as the kernel's code and
everything it calls and reads are unchanged (numba's own cache only looks at the kernel's file).
A signature given to it is compiled at once, as with numba, and no other.

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
kernel), because it multiplies compile time by the number of callers (the simulator is
compiled once for all strategies, see ``framework.drivers_nb``, so that is paid once).
"""

from __future__ import annotations

from numba.core import config, types
from numba.core.registry import CPUDispatcher

from framework._kernel_cache import use_tradpal_cache


def njit(signature=None, /, *, cache: bool = False, internal: bool = False,
         per_constant: bool = False, **options):
    """``numba.njit``, with ``cache=True`` meaning TradPal's dependency-keyed disk cache, and
    one specialisation per argument type (see ``_Dispatcher``) unless ``per_constant=True``.

    ``internal=True`` is for a kernel that only other kernels call, never Python: numba then
    builds no CPython and C wrappers around it (unboxing each argument, boxing the result),
    which for the simulator's helpers with their many arguments was about a seventh of a
    cold compile. Called from Python, such a kernel raises TypeError.
    """
    if internal:
        options = {**options, "no_cpython_wrapper": True, "no_cfunc_wrapper": True}
    kind = _KINDS[internal, per_constant]
    if callable(signature):  # used bare, as ``@njit``
        return _compile(kind, signature, None, cache, options)
    return lambda func: _compile(kind, func, signature, cache, options)


class _Dispatcher(CPUDispatcher):
    """numba's dispatcher, compiling one specialisation per argument *type*, not per constant.

    Called from another kernel with a constant argument (``_event(..., 0, ...)``), numba's own
    dispatcher compiles a version for that value (``Literal[int](0)``), one more per distinct
    constant: the simulator's helpers were compiled up to 21 times each, about a third of the
    demo's first (cold-cache) backtest. The value would let numba prune a branch or two, which
    LLVM does anyway when it inlines the callee. Where it does not, and the constants are few,
    ``njit(per_constant=True)`` keeps numba's way: the indicators' window helpers, called with
    two or three constant offsets each, are 10 % of a backtest's time per bar faster for it."""

    per_constant = False

    def get_call_template(self, args, kws):
        if not self.per_constant:
            args = tuple(types.unliteral(a) for a in args)
            kws = {k: types.unliteral(v) for k, v in kws.items()}
        return super().get_call_template(args, kws)


class _PerConstant(_Dispatcher):
    per_constant = True


class _Internal(_Dispatcher):
    """An ``internal`` kernel: without a CPython wrapper numba would jump to a null entry point
    (a crash), so a call from Python raises instead."""

    def __call__(self, *args, **kwargs):
        raise TypeError(f"{self.py_func.__qualname__} is compiled for calls from other kernels "
                        "only (njit(internal=True))")


class _InternalPerConstant(_Internal):
    per_constant = True


# module-level classes (not made on the fly): a dispatcher pickles by its class's name (Dask)
_KINDS = {(False, False): _Dispatcher, (False, True): _PerConstant,
          (True, False): _Internal, (True, True): _InternalPerConstant}


def _compile(kind: type, func, signature, cache: bool, options: dict):
    if config.DISABLE_JIT:
        return func
    dispatcher = kind(py_func=func, locals={},
                      targetoptions={"nopython": True, "boundscheck": None, **options})
    if cache:
        use_tradpal_cache(dispatcher)
    if signature is not None:
        for sig in signature if isinstance(signature, list) else [signature]:
            dispatcher.compile(sig)
        dispatcher.disable_compile()
    return dispatcher


#: decorator for per-bar kernels: cached to disk, no reference counting (no allocation inside)
bar_njit = njit(cache=True, _nrt=False)
#: the same, for the helpers only other kernels call (``internal``, see ``njit``)
bar_njit_internal = njit(cache=True, _nrt=False, internal=True)
#: the same, compiled once per constant its callers pass (``per_constant``, see ``njit``)
bar_njit_internal_per_constant = njit(cache=True, _nrt=False, internal=True, per_constant=True)
#: the same, inlined into its callers at numba-IR level: for small helpers of a per-bar kernel
bar_njit_inline = njit(cache=True, _nrt=False, inline="always")
