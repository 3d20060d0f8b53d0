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


# --- named parameters: index constants checked against the declaration at class creation ---------

KERNELS = '''
from numba import njit
from framework.enums import ACTION_LONG, INTENT_ACTION
from framework.indicators_nb import sma_init_nb
from framework.strategy import Param, Strategy
{constants}

@njit
def init_nb(p):
    return (sma_init_nb(int(p[{first}])),)

@njit
def decide_nb(state, o, h, l, c, v, pos, p, intent):
    if c > p[{second}]:
        intent[INTENT_ACTION] = ACTION_LONG

class Probe(Strategy):
    window = Param(5, low=1, high=100)
    level = Param(1.0, low=0.0, high=1e9)
    init_nb = staticmethod(init_nb)
    decide_nb = staticmethod(decide_nb)
'''


def import_source(path, source: str):
    """Import ``source`` as a module from a file, as a strategy module is imported."""
    import importlib.util

    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"probe_{abs(hash((str(path), source)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_matching_index_constants_are_accepted(tmp_path):
    module = import_source(tmp_path / "ok.py", KERNELS.format(
        constants="WINDOW, LEVEL = 0, 1", first="WINDOW", second="LEVEL"))
    assert module.Probe().param_vector().tolist() == [5.0, 1.0]


@pytest.mark.parametrize("constants, first, second, message", [
    ("WINDOW, LEVEL = 1, 0", "WINDOW", "LEVEL",
     r"Probe: index constant WINDOW in probe_\d+ is 1, but parameter 'window' is at index 0 "
     r"\(declaration order: window, level\); set WINDOW = 0"),
    ("WINDOW = 0", "WINDOW", "WINDOW",
     r"Probe: parameter 'level' has no index constant LEVEL in probe_\d+, where init_nb is "
     r"defined; declare LEVEL = 1"),
    ("WINDOW, LEVEL, THRESHOLD = 0, 1, 2", "WINDOW", "THRESHOLD",
     r"Probe.decide_nb reads p\[THRESHOLD\], but THRESHOLD is not the upper-cased name of a "
     r"declared parameter"),
    ("WINDOW, LEVEL = 0, 1", "WINDOW", "2",
     r"Probe.decide_nb reads p\[2\], but the parameter vector has 2 entries .*valid indices are 0 to 1"),
    ("WINDOW, LEVEL = 0, 1.0", "WINDOW", "LEVEL", r"index constant LEVEL in probe_\d+ is 1.0"),
])
def test_mismatched_index_constants_raise_at_class_creation(tmp_path, constants, first, second, message):
    with pytest.raises(TypeError, match=message):
        import_source(tmp_path / "bad.py", KERNELS.format(constants=constants, first=first, second=second))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_swapping_a_bundled_strategys_index_constants_is_caught(tmp_path, name):
    """The bundled strategies pass the check, and the same source with its first two parameter
    constants swapped (a parameter declared in a new order) is refused."""
    import inspect

    cls = STRATEGIES[name]
    source = inspect.getsource(inspect.getmodule(cls))
    a, b = (n.upper() for n in list(cls.param_spec())[:2])
    assert import_source(tmp_path / "same.py", source)
    swapped = source.replace("\n@njit", f"\n{a}, {b} = {b}, {a}\n\n@njit", 1)
    with pytest.raises(TypeError, match=f"{cls.__name__}: index constant {a} in probe_\\d+ is 1, but parameter"):
        import_source(tmp_path / "swapped.py", swapped)


def test_notebook_strategy_may_read_literal_indices_within_the_vector():
    """A class defined in ``__main__`` (a notebook cell) needs no constants, but a literal
    index past the parameter vector is still refused."""
    namespace = {"__name__": "__main__"}
    exec(KERNELS.format(constants="", first="0", second="1"), namespace)
    assert namespace["Probe"]().params == {"window": 5, "level": 1.0}
    with pytest.raises(TypeError, match=r"Probe.init_nb reads p\[5\], but the parameter vector has 2 entries"):
        exec(KERNELS.format(constants="", first="5", second="1"), {"__name__": "__main__"})
