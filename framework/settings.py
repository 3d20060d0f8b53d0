"""Simulator settings: fees, slippage, sizing, stops and risk limits, validated and vectorised.

Every fraction is a plain fraction (0.001 = 0.1 %), every window is in bars, cash amounts are in
the quote currency. ``None`` disables a stop or a limit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from framework import enums

_ALTERNATIVES = (("sl_pct", "sl_atr"), ("tp_pct", "tp_atr"), ("trail_pct", "trail_atr"))


@dataclass(frozen=True)
class SimSettings:
    """How orders are sized, filled and limited. See the README's "Fill semantics"."""

    init_cash: float = 10_000.0
    fees: float = 0.001  # fraction of notional per fill (Binance spot taker: 0.1 %)
    slippage: float = 0.0  # fraction of price, against the trader, on market and stop fills
    sizing: str = "fraction"  # fraction | cash | risk | vol_target
    size: float = 1.0  # fraction of equity | cash | fraction risked | annualised vol target
    atr_window: int = 14  # bars, the simulator's ATR (ATR stops and risk sizing)
    atr_stop_mult: float = 2.0  # risk sizing: stop distance = atr * atr_stop_mult
    vol_window: int = 30  # bars, realised volatility for vol targeting
    sl_pct: float | None = None
    tp_pct: float | None = None
    sl_atr: float | None = None
    tp_atr: float | None = None
    trail_pct: float | None = None
    trail_atr: float | None = None
    allow_short: bool = False
    max_drawdown: float | None = None  # halt and flatten below peak * (1 - max_drawdown)
    daily_loss: float | None = None  # flatten, no entries that UTC day, below day open * (1 - x)
    max_trades_per_day: int | None = None
    max_position_notional: float | None = None
    max_exposure: float | None = None  # sum |notional| / equity
    cooldown_bars: int | None = None
    max_positions: int | None = None
    cash_sharing: bool = False  # several instruments: one cash pool (a portfolio)
    # liquidate a position when equity < maintenance_margin * gross notional (README "Fill semantics")
    maintenance_margin: float | None = None
    # exchange precision, off by default in backtests (a live broker fills them from ccxt's
    # market info): entry quantities are rounded down to qty_step, order prices to price_tick,
    # and an entry below min_qty or min_notional is rejected, as the exchange would
    min_qty: float | None = None
    qty_step: float | None = None
    price_tick: float | None = None
    min_notional: float | None = None

    def __post_init__(self) -> None:
        _check_positive("init_cash", self.init_cash)
        _check_range("fees", self.fees, 0.0, 0.1, "0.001 means 0.1 %")
        _check_range("slippage", self.slippage, 0.0, 0.1, "0.0005 means 0.05 %")
        if self.sizing not in enums.SIZE_KIND_NAMES:
            raise ValueError(
                f"sizing must be one of {', '.join(enums.SIZE_KIND_NAMES)}, got {self.sizing!r}"
            )
        if self.sizing in ("fraction", "risk"):
            _check_range("size", self.size, 0.0, 1.0, f"fraction of equity for sizing={self.sizing!r}", lo_open=True)
        else:
            _check_positive("size", self.size)
        _check_window("atr_window", self.atr_window)
        _check_window("vol_window", self.vol_window, minimum=2)
        _check_positive("atr_stop_mult", self.atr_stop_mult)
        for name in ("allow_short", "cash_sharing"):
            _check_bool(name, getattr(self, name))
        for name, hint in (
            ("sl_pct", "a fraction, 0.05 means 5 %; a long's stop sits at entry × (1 − sl_pct)"),
            ("trail_pct", "a fraction, 0.05 means 5 %; a long's trailing stop sits at best × (1 − trail_pct)"),
            ("max_drawdown", "a fraction, 0.05 means 5 %"),
            ("daily_loss", "a fraction, 0.05 means 5 %"),
        ):
            value = getattr(self, name)
            if value is not None:
                _check_range(name, value, 0.0, 1.0, hint, lo_open=True, hi_open=True)
        if self.tp_pct is not None:
            if self.allow_short:  # a short's target sits at entry * (1 - tp_pct): must stay > 0
                _check_range(
                    "tp_pct", self.tp_pct, 0.0, 1.0,
                    "with allow_short=True; a short's target sits at entry × (1 − tp_pct)",
                    lo_open=True, hi_open=True,
                )
            else:
                _check_positive("tp_pct", self.tp_pct)
        for name in ("sl_atr", "tp_atr", "trail_atr", "max_position_notional", "max_exposure",
                     "min_qty", "qty_step", "price_tick", "min_notional"):
            value = getattr(self, name)
            if value is not None:
                _check_positive(name, value)
        for name in ("max_trades_per_day", "max_positions"):
            value = getattr(self, name)
            if value is not None:
                _check_window(name, value)
        if self.cooldown_bars is not None:
            _check_window("cooldown_bars", self.cooldown_bars, minimum=0)
        if self.maintenance_margin is not None:
            _check_range(
                "maintenance_margin", self.maintenance_margin, 0.0, 1.0,
                "a fraction of the gross position notional, 0.05 means 5 %; 0 liquidates at zero equity",
                hi_open=True,
            )
        if self.sl_pct is not None and self.sl_atr is not None:
            raise ValueError("give either sl_pct or sl_atr, not both")
        if self.tp_pct is not None and self.tp_atr is not None:
            raise ValueError("give either tp_pct or tp_atr, not both")
        if self.trail_pct is not None and self.trail_atr is not None:
            raise ValueError("give either trail_pct or trail_atr, not both")

    @classmethod
    def build(cls, base: dict[str, Any] | None = None, **overrides: Any) -> SimSettings:
        """Settings from defaults, then ``base``, then ``overrides``; unknown names raise.

        ``sl_pct`` and ``sl_atr`` (likewise tp, trail) are two forms of one stop: an override of
        either form replaces whichever form ``base`` gave."""
        known = {f.name for f in fields(cls)}
        base = dict(base or {})
        for pair in _ALTERNATIVES:  # an override of one form replaces the base's other form
            for given, other in (pair, pair[::-1]):
                if given in overrides and other not in overrides:
                    base.pop(other, None)
        merged = {**base, **overrides}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(
                f"unknown setting {', '.join(repr(u) for u in unknown)}; "
                f"valid settings: {', '.join(sorted(known))}"
            )
        return cls(**merged)

    def vector(self, ann_factor: float) -> np.ndarray:
        """The float64 parameter vector of ``framework.sim_nb`` (NaN = disabled)."""
        p = np.full(enums.N_SIM_PARAMS, np.nan)

        def opt(x: float | None) -> float:
            return np.nan if x is None else float(x)

        p[enums.P_INIT_CASH] = self.init_cash
        p[enums.P_FEES] = self.fees
        p[enums.P_SLIPPAGE] = self.slippage
        p[enums.P_SIZE_KIND] = enums.SIZE_KIND_NAMES.index(self.sizing)
        p[enums.P_SIZE] = self.size
        p[enums.P_ATR_WINDOW] = self.atr_window
        p[enums.P_ATR_STOP_MULT] = self.atr_stop_mult
        p[enums.P_VOL_WINDOW] = self.vol_window
        p[enums.P_ANN_FACTOR] = ann_factor
        p[enums.P_SL_PCT] = opt(self.sl_pct)
        p[enums.P_TP_PCT] = opt(self.tp_pct)
        p[enums.P_SL_ATR] = opt(self.sl_atr)
        p[enums.P_TP_ATR] = opt(self.tp_atr)
        p[enums.P_TRAIL_PCT] = opt(self.trail_pct)
        p[enums.P_TRAIL_ATR] = opt(self.trail_atr)
        p[enums.P_ALLOW_SHORT] = 1.0 if self.allow_short else 0.0
        p[enums.P_MAX_DRAWDOWN] = opt(self.max_drawdown)
        p[enums.P_DAILY_LOSS] = opt(self.daily_loss)
        p[enums.P_MAX_TRADES_DAY] = opt(self.max_trades_per_day)
        p[enums.P_MAX_POS_NOTIONAL] = opt(self.max_position_notional)
        p[enums.P_MAX_EXPOSURE] = opt(self.max_exposure)
        p[enums.P_COOLDOWN_BARS] = opt(self.cooldown_bars)
        p[enums.P_MAX_POSITIONS] = opt(self.max_positions)
        p[enums.P_MAINT_MARGIN] = opt(self.maintenance_margin)
        p[enums.P_MIN_QTY] = opt(self.min_qty)
        p[enums.P_QTY_STEP] = opt(self.qty_step)
        p[enums.P_PRICE_TICK] = opt(self.price_tick)
        p[enums.P_MIN_NOTIONAL] = opt(self.min_notional)
        return p

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    """A number whose float64 value is finite: a Python int too large for a float (10**400)
    is not, one that merely exceeds int64 (10**30) is (np.isfinite cannot take either)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _shown(value: Any) -> str:
    """``repr`` of a setting's value, a huge integer shortened to its size."""
    if isinstance(value, int) and abs(value) >= 10**20:
        return f"an integer of {len(str(abs(value)))} digits"
    return repr(value)


