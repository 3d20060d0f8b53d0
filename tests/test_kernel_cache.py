"""TradPal's kernels are cached per function, keyed by what they depend on (framework._kernel_cache).

An edit recompiles the edited kernel and its callers (never stale code), an edit elsewhere
recompiles nothing, and numba's cache settings for other libraries are left alone.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# a caller in one module, its callee and a constant in another, an unrelated third module
CALLEE = '''"""Callee module{doc}."""
from framework.jit import njit

SCALE = {scale}


@njit(cache=True)
def g(x):
    return x * {factor}
'''
CALLER = '''"""Caller module."""
from framework.jit import njit
from callee import SCALE, g


@njit(cache=True)
def f(x):
    return g(x) + SCALE
'''
OTHER = '''"""Unrelated module{doc}."""
from framework.jit import njit


@njit(cache=True)
def h(x):
    return x - 1.0
'''

# one fresh process: call the kernels, report their results and whether each came from the cache
PROBE = textwrap.dedent('''
    import json, sys
    import caller, other
    out = {"f": caller.f(2.0), "g": caller.g(2.0), "h": other.h(2.0)}
    for name, k in (("f", caller.f), ("g", caller.g), ("h", other.h)):
        out[name + "_hit"] = bool(k.stats.cache_hits)
    print(json.dumps(out))
''')


def write(folder: Path, callee_doc="", scale=1.0, factor=10.0, other_doc=""):
    (folder / "callee.py").write_text(CALLEE.format(doc=callee_doc, scale=scale, factor=factor))
    (folder / "caller.py").write_text(CALLER)
    (folder / "other.py").write_text(OTHER.format(doc=other_doc))


def probe(folder: Path, cache_home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "NUMBA_DISABLE_JIT")}
    env.update(TRADPAL_CACHE_HOME=str(cache_home), PYTHONPATH=os.pathsep.join([str(folder), str(ROOT)]))
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=folder, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_an_edit_recompiles_what_depends_on_it_and_nothing_else(tmp_path):
    src, home = tmp_path / "src", tmp_path / "home"
    src.mkdir()
    write(src)
    first = probe(src, home)
    assert (first["f"], first["g"], first["h"]) == (21.0, 20.0, 1.0)
    assert not (first["f_hit"] or first["h_hit"])  # an empty cache: everything compiles
    again = probe(src, home)
    assert again == {**first, "f_hit": True, "g_hit": True, "h_hit": True}

    # the callee's module docstring and an unrelated module: no kernel's code changed
    write(src, callee_doc=" (edited)", other_doc=" (edited)")
    assert probe(src, home) == again

    # the callee's body: the callee and its caller recompile (a stale caller would print 21),
    # the unrelated kernel still loads from the cache
    write(src, factor=100.0)
    edited = probe(src, home)
    assert (edited["f"], edited["g"]) == (201.0, 200.0)
    assert (edited["f_hit"], edited["g_hit"], edited["h_hit"]) == (False, False, True)

    # a constant the caller imports from the callee's module: read by value
    write(src, factor=100.0, scale=2.0)
    scaled = probe(src, home)
    assert scaled["f"] == 202.0 and not scaled["f_hit"] and scaled["g_hit"] and scaled["h_hit"]


def test_numba_settings_of_other_libraries_are_left_alone(tmp_path):
    """``import framework`` does not move numba's cache folder; a kernel of another module keeps
    numba's own cache beside its file, TradPal's kernels go below TradPal's cache folder."""
    (tmp_path / "theirs.py").write_text("from numba import njit\n\n\n@njit(cache=True)\n"
                                        "def k(x):\n    return x + 1\n")
    code = textwrap.dedent('''
        import json
        import framework
        from numba.core import config
        from framework import sim_nb
        import theirs
        print(json.dumps({"cache_dir": config.CACHE_DIR, "theirs": theirs.k._cache.cache_path,
                          "ours": sim_nb.fill_nb._cache.cache_path}))
    ''')
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "NUMBA_DISABLE_JIT")}
    env.update(TRADPAL_CACHE_HOME=str(tmp_path / "home"), PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    paths = json.loads(out.stdout.strip().splitlines()[-1])
    assert paths["cache_dir"] == ""
    assert Path(paths["theirs"]) == tmp_path / "__pycache__"
    assert Path(paths["ours"]).is_relative_to(tmp_path / "home" / "numba")


# a strategy defined in a script's ``__main__``, as a researcher writes one
SCRIPT = '''
import json
import numpy as np
from numba import njit
from framework import runner
from framework.enums import ACTION_LONG, INTENT_ACTION
from framework.jit import bar_njit
from framework.strategy import Param, Strategy

WINDOW = 0


@njit(cache=True)
def init_nb(p):
    return (np.zeros(int(p[WINDOW])), np.zeros(1))


@bar_njit
def decide_nb(state, o, h, l, c, v, pos, p, intent):
    if c > {threshold}:
        intent[INTENT_ACTION] = ACTION_LONG


class Mine(Strategy):
    name = "mine_in_main"
    window = Param(3, low=1, high=10)
    init_nb = staticmethod(init_nb)
    decide_nb = staticmethod(decide_nb)


kernels = runner.drivers(Mine)
states, offs = kernels.init_states_nb(np.array([[3.0]]))
intent = np.zeros(4)
kernels.module.decide_row_nb(states[0], offs, 1.0, 1.0, 1.0, 5.0, 1.0, 0.0, np.array([3.0]), intent)
print({note!r})
print(json.dumps({{"acted": bool(intent[INTENT_ACTION] == ACTION_LONG), "offsets": offs.tolist(),
                   "decide_hit": bool(kernels.module.decide_row_nb.stats.cache_hits),
                   "init_hit": bool(kernels.init_states_nb.stats.cache_hits)}}))
'''


def test_a_strategy_in_a_scripts_main_is_cached_by_its_code(tmp_path):
    script, home = tmp_path / "research.py", tmp_path / "home"

    def run(threshold: float, note: str) -> dict:
        script.write_text(SCRIPT.format(threshold=threshold, note=note))
        env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "NUMBA_DISABLE_JIT")}
        env.update(TRADPAL_CACHE_HOME=str(home), PYTHONPATH=str(ROOT))
        out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = run(4.0, "first")
    assert first == {"acted": True, "offsets": [0, 3, 4], "decide_hit": False, "init_hit": False}
    # the script's other lines changed, the strategy's code did not: everything from the cache
    assert run(4.0, "an edit outside the strategy") == {**first, "decide_hit": True, "init_hit": True}
    # decide_nb edited: it recompiles (a stale one would still act at 5 > 4), init_nb is reused
    assert run(6.0, "decide_nb edited") == {**first, "acted": False, "init_hit": True}
