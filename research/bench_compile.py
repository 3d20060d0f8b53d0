"""Compile-time benchmark: how long a researcher waits for numba, in fresh processes.

Every figure is the wall time of a whole fresh interpreter (imports, compilation or cache load,
the backtest, exit), measured from here with ``time.perf_counter`` around ``subprocess.run``:

- ``cold_first_backtest_s``: ``make demo``'s backtest (``tradpal backtest sma_cross --data
  BTC_USDT-1d``) with an empty cache (a new temporary ``TRADPAL_CACHE_HOME``, ``NUMBA_CACHE_DIR``
  unset): everything it needs is compiled in that process. Each repeat gets its own empty cache.
  This is the honest price of a compile; since the install compiles the demo's kernels
  (``framework/warmup.py``), a fresh install's first ``make demo`` no longer pays it, but
  running ``tradpal`` without ``make`` (or with the cache deleted) does.
- ``install_warm_up_s``: the install's warm-up (``python -m framework.warmup``) on an empty
  cache, the step of ``make`` that now pays that price.
- ``first_demo_after_install_s``: ``make demo``'s backtest in the next fresh process, on the
  cache that warm-up filled: what a fresh install's first ``make demo`` waits.
- ``warm_first_backtest_s``: a user strategy file (a copy of ``strategies/sma_cross.py`` in a
  temporary folder, run as ``tradpal backtest FILE.py:SmaCross``), unchanged, cache warm.
- ``edit_to_result_s``: the same file after an edit of its ``decide_nb`` (a harmless constant
  that changes every repeat), so the next fresh process recompiles what the edit invalidates.
- ``first_sweep_s``: ``tradpal sweep sma_cross`` (12 combinations on the demo's data) on the
  cache the install's warm-up filled: the backtest's kernels are cached, the sweep's block kernel
  for the strategy is compiled.
- ``vectorbt_cold_first_s``: ``vbt.Portfolio.from_signals`` once, on the demo's bars, in a fresh
  process with an empty ``NUMBA_CACHE_DIR``.

Prints a table (min / median / max over ``--repeats``) beside the goals of issue 11, with each
figure's CPU seconds (user + system, of the process and its children) below it: on a shared
machine the wall time grows with the load, the CPU time much less. As its last line one JSON
object (``cpu_s``: the CPU medians).

    python research/bench_compile.py               # 3 repeats (a few minutes)
    python research/bench_compile.py --quick       # 1 repeat, smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from framework.warmup import DEMO_ARGS  # noqa: E402  (make demo's command, as the warm-up runs it)

DEMO_DATA = ROOT / "data" / "BTC_USDT-1d.csv"
# goals of issue 11 ("The research loop")
GOAL_EDIT_TO_RESULT_S = 3.0
GOAL_COLD_FIRST_S = 10.0

CLI = "import sys; from framework.cli import main; sys.exit(main(sys.argv[1:]))"
#: a small sweep of the demo's strategy on the demo's data: what its first sweep compiles
SWEEP_ARGS = ["sweep", "sma_cross", "--data", "BTC_USDT-1d", "--grid", "fast=5:20:5", "--grid", "slow=20:60:20"]

VBT_SNIPPET = """
import pandas as pd, vectorbt as vbt
# pandas rather than TradPal's loader: no TradPal kernel compiles in this process
close = pd.read_csv({path!r}, index_col=0, parse_dates=True)["close"]
fast, slow = close.rolling(10).mean(), close.rolling(30).mean()
entries = (fast > slow) & (fast.shift(1) <= slow.shift(1))
exits = (fast < slow) & (fast.shift(1) >= slow.shift(1))
pf = vbt.Portfolio.from_signals(close, entries, exits, fees=0.001, freq="1D")
print(float(pf.final_value()))
"""

# the edit: a statement in decide_nb whose constant changes every repeat
EDIT_MARK = "    fast_state, slow_state, prev = state\n"


def base_env(cache_home: Path) -> dict[str, str]:
    """The environment of a fresh process: this checkout importable, TradPal's caches under
    ``cache_home``, no user-chosen numba cache."""
    env = dict(os.environ)
    env.pop("NUMBA_CACHE_DIR", None)
    env.pop("TRADPAL_KERNEL_CACHE", None)
    env["TRADPAL_CACHE_HOME"] = str(cache_home)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


#: CPU seconds (user + system) of each timed process, by the figure's key: on a shared machine
#: the wall time grows with the load, the CPU time much less
cpu_times: dict[str, list[float]] = {}


def timed(cmd: list[str], env: dict[str, str], cwd: Path = ROOT, key: str | None = None) -> float:
    """Wall seconds of one fresh process (its CPU seconds go to ``cpu_times[key]``); raises with
    its stderr when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    if key is not None:
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        cpu_times.setdefault(key, []).append(cpu)
    return wall


def tradpal(args: list[str]) -> list[str]:
    return [sys.executable, "-c", CLI, *args]


def user_strategy(folder: Path) -> Path:
    """A copy of the bundled SMA crossover as a user's own file, under another registered name."""
    text = (ROOT / "strategies" / "sma_cross.py").read_text()
    if EDIT_MARK not in text:
        raise RuntimeError("strategies/sma_cross.py changed: cannot find the line to edit after")
    text = text.replace('name = "sma_cross"', 'name = "bench_user_sma_cross"')
    path = folder / "bench_user_sma.py"
    path.write_text(text)
    return path


def edit(path: Path, k: int) -> None:
    """Edit decide_nb: set a harmless local to a new constant (numba sees a new source)."""
    text = path.read_text()
    text = re.sub(r"    _bench_edit = [0-9.]+\n", "", text)
    path.write_text(text.replace(EDIT_MARK, f"{EDIT_MARK}    _bench_edit = {k}.5\n"))


