"""Packaging: the runtime (``pip install .`` without extras) imports without the research and
test tools."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: top-level modules of the ``research`` and ``test`` extras (and what they pull in)
EXTRA_MODULES = ("vectorbt", "backtesting", "psutil", "jupyterlab", "ipykernel", "distributed", "dask",
                 "nbclient", "nbconvert", "pytest", "hypothesis", "ruff", "websocket", "httpx")

_BLOCK = """
import importlib, importlib.abc, pkgutil, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} belongs to an extra")
sys.meta_path.insert(0, Block())
for package in ("framework", "live", "strategies"):
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        if info.name != "framework.vbt_bridge":  # the vectorbt bridge: research extra, imported lazily
            importlib.import_module(info.name)
print("ok")
"""


def test_the_runtime_imports_without_the_extras():
    out = subprocess.run([sys.executable, "-c", _BLOCK, ",".join(EXTRA_MODULES)], capture_output=True,
                         text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_runtime_pins_are_ranges_except_the_numerics():
    """numpy, numba, pandas (the kernels' numerics) are pinned exactly; the others are ranges
    within the tested major version."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    exact = {d.split("==")[0] for d in deps if "==" in d}
    assert exact == {"numpy", "numba", "pandas", "scipy"}
    for dep in deps:
        if "==" not in dep:
            assert ">=" in dep and ",<" in dep, dep