# Upper bounds of the whole-number settings: windows allocate a buffer of that many bars; the
# others must stay exact in the float64 parameter vector of the simulator.
_WINDOW_MAX = 1_000_000
_MAXIMUM = {"atr_window": _WINDOW_MAX, "vol_window": _WINDOW_MAX}
_COUNT_MAX = 2**53


def _check_bool(name: str, value: Any) -> None:
    # only real booleans: "no" or 0 would silently read as a truth value
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false (a bool), got {value!r}")


def _check_positive(name: str, value: Any) -> None:
    if not _is_number(value) or not _is_finite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {_shown(value)}")


def _check_range(
    name: str, value: Any, lo: float, hi: float, hint: str, lo_open: bool = False, hi_open: bool = False
) -> None:
    ok = _is_number(value) and _is_finite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        raise ValueError(
            f"{name} must be in {left}{lo:g}, {hi:g}{right} ({hint}), got {_shown(value)}")


def _check_window(name: str, value: Any, minimum: int = 1) -> None:
    maximum = _MAXIMUM.get(name, _COUNT_MAX)
    if (not isinstance(value, (int, np.integer)) or isinstance(value, bool)
            or not minimum <= value <= maximum):
        raise ValueError(
            f"{name} must be an integer in [{minimum}, {maximum}], got {_shown(value)}")


