"""numba's cache folder follows the kernel sources, so an edit never runs stale cached code."""

import hashlib
import os
import time
from pathlib import Path

import pytest
from numba.core import config

from framework import _kernel_cache

ROOT = Path(__file__).resolve().parents[1]


def digest_of(root: Path) -> str:
    """The documented digest, computed here from the files: SHA-256 over every ``*.py`` under
    ``framework/`` and ``strategies/`` in sorted path order, each as its relative POSIX path
    then its bytes; the first 16 hex digits."""
    files = sorted(p for d in ("framework", "strategies") for p in (root / d).rglob("*.py"))
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def test_numba_cache_points_at_the_current_sources():
    if os.environ.get("NUMBA_CACHE_DIR"):
        assert config.CACHE_DIR == os.environ["NUMBA_CACHE_DIR"]
    else:
        expected = _kernel_cache.tradpal_cache_root() / "numba" / digest_of(ROOT)
        assert config.CACHE_DIR == str(expected)


@pytest.mark.parametrize("edited", ["framework/k.py", "strategies/k.py", "framework/nb/deep.py"])
def test_digest_changes_with_any_kernel_source(tmp_path, monkeypatch, edited):
    for rel in ("framework/k.py", "strategies/k.py", "framework/nb/deep.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    (tmp_path / "framework" / "notes.txt").write_text("not a source")
    monkeypatch.setattr(_kernel_cache, "_ROOT", tmp_path)
    first = _kernel_cache.sources_digest()
    assert first == digest_of(tmp_path)
    (tmp_path / "framework" / "notes.txt").write_text("edited, still not a source")
    assert _kernel_cache.sources_digest() == first
    (tmp_path / edited).write_text("x = 2\n")
    assert _kernel_cache.sources_digest() == digest_of(tmp_path) != first


def test_old_versions_are_pruned_current_one_kept(tmp_path):
    keep, recent, stale = (tmp_path / n for n in ("keep", "recent", "stale"))
    for d in (keep, recent, stale):
        d.mkdir()
    month_ago = time.time() - 30 * 86_400
    os.utime(stale, (month_ago, month_ago))
    os.utime(keep, (month_ago, month_ago))
    _kernel_cache._prune(tmp_path, keep=keep)
    assert keep.exists() and recent.exists() and not stale.exists()
