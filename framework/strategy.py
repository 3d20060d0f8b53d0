"""Strategy objects: declared parameters, numba kernels for the indicators and the signal rule.

A strategy is one small class::

    class SmaCross(Strategy):
        name = "sma_cross"
        fast = Param(10, low=1, high=10_000, doc="fast SMA window (bars)")
        slow = Param(30, low=2, high=10_000, doc="slow SMA window (bars)")
        indicators = ("sma(close, fast)", "sma(close, slow)")
        init_nb = staticmethod(init_nb)      # njit (params) -> tuple of float64 state arrays
        decide_nb = staticmethod(decide_nb)  # bar_njit (state, o, h, l, c, v, pos, params, intent)

``params`` inside the kernels is a float64 vector in the order the parameters are declared.
``decide_nb`` sees one closed bar and the column's signed position quantity ``pos`` after that
bar's fills, updates its indicator states and writes an intent (``framework.enums.INTENT_*``;
the runner resets it to "no action, market order" before each call). Sizing, stops and risk
limits are the simulator's business, so one rule serves every configuration. The backtester and the live runner both call it once per
bar per column (see ``framework.runner``).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class Param:
    """A strategy parameter: default, inclusive valid range, and a one-line description.

    The type is the default's type: an ``int`` default makes an integer parameter (windows in
    bars), a ``float`` default a real one, a ``bool`` default a flag.
    """

    default: int | float | bool
    low: float | None = None
    high: float | None = None
    doc: str = ""

    @property
    def kind(self) -> type:
        return type(self.default)

    def range_text(self) -> str:
        kind = {int: "an integer", float: "a number", bool: "true or false"}[self.kind]
        if self.kind is bool:
            return kind
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{kind} in [{lo}, {hi}]"

    def check(self, owner: str, name: str, value: Any) -> int | float | bool:
        """Return ``value`` if valid for this parameter, else raise ``ValueError`` saying why."""
        ok = False
        if self.kind is bool:
            ok = isinstance(value, (bool, np.bool_))
        elif self.kind is int:
            ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
        else:
            ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
            ok = ok and bool(np.isfinite(value))
        if ok and self.kind is not bool:
            ok = (self.low is None or value >= self.low) and (self.high is None or value <= self.high)
        if not ok:
            raise ValueError(
                f"{owner}: parameter '{name}' must be {self.range_text()}, got {value!r}"
            )
        return self.kind(value)

    def parse(self, owner: str, name: str, text: str) -> int | float | bool:
        """Parse a command-line value (``"20"``, ``"0.5"``, ``"true"``) and check it."""
        try:
            if self.kind is bool:
                lowered = text.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value: Any = lowered in ("true", "1", "yes")
            elif self.kind is int:
                value = int(text)
            else:
                value = float(text)
        except ValueError:
            raise ValueError(
                f"{owner}: parameter '{name}' must be {self.range_text()}, got {text!r}"
            ) from None
        return self.check(owner, name, value)


class Strategy:
    """Base class of every strategy. Subclasses declare ``Param`` class attributes and kernels.

    Instantiate with keyword overrides: ``SmaCross(fast=5, slow=50)``. Unknown names and values
    outside the declared range raise ``ValueError`` naming the parameter and the valid range;
    ``check`` adds rules between parameters (e.g. fast < slow).
    """

    name: ClassVar[str] = ""
    #: simulator settings this strategy is meant to run with (e.g. risk sizing); overridable
    sim_defaults: ClassVar[dict[str, Any]] = {}
    #: the indicators ``init_nb`` builds, as readable calls on price fields and parameter names
    #: (``"sma(close, fast)"``); listed by ``tradpal strategies``
    indicators: ClassVar[tuple[str, ...]] = ()
    init_nb: ClassVar[Any]
    decide_nb: ClassVar[Any]

    def __init__(self, **params: Any) -> None:
        spec = self.param_spec()
        unknown = sorted(set(params) - set(spec))
        if unknown:
            raise ValueError(
                f"{self.label()} has no parameter {', '.join(repr(u) for u in unknown)}; "
                f"valid parameters: {', '.join(spec) or 'none'}"
            )
        values = {k: p.default for k, p in spec.items()}
        for key, value in params.items():
            values[key] = spec[key].check(self.label(), key, value)
        self.params: dict[str, int | float | bool] = values
        self.check()

    @classmethod
    def label(cls) -> str:
        return cls.name or cls.__name__

    @classmethod
    def param_spec(cls) -> dict[str, Param]:
        """Declared parameters in declaration order (base classes first)."""
        spec: dict[str, Param] = {}
        for klass in reversed(cls.__mro__):
            for key, value in vars(klass).items():
                if isinstance(value, Param):
                    spec[key] = value
        return spec

    @classmethod
    def from_strings(cls, pairs: list[str]) -> Strategy:
        """Build from ``["fast=5", "slow=20"]`` as typed on a command line."""
        spec = cls.param_spec()
        values: dict[str, Any] = {}
        for pair in pairs:
            key, sep, text = pair.partition("=")
            key = key.strip()
            if not sep:
                raise ValueError(f"--param expects name=value, got {pair!r}")
            if key not in spec:
                raise ValueError(
                    f"{cls.label()} has no parameter {key!r}; valid parameters: {', '.join(spec)}"
                )
            values[key] = spec[key].parse(cls.label(), key, text)
        return cls(**values)

    def check(self) -> None:
        """Rules between parameters; raise ``ValueError`` naming them. Override as needed."""

    def require_less(self, small: str, large: str) -> None:
        """Raise unless parameter ``small`` < parameter ``large`` (e.g. fast < slow windows)."""
        if not self.params[small] < self.params[large]:
            raise ValueError(
                f"{self.label()}: '{small}' must be less than '{large}', "
                f"got {small}={self.params[small]} and {large}={self.params[large]}"
            )

    def param_vector(self) -> np.ndarray:
        """Parameters as the float64 vector the kernels read, in declaration order."""
        return np.array([float(v) for v in self.params.values()], dtype=np.float64)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.params == self.params  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), tuple(self.params.items())))
