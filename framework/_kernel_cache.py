"""Where numba keeps its on-disk cache for TradPal's kernels.

numba checks a cached function against its own source file only: when a kernel calls another
module's kernel (a strategy calling an indicator, the simulator calling the ATR) and that other
module changes, the caller's cache still holds the old code. TradPal therefore points numba at a
cache folder named by a hash of all of its own kernel sources (``framework/`` and
``strategies/``), so any edit there starts from a fresh cache instead of running stale code.
An explicit ``NUMBA_CACHE_DIR`` from the user is left alone.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def tradpal_cache_root() -> Path:
    """``$TRADPAL_CACHE_HOME`` or ``~/.cache/tradpal``."""
    env = os.environ.get("TRADPAL_CACHE_HOME")
    return Path(env) if env else Path.home() / ".cache" / "tradpal"


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
    folder.mkdir(parents=True, exist_ok=True)
    os.utime(folder)  # "last used", for the pruning below
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
