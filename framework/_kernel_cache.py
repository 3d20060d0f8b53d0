"""Where numba keeps its on-disk cache for TradPal's kernels.

numba checks a cached function against its own source file only: when a kernel calls another
module's kernel (a strategy calling an indicator, the simulator calling the ATR) and that other
module changes, the caller's cache still holds the old code. TradPal therefore points numba at a
cache folder named by a hash of all of its own kernel sources (``framework/`` and
``strategies/``), so any edit there starts from a fresh cache instead of running stale code.
An explicit ``NUMBA_CACHE_DIR`` from the user is left alone. When the cache root cannot be
written (a read-only home), a warning says so and a folder in the system's temporary directory
is used instead, so ``import framework`` still works.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


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


def sources_digest() -> str:
    """Hash of every Python source in ``framework/`` and ``strategies/``."""
    h = hashlib.sha256()
    for folder in ("framework", "strategies"):
        for path in sorted((_ROOT / folder).rglob("*.py")):
            h.update(str(path.relative_to(_ROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def use_versioned_numba_cache() -> None:
    """Point numba's cache at a folder named by ``sources_digest()`` (unless the user chose one)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    from numba.core import config

    root = tradpal_cache_root() / "numba"
    folder = root / sources_digest()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.utime(folder)  # "last used", for the pruning below
    except OSError as e:  # not even the temporary folder: numba's own default locations apply
        warnings.warn(f"cannot create TradPal's kernel cache {folder} ({e}); numba's default "
                      "cache locations apply", RuntimeWarning, stacklevel=2)
        return
    config.CACHE_DIR = str(folder)
    _prune(root, keep=folder)


def _prune(root: Path, keep: Path, max_age_days: float = 7.0) -> None:
    """Remove caches of source versions unused for ``max_age_days`` (another checkout that
    still uses one only recompiles)."""
    import shutil
    import time

    cutoff = time.time() - max_age_days * 86_400
    for old in root.iterdir():
        if old != keep and old.is_dir() and old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
