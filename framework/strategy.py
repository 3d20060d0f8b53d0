"""Strategy objects: declared parameters, numba kernels for the indicators and the signal rule.

A strategy is one small class::

    class SmaCross(Strategy):
        name = "sma_cross"
        fast = Param(10, low=1, high=10_000, doc="fast SMA window (bars)")
        slow = Param(30, low=2, high=10_000, doc="slow SMA window (bars)")
        indicators = ("sma(close, fast)", "sma(close, slow)")
        init_nb = staticmethod(init_nb)      # njit (params) -> tuple of float64 state arrays
        decide_nb = staticmethod(decide_nb)  # bar_njit (state, o, h, l, c, v, pos, params, intent)

``params`` inside the kernels is a float64 vector in the order the parameters are declared,
read through module-level constants named after the parameters in upper case (``FAST, SLOW =
0, 1`` beside the kernels, read as ``p[FAST]``). Class creation checks them against the
declaration (see ``check_param_indices``): a constant at the wrong position, a declared
parameter without its constant, or a kernel reading ``p[X]`` for an ``X`` that is no declared
parameter (or a literal index past the last one) raises ``TypeError`` naming the mismatch, so a
kernel never reads the wrong slot or memory past the vector.
``decide_nb`` sees one closed bar and the column's signed position quantity ``pos`` after that
bar's fills, updates its indicator states and writes an intent (``framework.enums.INTENT_*``;
the runner resets it to "no action, market order" before each call). Sizing, stops and risk
limits are the simulator's business, so one rule serves every configuration. The backtester and the live runner both call it once per
bar per column (see ``framework.runner``).
"""

from __future__ import annotations