# --- command line: ``--set setting=value`` ---------------------------------------------------


def parse_setting(pair: str) -> tuple[str, Any]:
    """``fees=0.001`` -> ("fees", 0.001), typed by the SimSettings field it names."""
    key, sep, text = pair.partition("=")
    key = key.strip()
    types = {f.name: f.type for f in fields(SimSettings)}
    if not sep or key not in types:
        raise ValueError(
            f"--set expects setting=value with one of: {', '.join(types)}; got {pair!r}"
        )
    kind = str(types[key])
    text = text.strip()
    if text.lower() in ("none", "off"):
        return key, None
    if "bool" in kind:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"setting {key!r} takes true or false, got {text!r}")
        return key, text.lower() in ("true", "1", "yes")
    if "str" in kind:
        return key, text
    try:
        return key, int(text) if "int" in kind and "float" not in kind else float(text)
    except ValueError:
        raise ValueError(f"setting {key!r} takes a number, got {text!r}") from None


def settings_from_pairs(pairs: list[str] | None) -> dict[str, Any]:
    """``--set`` options as keywords; a setting given twice is an error, not the last one wins."""
    settings: dict[str, Any] = {}
    for pair in pairs or []:
        key, value = parse_setting(pair)
        if key in settings:
            raise ValueError(f"--set {key} given twice; give each setting once")
        settings[key] = value
    return settings
