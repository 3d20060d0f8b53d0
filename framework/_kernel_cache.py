"""Where and under which key numba caches TradPal's kernels: per function, by what it depends on.

numba checks a cached function against its own source file only: when a kernel calls another
module's kernel (a strategy calling an indicator, the simulator calling the ATR) and that other
module changes, the caller's cache would still hold the old code. TradPal's kernels therefore
get a cache of their own (``TradPalCache``, set by ``framework.jit.njit`` and, for a strategy's
kernels written with plain ``numba.njit(cache=True)``, by ``adopt``) whose freshness stamp is
``function_digest``: a hash of the function's code and of everything it reads at compile time,
the kernels it calls (recursively), the constants it reads (by value) and TradPal modules it
reads attributes of (by source). An edit recompiles the edited kernels and the kernels that call
them, nothing else; a docstring edited elsewhere recompiles nothing. A strategy defined in a
script's ``__main__`` or a notebook is keyed the same way (by its code, not by its module), so
it is cached too.

These caches live below ``tradpal_cache_root() / "numba"`` (or ``$NUMBA_CACHE_DIR/tradpal`` when
the user chose numba's folder). numba's cache settings for other libraries are left alone. When
the cache root cannot be written (a read-only home), a warning says so and a folder in the
system's temporary directory is used instead, so ``import framework`` still works.
"""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
import tempfile
import types
import warnings
from pathlib import Path

import numpy as np
from numba.core.caching import CompileResultCacheImpl, FunctionCache, _CacheLocator

_fallbacks: dict[Path, Path] = {}  # unwritable root -> the folder used instead


def tradpal_cache_root() -> Path:
    """``$TRADPAL_CACHE_HOME`` or ``~/.cache/tradpal``; when that folder cannot be created or
    written (a read-only home), a private folder in the system's temporary directory instead,
    with a warning (once). Both the numba cache and the strategy drivers (``framework.runner``)
    live below it."""
    env = os.environ.get("TRADPAL_CACHE_HOME")
    preferred = Path(env) if env else Path.home() / ".cache" / "tradpal"
    if preferred in _fallbacks:
        return _fallbacks[preferred]
    try:
        preferred.mkdir(parents=True, exist_ok=True)
        if os.access(preferred, os.W_OK | os.X_OK):
            return preferred
        problem = "the folder is not writable"
    except OSError as e:
        problem = f"{type(e).__name__}: {e}"
    fallback = Path(tempfile.gettempdir()) / f"tradpal-{_user()}"
    if not _private(fallback):  # someone else's folder: generated modules are imported from it
        fallback = Path(tempfile.mkdtemp(prefix="tradpal-"))
    _fallbacks[preferred] = fallback
    warnings.warn(
        f"cannot write TradPal's kernel cache under {preferred} ({problem}); using {fallback} "
        "instead. Set TRADPAL_CACHE_HOME to a writable folder to keep compiled kernels across "
        "sessions.", RuntimeWarning, stacklevel=2)
    return fallback


def _private(folder: Path) -> bool:
    """Create ``folder`` (mode 0700) if needed; True when it is a real folder of this user that
    nobody else can write to."""
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = folder.lstat()
    except OSError:
        return False
    mine = not hasattr(os, "getuid") or st.st_uid == os.getuid()
    return folder.is_dir() and not folder.is_symlink() and mine and not st.st_mode & 0o022


def _user() -> str:
    try:
        return str(os.getuid())
    except AttributeError:  # Windows
        return os.environ.get("USERNAME", "user")


