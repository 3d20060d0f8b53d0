"""The strategies that ship with TradPal, by name, and the user's own.

A strategy is named in one of three ways (:func:`get_strategy`):

- a bundled name (``"sma_cross"``, the keys of ``STRATEGIES``);
- ``"path/to/file.py:ClassName"``: the ``Strategy`` subclass ``ClassName`` defined in that file;
- the ``name`` of a ``Strategy`` subclass defined in a ``.py`` file of a folder listed in
  ``$TRADPAL_STRATEGY_PATH`` (folders separated by ``os.pathsep``, ``:`` on Unix).

A user file is imported under a stable module name derived from its absolute path
(``tradpal_user_<stem>_<hash>``), so the drivers compiled for its strategies are cached on
disk and reused by later processes like those of the bundled ones (``framework.runner``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
from pathlib import Path

from framework.strategy import Strategy
from strategies.bollinger_reversion import BollingerReversion
from strategies.donchian_breakout import DonchianBreakout
from strategies.macd_trend import MacdTrend
from strategies.rsi_reversion import RsiReversion
from strategies.sma_cross import SmaCross

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (SmaCross, RsiReversion, MacdTrend, BollingerReversion, DonchianBreakout)
}

STRATEGY_PATH_ENV = "TRADPAL_STRATEGY_PATH"


def _module_name(path: Path) -> str:
    """A stable, importable module name for a user file: the same file gets the same name in
    every process (the compiled drivers import the strategy by it)."""
    stem = re.sub(r"\W", "_", path.stem)
    return f"tradpal_user_{stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"


def load_module(path: str | Path):
    """Import a user's strategy file (once per process) under its stable module name."""
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise FileNotFoundError(f"no strategy file {str(path)!r} (looked for {file})")
    if file.suffix != ".py":
        raise ValueError(f"strategy file {str(path)!r} is not a .py file")
    name = _module_name(file)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before executing: dataclasses and numba look the module up
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise ValueError(f"strategy file {str(path)!r} failed to import: "
                         f"{type(e).__name__}: {e}") from None
    return module


def _defined_strategies(module) -> list[type[Strategy]]:
    """The Strategy subclasses a module defines (not those it imports)."""
    return [v for v in vars(module).values()
            if isinstance(v, type) and issubclass(v, Strategy) and v is not Strategy
            and v.__module__ == module.__name__]


def load_strategy_file(spec: str) -> type[Strategy]:
    """The class named by ``"path/to/file.py:ClassName"``."""
    path, _, class_name = spec.rpartition(":")
    if not path or not class_name:
        raise ValueError(f"expected path/to/file.py:ClassName, got {spec!r}")
    module = load_module(path)
    cls = getattr(module, class_name, None)
    if cls is None:
        found = ", ".join(c.__name__ for c in _defined_strategies(module)) or "none"
        raise ValueError(f"{path} defines no {class_name!r}; Strategy subclasses in it: {found}")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ValueError(f"{path}:{class_name} is not a Strategy subclass (it is "
                         f"{type(cls).__name__} {cls!r}); derive it from framework.strategy.Strategy")
    return cls


def user_strategies() -> dict[str, type[Strategy]]:
    """The strategies defined in the ``.py`` files of the ``$TRADPAL_STRATEGY_PATH`` folders,
    by their ``name`` (class name if unset). A name given twice, or taken by a bundled
    strategy, is an error naming both places: one of them would otherwise be silently hidden."""
    found: dict[str, type[Strategy]] = {}
    for folder in filter(None, os.environ.get(STRATEGY_PATH_ENV, "").split(os.pathsep)):
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"${STRATEGY_PATH_ENV} lists {folder!r}, which is not a folder")
        for file in sorted(Path(folder).glob("*.py")):
            if file.name.startswith("_"):
                continue
            for cls in _defined_strategies(load_module(file)):
                name = cls.label()
                other = STRATEGIES.get(name) or found.get(name)
                if other is not None and other is not cls:
                    raise ValueError(
                        f"strategy name {name!r} is defined twice: in {file} and in "
                        f"{sys.modules[other.__module__].__file__}; rename one")
                found[name] = cls
    return found


def all_strategies() -> dict[str, type[Strategy]]:
    """Bundled strategies and those of ``$TRADPAL_STRATEGY_PATH``, by name."""
    return {**STRATEGIES, **user_strategies()}


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class named ``name``: bundled, ``path/to/file.py:ClassName`` or one from
    ``$TRADPAL_STRATEGY_PATH``; the error lists the valid names."""
    if ":" in name and name.rpartition(":")[0].endswith(".py"):
        return load_strategy_file(name)
    known = all_strategies()
    try:
        return known[name]
    except KeyError:
        raise ValueError(
            f"unknown strategy {name!r}; available: {', '.join(sorted(known))}, or "
            "path/to/file.py:ClassName for your own"
        ) from None
