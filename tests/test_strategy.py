"""Strategy parameters: declared defaults, types and ranges; clear errors for bad values."""

import re

import pytest

from framework.strategy import Param, Strategy
from strategies import STRATEGIES, get_strategy
from strategies.donchian_breakout import DonchianBreakout
from strategies.macd_trend import MacdTrend
from strategies.rsi_reversion import RsiReversion
from strategies.sma_cross import SmaCross


def test_every_strategy_has_a_name_doc_and_valid_defaults():
    assert set(STRATEGIES) >= {"sma_cross", "rsi_reversion", "macd_trend", "bollinger_reversion", "donchian_breakout"}
    for name, cls in STRATEGIES.items():
        assert cls.name == name and cls.__doc__
        s = cls()
        assert list(s.params) == list(cls.param_spec())
        assert s.param_vector().tolist() == [float(v) for v in s.params.values()]


def test_window_below_one_names_the_parameter_and_range():
    with pytest.raises(ValueError, match=r"sma_cross: parameter 'fast' must be an integer in \[1, 100000\], got 0"):
        SmaCross(fast=0)


def test_fast_must_be_less_than_slow():
    with pytest.raises(ValueError, match="'fast' must be less than 'slow', got fast=30 and slow=30"):
        SmaCross(fast=30, slow=30)
    with pytest.raises(ValueError, match="'fast' must be less than 'slow'"):
        MacdTrend(fast=26, slow=12)
    with pytest.raises(ValueError, match="'exit_window' must be less than 'entry_window'"):
        DonchianBreakout(entry_window=10, exit_window=20)
    with pytest.raises(ValueError, match="'lower' must be less than 'upper'"):
        RsiReversion(lower=80.0, upper=20.0)


def test_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(ValueError, match="has no parameter 'fsat'; valid parameters: fast, slow"):
        SmaCross(fsat=3)


def test_types_are_not_coerced():
    with pytest.raises(ValueError, match="must be an integer"):
        SmaCross(fast=5.5)
    with pytest.raises(ValueError, match="must be an integer"):
        SmaCross(fast=True)
    assert RsiReversion(lower=25).params["lower"] == 25.0  # an int is a valid real number


def test_from_strings_parses_command_line_values():
    s = SmaCross.from_strings(["fast=5", "slow=20"])
    assert s.params == {"fast": 5, "slow": 20}
    with pytest.raises(ValueError, match="parameter 'fast' must be an integer in"):
        SmaCross.from_strings(["fast=five"])
    with pytest.raises(ValueError, match="expects name=value"):
        SmaCross.from_strings(["fast"])


def test_unknown_strategy_lists_available():
    with pytest.raises(ValueError, match="unknown strategy 'nope'; available: bollinger_reversion"):
        get_strategy("nope")


def test_param_declaration():
    class Demo(Strategy):
        window = Param(5, low=1, high=10)
        level = Param(0.5, low=0.0, high=1.0)
        flag = Param(False)

    assert Demo().params == {"window": 5, "level": 0.5, "flag": False}
    with pytest.raises(ValueError, match=r"'level' must be a number in \[0, 1\], got 1.5"):
        Demo(level=1.5)
    with pytest.raises(ValueError, match="'flag' must be true or false"):
        Demo(flag=1)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_bundled_strategies_declare_their_indicators(name):
    from framework import indicators

    cls = STRATEGIES[name]
    assert cls.indicators, f"{name} declares no indicators"
    for call in cls.indicators:
        m = re.fullmatch(r"(\w+)\((.*)\)", call)
        assert m, call
        assert callable(getattr(indicators, m.group(1), None)), f"{call}: no such indicator"
        for arg in (a.strip() for a in m.group(2).split(",")):
            assert arg in cls.param_spec() or arg in ("open", "high", "low", "close", "volume"), (
                f"{call}: {arg!r} is neither a parameter of {name} nor a price field"
            )