_TOP_PACKAGES = ("framework", "strategies")
_EXTERNAL_ROOTS = tuple(
    os.path.realpath(p) + os.sep
    for p in {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
)


def _external(module_name: str | None) -> bool:
    """True for a module of another library (the standard library, site-packages): its code
    is not TradPal's or the user's, and numba's own cache rules apply to it."""
    if not module_name:
        return True
    top = module_name.partition(".")[0]
    if top in _TOP_PACKAGES:
        return False
    if top in sys.builtin_module_names:
        return True
    path = getattr(sys.modules.get(top), "__file__", None)  # None: a notebook's __main__
    return path is not None and os.path.realpath(path).startswith(_EXTERNAL_ROOTS)


def _is_dispatcher(obj: object) -> bool:
    return hasattr(obj, "py_func") and hasattr(obj, "targetoptions")


_digests: dict[int, tuple[object, str]] = {}  # id(function) -> (function, digest), for this process


def function_digest(func) -> str:
    """Hash of what numba compiles ``func`` (a Python function or a numba dispatcher) from: its
    bytecode and constants, the values of the globals and closure cells it reads (a kernel it
    calls by that kernel's digest, recursively; a number, array or dtype by value; a TradPal or
    user module by its source) and its compile options. Line numbers and the module's other
    functions do not enter it."""
    func = getattr(func, "py_func", func)
    return _function_digest(func, set())


def _function_digest(func, active: set[int]) -> str:
    hit = _digests.get(id(func))
    if hit is not None and hit[0] is func:
        return hit[1]
    if id(func) in active:  # recursion: the cycle is hashed where it was entered
        return f"cycle:{func.__module__}.{func.__qualname__}"
    active.add(id(func))
    h = hashlib.sha256()
    code = func.__code__
    _hash_code(h, code)
    h.update(_value_token(func.__defaults__, active).encode())
    g = func.__globals__
    for name in sorted(_names(code)):
        if name in g:
            h.update(f"|{name}=".encode())
            h.update(_value_token(g[name], active).encode())
    for cell in func.__closure__ or ():
        try:
            h.update(_value_token(cell.cell_contents, active).encode())
        except ValueError:  # an empty cell
            h.update(b"<empty>")
    active.discard(id(func))
    digest = h.hexdigest()[:20]
    _digests[id(func)] = (func, digest)
    return digest


def _names(code) -> set[str]:
    """Global (and attribute) names read by ``code`` and the code objects nested in it."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            names |= _names(const)
    return names


def _hash_code(h, code) -> None:
    for part in (code.co_code, getattr(code, "co_exceptiontable", b"")):
        h.update(part)
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars,
                   code.co_argcount, code.co_kwonlyargcount, code.co_flags)).encode())
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            _hash_code(h, const)
        else:
            h.update(_value_token(const, set()).encode())


def _value_token(value, active: set[int]) -> str:
    """What a compiled kernel depends on in a value it reads (see ``function_digest``)."""
    if _is_dispatcher(value):
        options = sorted((k, repr(v)) for k, v in value.targetoptions.items())
        return f"jit:{_function_digest(value.py_func, active)}:{options}"
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.generic)):
        return f"{type(value).__name__}:{value!r}"
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(_value_token(v, active) for v in value) + ")"
    if isinstance(value, (set, frozenset)):
        return "{" + ",".join(sorted(_value_token(v, active) for v in value)) + "}"
    if isinstance(value, np.ndarray):
        return f"array:{value.dtype.descr}:{value.shape}:{hashlib.sha256(value.tobytes()).hexdigest()}"
    if isinstance(value, np.dtype):
        return f"dtype:{value.descr}"
    if isinstance(value, types.ModuleType):
        if _external(value.__name__):
            return f"module:{value.__name__}"
        return f"module:{value.__name__}:{_file_digest(getattr(value, '__file__', None))}"
    owner = getattr(value, "__module__", None)
    if isinstance(value, types.FunctionType) and not _external(owner):
        return f"py:{_function_digest(value, active)}"  # numba compiles it too (register_jitable)
    name = getattr(value, "__qualname__", type(value).__qualname__)
    if _external(owner) or owner is None:
        return f"object:{owner}.{name}"
    # anything else of TradPal's or the user's (a class, an enum): by its module's source
    module = sys.modules.get(owner)
    return f"object:{owner}.{name}:{_file_digest(getattr(module, '__file__', None))}"


def _file_digest(path: str | None) -> str:
    if path is None:
        return "-"
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:20]
    except OSError:
        return "-"


def numba_cache_root() -> Path:
    """The folder of TradPal's numba caches: ``$NUMBA_CACHE_DIR/tradpal`` when the user chose
    numba's folder, else ``tradpal_cache_root() / "numba"``."""
    from numba.core import config

    chosen = config.CACHE_DIR or os.environ.get("NUMBA_CACHE_DIR")
    return Path(chosen) / "tradpal" if chosen else tradpal_cache_root() / "numba"


class _Locator(_CacheLocator):
    """Places a function's cache by its source folder (interactive code in one folder)."""

    def __init__(self, py_func, py_file):
        self._py_func = py_func
        root = numba_cache_root()
        if os.path.isfile(py_file):
            self._path = root / self.get_suitable_cache_subpath(py_file)
        else:  # a notebook cell, exec'd source: keyed by its code alone
            self._path = root / "interactive"

    def get_cache_path(self) -> str:
        return str(self._path)

    def get_source_stamp(self):
        return None  # replaced by the function's digest when the cache is read or written

    def get_disambiguator(self) -> str:
        return ""

    @classmethod
    def from_function(cls, py_func, py_file):
        self = cls(py_func, py_file)
        try:
            self.ensure_cache_path()
        except OSError:
            return None
        return self


class _Impl(CompileResultCacheImpl):
    _locator_classes = [_Locator]

    def __init__(self, py_func):
        super().__init__(py_func)
        # by module and name, not by file name and line: a moved function keeps its cache,
        # and a notebook's functions are found again in the next session
        name = f"{py_func.__module__}.{py_func.__qualname__}".replace("<", "").replace(">", "")
        self._filename_base = f"{name}.py{sys.version_info[0]}{sys.version_info[1]}"


class TradPalCache(FunctionCache):
    """numba's per-function disk cache, fresh as long as ``function_digest`` is unchanged."""

    _impl_class = _Impl

    def _fresh(self) -> None:
        # the digest needs every global the function reads, so it is taken at the first use
        # (a compile), not when the function is decorated
        self._cache_file._source_stamp = function_digest(self._py_func)

    def load_overload(self, sig, target_context):
        self._fresh()
        return super().load_overload(sig, target_context)

    def save_overload(self, sig, data):
        self._fresh()
        super().save_overload(sig, data)


def is_cached(dispatcher) -> bool:
    """Whether ``dispatcher`` (a kernel with ``TradPalCache``) has a version on disk compiled
    from its current code (for any argument types)."""
    cache = getattr(dispatcher, "_cache", None)
    if not isinstance(cache, TradPalCache):
        return False
    cache._fresh()
    return bool(cache._cache_file._load_index())


def use_tradpal_cache(dispatcher) -> None:
    """Cache ``dispatcher`` (a numba ``@njit`` function) with ``TradPalCache``."""
    try:
        dispatcher._cache = TradPalCache(dispatcher.py_func)
    except RuntimeError as e:  # no cache folder at all: compile in memory, as numba would
        warnings.warn(f"cannot cache {dispatcher.py_func.__qualname__}: {e}", RuntimeWarning, stacklevel=2)


def adopt(func) -> None:
    """Give the kernels ``func`` reaches (itself included) that asked numba for an on-disk cache
    (``cache=True``) TradPal's cache instead, unless they belong to another library: for a
    strategy's kernels written with ``numba.njit(cache=True)``, whose callers' caches must
    follow TradPal's kernels they call."""
    seen: set[int] = set()
    todo = [func]
    while todo:
        f = todo.pop()
        if id(f) in seen:
            continue
        seen.add(id(f))
        if _is_dispatcher(f):
            if (type(f._cache) is FunctionCache and not _external(f.py_func.__module__)):
                use_tradpal_cache(f)
            f = f.py_func
        if not isinstance(f, types.FunctionType) or _external(f.__module__):
            continue
        g = f.__globals__
        todo.extend(g[n] for n in _names(f.__code__) if n in g and
                    (_is_dispatcher(g[n]) or isinstance(g[n], types.FunctionType)))
