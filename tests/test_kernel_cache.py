"""numba's cache folder follows the kernel sources, so an edit never runs stale cached code."""

import os
import time

from numba.core import config

from framework import _kernel_cache


def test_numba_cache_points_at_the_current_sources():
    if os.environ.get("NUMBA_CACHE_DIR"):
        assert config.CACHE_DIR == os.environ["NUMBA_CACHE_DIR"]
    else:
        expected = _kernel_cache.tradpal_cache_root() / "numba" / _kernel_cache.sources_digest()
        assert config.CACHE_DIR == str(expected)


def test_digest_changes_with_any_kernel_source(tmp_path, monkeypatch):
    for folder in ("framework", "strategies"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "k.py").write_text("x = 1\n")
    monkeypatch.setattr(_kernel_cache, "_ROOT", tmp_path)
    first = _kernel_cache.sources_digest()
    assert _kernel_cache.sources_digest() == first
    (tmp_path / "strategies" / "k.py").write_text("x = 2\n")
    assert _kernel_cache.sources_digest() != first


def test_old_versions_are_pruned_current_one_kept(tmp_path):
    keep, recent, stale = (tmp_path / n for n in ("keep", "recent", "stale"))
    for d in (keep, recent, stale):
        d.mkdir()
    month_ago = time.time() - 30 * 86_400
    os.utime(stale, (month_ago, month_ago))
    os.utime(keep, (month_ago, month_ago))
    _kernel_cache._prune(tmp_path, keep=keep)
    assert keep.exists() and recent.exists() and not stale.exists()