def summary(xs: list[float]) -> dict[str, float]:
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=None, help="fresh processes per figure "
                    "(default 3; --quick: 1)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repeat")
    ap.add_argument("--skip-cold", action="store_true",
                    help="skip the cold and install figures (reported as null) and time the warm and edit "
                         "figures against your usual TradPal cache: a smoke test without a full "
                         "compile of the framework")
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    if repeats < 1:
        ap.error("--repeats must be >= 1")

    times: dict[str, list[float]] = {"cold_first_backtest_s": [], "install_warm_up_s": [],
                                     "first_demo_after_install_s": [], "warm_first_backtest_s": [],
                                     "edit_to_result_s": [], "first_sweep_s": [],
                                     "vectorbt_cold_first_s": []}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tradpal-bench-compile-") as tmp:
        tmp = Path(tmp)
        user_dir = tmp / "user"
        user_dir.mkdir()
        path = user_strategy(user_dir)
        spec = f"{path}:SmaCross"
        user_args = ["backtest", spec, "--data", "BTC_USDT-1d"]
        kept = tmp / "kept"  # the cache of the last cold run, reused warm below
        for r in range(0 if args.skip_cold else repeats):
            home = tmp / f"cold{r}"
            times["cold_first_backtest_s"].append(timed(tradpal(DEMO_ARGS), base_env(home),
                                                        key="cold_first_backtest_s"))
            if kept.exists():
                shutil.rmtree(home)
            else:
                home.rename(kept)
            home = tmp / f"install{r}"
            times["install_warm_up_s"].append(timed([sys.executable, "-m", "framework.warmup"],
                                                    base_env(home), key="install_warm_up_s"))
            times["first_demo_after_install_s"].append(timed(tradpal(DEMO_ARGS), base_env(home),
                                                             key="first_demo_after_install_s"))
            times["first_sweep_s"].append(timed(tradpal(SWEEP_ARGS), base_env(home), key="first_sweep_s"))
            shutil.rmtree(home)
        env = base_env(kept)
        if args.skip_cold:
            env["TRADPAL_CACHE_HOME"] = os.environ.get("TRADPAL_CACHE_HOME", "")
            if not env["TRADPAL_CACHE_HOME"]:
                del env["TRADPAL_CACHE_HOME"]
        timed(tradpal(user_args), env, cwd=user_dir)  # compiles the user's strategy once
        for r in range(repeats):
            times["warm_first_backtest_s"].append(timed(tradpal(user_args), env, cwd=user_dir,
                                                        key="warm_first_backtest_s"))
            edit(path, r)
            times["edit_to_result_s"].append(timed(tradpal(user_args), env, cwd=user_dir,
                                                   key="edit_to_result_s"))
        for r in range(0 if args.skip_cold else repeats):
            venv = base_env(tmp / f"vbt{r}")
            venv["NUMBA_CACHE_DIR"] = str(tmp / f"vbt{r}" / "numba")
            times["vectorbt_cold_first_s"].append(
                timed([sys.executable, "-c", VBT_SNIPPET.format(path=str(DEMO_DATA))], venv,
                      key="vectorbt_cold_first_s"))
    total_s = time.perf_counter() - t_start

    goals = {"cold_first_backtest_s": GOAL_COLD_FIRST_S,
             "first_demo_after_install_s": GOAL_COLD_FIRST_S,
             "edit_to_result_s": GOAL_EDIT_TO_RESULT_S}
    rows = [("cold_first_backtest_s", "make demo's backtest, empty cache"),
            ("install_warm_up_s", "the install's warm-up, empty cache"),
            ("first_demo_after_install_s", "make demo's backtest after the warm-up"),
            ("warm_first_backtest_s", "user strategy file, unchanged, warm cache"),
            ("edit_to_result_s", "user strategy file after an edit of decide_nb"),
            ("first_sweep_s", "the demo strategy's first sweep, after the warm-up"),
            ("vectorbt_cold_first_s", "vectorbt from_signals, empty numba cache")]
    print(f"Fresh-process wall seconds over {repeats} repeat(s) "
          f"(load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores)")
    print(f"{'figure':<28} {'what':<48} {'min':>7} {'median':>7} {'max':>7} {'goal':>7}")
    for key, what in rows:
        if not times[key]:
            print(f"{key:<28} {what:<48} {'skipped (--skip-cold)':>23}")
            continue
        s = summary(times[key])
        goal = f"<= {goals[key]:g}" if key in goals else "-"
        print(f"{key:<28} {what:<48} {s['min']:7.2f} {s['median']:7.2f} {s['max']:7.2f} "
              f"{goal:>7}")
        cpu = summary(cpu_times[key])
        print(f"{'':<28} {'  CPU seconds (user + system)':<48} {cpu['min']:7.2f} {cpu['median']:7.2f} "
              f"{cpu['max']:7.2f}")
    print("(median reported in the JSON; every figure includes interpreter start and imports;\n"
          " cold_first_backtest_s compiles everything in the demo's process, as any run on an empty\n"
          " cache does; first_demo_after_install_s is a fresh install's first make demo, whose\n"
          " kernels the install's warm-up compiled)")
    print()

    times = {k: v for k, v in times.items() if v}
    result: dict = {key: None for key, _ in rows}
    result.update({key: round(statistics.median(v), 3) for key, v in times.items()})
    result.update({
        "repeats": repeats,
        "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "min_s": {k: round(min(v), 3) for k, v in times.items()},
        "max_s": {k: round(max(v), 3) for k, v in times.items()},
        "cpu_s": {k: round(statistics.median(v), 3) for k, v in cpu_times.items()},
        "goals_s": goals,
        "loadavg_1min": round(os.getloadavg()[0], 2),
        "total_s": round(total_s, 1),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    })
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