import dis
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class SharedIndicator:
    """An indicator a sweep computes once per distinct parameter value and shares among the
    combinations that use that value (``Strategy.shared``).

    ``kernel(x, value) -> array`` is the indicator's array kernel over the price ``field``
    ("open", "high", "low", "close" or "volume"), e.g. ``sma_nb``: the loop of the very update
    ``decide_nb`` calls (``framework.indicators_nb``), so the shared values equal the streamed
    ones to the last bit. ``param`` names the strategy parameter that keys it (the window).
    """

    kernel: Any
    field: str
    param: str


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
    #: optional, for sweeps: indicators keyed by one parameter each (``SharedIndicator``), and
    #: ``decide_shared_nb(values, state, o, h, l, c, v, pos, params, intent)``, the rule of
    #: ``decide_nb`` reading their values at this bar from ``values`` (in the order of
    #: ``shared``) instead of updating them. A sweep then computes each distinct indicator once
    #: per instrument; its statistics still equal ``Backtest``'s, which runs ``decide_nb``.
    shared: ClassVar[tuple[SharedIndicator, ...]] = ()
    decide_shared_nb: ClassVar[Any] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_param_indices(cls)
        check_shared(cls)

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
    def parse_params(cls, pairs: list[str]) -> dict[str, int | float | bool]:
        """Parameter values typed and range-checked from ``["fast=5", "slow=20"]`` as typed on a
        command line (``--param``); a parameter given twice is an error, not the last one wins."""
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
            if key in values:
                raise ValueError(f"--param {key} given twice ({values[key]!r} and {text.strip()!r}); "
                                 "give each parameter once")
            values[key] = spec[key].parse(cls.label(), key, text)
        return values

    @classmethod
    def from_strings(cls, pairs: list[str]) -> Strategy:
        """Build from ``["fast=5", "slow=20"]`` as typed on a command line."""
        return cls(**cls.parse_params(pairs))

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

    # --- how the drivers run it (a vectorised strategy, framework.vector, overrides these) ---

    @classmethod
    def driver_class(cls) -> type[Strategy]:
        """The class whose ``init_nb`` / ``decide_nb`` the compiled drivers call
        (``framework.runner.drivers``): the class itself."""
        return cls

    def kernel_params(self, prices: list[np.ndarray], times_ns: np.ndarray) -> np.ndarray:
        """A backtest's (columns, m) rows of the kernels' parameter vector over the (bars,
        columns) ``prices`` (open, high, low, close, volume) at ``times_ns``: the parameter
        vector for every column."""
        return np.ascontiguousarray(np.tile(self.param_vector(), (prices[3].shape[1], 1)))

    def verify_causality(self, frame: Any, seed: int = 0) -> None:
        """Check that the signals on ``frame`` use no later bar (before a backtest result and
        before promotion); raises ``ValueError`` naming the bar. Nothing to check here: a
        ``decide_nb`` sees one closed bar at a time."""

    def bar_feed(self, n_columns: int) -> Any:
        """What a ``BarStepper`` calls before each step to prepare the kernels' input (None:
        nothing; see ``framework.vector.SignalFeed``)."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.params == self.params  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), tuple(self.params.items())))


def _kernel_function(kernel: Any) -> Any:
    """The Python function behind a numba dispatcher (or the function itself without JIT)."""
    func = getattr(kernel, "py_func", kernel)
    return func if hasattr(func, "__code__") and hasattr(func, "__globals__") else None


def _param_reads(func: Any, arg: int) -> list[tuple[str, Any]]:
    """Subscripts of the function's positional argument ``arg`` (the parameter vector) by a
    global name or a literal: ``[("global", "FAST"), ("literal", 2)]``. Other index forms (a
    computed index) are not listed: only what bytecode shows plainly is checked."""
    code = func.__code__
    if arg >= code.co_argcount:
        return []
    name = code.co_varnames[arg]
    ins = [i for i in dis.get_instructions(func) if i.opname not in ("CACHE", "EXTENDED_ARG")]
    reads = []
    for a, b, op in zip(ins, ins[1:], ins[2:]):
        is_subscr = op.opname == "BINARY_SUBSCR" or (op.opname == "BINARY_OP" and op.argrepr == "[]")
        if not (is_subscr and a.opname == "LOAD_FAST" and a.argval == name):
            continue
        if b.opname == "LOAD_GLOBAL":
            reads.append(("global", b.argval))
        elif b.opname in ("LOAD_CONST", "LOAD_SMALL_INT") and isinstance(b.argval, int):
            reads.append(("literal", b.argval))
    return reads


#: the kernels that receive the parameter vector, and its position among their arguments
_PARAM_ARG = {"init_nb": 0, "decide_nb": 7, "decide_shared_nb": 8}


def check_param_indices(cls: type[Strategy]) -> None:
    """Verify a strategy's parameter index constants against its declared parameters.

    For each kernel (``init_nb``, ``decide_nb``), in the module that defines it: every declared
    parameter ``name`` needs an integer constant ``NAME`` equal to its position in declaration
    order (a strategy defined in a notebook or ``__main__`` may read literal indices instead);
    every ``p[X]`` the kernel reads must name a declared parameter; a literal ``p[k]`` must be
    within the vector. Raises ``TypeError`` naming the class, the constant, the expected and the
    actual index. A class without kernels (an abstract base) is not checked.
    """
    spec = list(cls.param_spec())
    order = f"declaration order: {', '.join(spec) or 'no parameters'}"
    for attr, arg in _PARAM_ARG.items():
        func = _kernel_function(getattr(cls, attr, None))
        if func is None:
            continue
        namespace = func.__globals__
        module = namespace.get("__name__", "?")
        strict = module != "__main__" and "__file__" in namespace
        for index, name in enumerate(spec):
            const = name.upper()
            if const not in namespace:
                if strict:
                    raise TypeError(
                        f"{cls.__name__}: parameter '{name}' has no index constant {const} in "
                        f"{module}, where {attr} is defined; declare {const} = {index} ({order})"
                    )
                continue
            value = namespace[const]
            if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)) or value != index:
                raise TypeError(
                    f"{cls.__name__}: index constant {const} in {module} is {value!r}, but parameter "
                    f"'{name}' is at index {index} ({order}); set {const} = {index}"
                )
        upper = {name.upper() for name in spec}
        for kind, index in _param_reads(func, arg):
            if kind == "global" and index not in upper:
                raise TypeError(
                    f"{cls.__name__}.{attr} reads p[{index}], but {index} is not the upper-cased "
                    f"name of a declared parameter ({order})"
                )
            if kind == "literal" and not 0 <= index < len(spec):
                raise TypeError(
                    f"{cls.__name__}.{attr} reads p[{index}], but the parameter vector has "
                    f"{len(spec)} entries ({order}); valid indices are 0 to {len(spec) - 1}"
                )


_FIELDS = ("open", "high", "low", "close", "volume")


def check_shared(cls: type[Strategy]) -> None:
    """Verify a strategy's ``shared`` indicators: each a ``SharedIndicator`` on a price field,
    keyed by a declared integer or real parameter, and a ``decide_shared_nb`` given with them
    (and only with them). Raises ``TypeError`` naming the class and the mismatch."""
    spec = cls.param_spec()
    for item in cls.shared:
        if not isinstance(item, SharedIndicator):
            raise TypeError(f"{cls.__name__}.shared holds SharedIndicator(kernel, field, param) "
                            f"entries, got {type(item).__name__}")
        if item.field not in _FIELDS:
            raise TypeError(f"{cls.__name__}.shared: field {item.field!r} is not one of {', '.join(_FIELDS)}")
        if item.param not in spec or spec[item.param].kind is bool:
            raise TypeError(f"{cls.__name__}.shared: {item.param!r} is not a declared integer or "
                            f"real parameter (parameters: {', '.join(spec) or 'none'})")
    if bool(cls.shared) != (cls.decide_shared_nb is not None):
        raise TypeError(f"{cls.__name__}: declare shared indicators and decide_shared_nb together "
                        "(a sweep reads the one with the other)")
