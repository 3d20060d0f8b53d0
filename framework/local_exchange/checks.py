"""Argument checks shared by the constructor, the fault switchboard, the clock and the CLI.

A failed check raises :class:`SettingError`, a ``ValueError`` that knows which keyword was
wrong, so the command line can say the same thing in the words of its options.
"""

from __future__ import annotations

import math
from numbers import Integral, Real


class SettingError(ValueError):
    """A bad argument: ``keyword`` (as the Python API names it), what is valid, what was given."""

    def __init__(self, keyword: str, requirement: str, value: object):
        self.keyword, self.requirement, self.value = keyword, requirement, value
        super().__init__(self.describe(keyword))

    def describe(self, name: str) -> str:
        """The message with ``name`` (e.g. a command-line option) in place of the keyword."""
        return f"{name} must be {self.requirement}, got {self.value!r}"


def number(value: object, keyword: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, integer: bool = False) -> float | int:
    """``value`` as a finite number within ``[low, high]`` (ends excluded when ``*_open``);
    ``integer``: a whole number (int). Booleans and strings are refused: a JSON ``true`` or
    ``"5"`` is a mistake, not a number."""
    lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
    requirement = ("an integer" if integer else "a finite number") + (
        f" {lo}{' and ' if lo and hi else ''}{hi}" if lo or hi else "")
    if isinstance(value, bool) or not isinstance(value, Integral if integer else Real):
        raise SettingError(keyword, requirement, value)
    if not integer and not math.isfinite(value):
        raise SettingError(keyword, requirement, value)
    if low is not None and (value <= low if low_open else value < low):
        raise SettingError(keyword, requirement, value)
    if high is not None and (value >= high if high_open else value > high):
        raise SettingError(keyword, requirement, value)
    return int(value) if integer else float(value)


def one_of(value: object, keyword: str, choices: tuple) -> object:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise SettingError(keyword, f"one of {', '.join(map(repr, choices))}", value)
    return value
