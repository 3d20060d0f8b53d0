"""Sweep benchmark: an SMA crossover grid through ``framework.sweep.sweep`` and vectorbt.

The grid of issue 11: every fast < slow pair of windows 2..50 (1,176 combinations), on
``generate_ohlcv(--bars)`` synthetic hourly bars, fees 0.1 %, signals decided at a close and
filled at the next open. vectorbt runs ``MA.run_combs`` over the same windows, crossings, signals
shifted one bar, ``Portfolio.from_signals(price=open)`` over all combinations at once; it holds
bars x combinations arrays, so it runs on fewer bars (``--vbt-bars``) and both sides are compared
per bar-combination (bars x combinations / seconds), which the output says.

Each framework runs in its own subprocess (so its peak RSS is its own), warm: compilation first,
then the best of ``--repeats`` timed calls. ``single_ns_per_bar`` is one
``Backtest(SmaCross(), ...).run()`` on ``--single-bars`` bars (best of the repeats) per bar.

    python research/bench_sweep.py                 # 1,176 combos x 100k bars (vectorbt 10k bars)
    python research/bench_sweep.py --quick         # smoke run on tiny sizes
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FEES = 0.001
# goals of issue 11 ("The research loop")
GOAL_COMBOS_PER_S = 5e8
GOAL_NS_PER_BAR = 15.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def windows(max_window: int) -> list[int]:
    return list(range(2, max_window + 1))


def timings(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def worker_tradpal(bars: int, max_window: int, single_bars: int, repeats: int) -> dict:
    from framework.backtest import Backtest
    from framework.sweep import sweep
    from framework.synthetic import generate_ohlcv
    from strategies.sma_cross import SmaCross

    w = windows(max_window)
    grid = {"fast": w, "slow": w}  # sweep skips fast >= slow
    data = generate_ohlcv(bars, freq="1h", seed=1)
    small = generate_ohlcv(500, freq="1h", seed=1)
    sweep(SmaCross, small, grid, fees=FEES, progress=False)  # compile outside the timing
    table = None

    def run():
        nonlocal table
        table = sweep(SmaCross, data, grid, fees=FEES, progress=False)

    sweep_times = timings(run, repeats)
    combos = len(table)
    single = generate_ohlcv(single_bars, freq="1h", seed=2)
    Backtest(SmaCross(), small, fees=FEES).run()
    single_times = timings(lambda: Backtest(SmaCross(), single, fees=FEES).run(), repeats)
    return {"bars": bars, "combos": combos, "sweep_s": sweep_times, "single_bars": single_bars,
            "single_s": single_times, "peak_rss_mb": peak_rss_mb()}


def worker_vectorbt(bars: int, max_window: int, repeats: int) -> dict:
    import numpy as np
    import vectorbt as vbt

    from framework.synthetic import generate_ohlcv

    def frame(n: int):
        df = generate_ohlcv(n, freq="1h", seed=1)
        df.index = df.index.tz_localize(None)  # tz-aware index: slow wrapping (bench_core notes)
        return df

    w = windows(max_window)

    def run(df):
        close = df["close"]
        fast, slow = vbt.MA.run_combs(close, window=w, r=2, short_names=["fast", "slow"])
        entries = fast.ma_crossed_above(slow).shift(1, fill_value=False)
        exits = fast.ma_crossed_below(slow).shift(1, fill_value=False)
        pf = vbt.Portfolio.from_signals(close, entries, exits, price=df["open"], fees=FEES,
                                        size=np.inf, freq="1h")
        return pf.total_return()

    run(frame(500))  # compile vectorbt's kernels outside the timing
    data = frame(bars)
    combos = len(w) * (len(w) - 1) // 2
    return {"bars": bars, "combos": combos, "sweep_s": timings(lambda: run(data), repeats),
            "peak_rss_mb": peak_rss_mb()}


def in_subprocess(args: list[str]) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bars", type=int, default=None, help="TradPal sweep bars (default 100,000)")
    ap.add_argument("--vbt-bars", type=int, default=None,
                    help="vectorbt bars (default 10,000: it holds bars x combinations arrays)")
    ap.add_argument("--max-window", type=int, default=None,
                    help="windows 2..N for fast and slow, fast < slow (default 50: 1,176 combos)")
    ap.add_argument("--single-bars", type=int, default=None,
                    help="bars of the single backtest (default 1,000,000)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls, best taken "
                    "(default 3; --quick: 1)")
    ap.add_argument("--quick", action="store_true", help="smoke run on tiny sizes")
    ap.add_argument("--worker", choices=["tradpal", "vectorbt"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    q = args.quick
    bars = args.bars or (2_000 if q else 100_000)
    vbt_bars = args.vbt_bars or (2_000 if q else 10_000)
    max_window = args.max_window or (10 if q else 50)
    single_bars = args.single_bars or (20_000 if q else 1_000_000)
    repeats = args.repeats or (1 if q else 3)
    if max_window < 3 or repeats < 1 or min(bars, vbt_bars, single_bars) < 1:
        ap.error("need --max-window >= 3, --repeats >= 1 and positive bar counts")

    if args.worker == "tradpal":
        print(json.dumps(worker_tradpal(bars, max_window, single_bars, repeats)))
        return 0
    if args.worker == "vectorbt":
        print(json.dumps(worker_vectorbt(vbt_bars, max_window, repeats)))
        return 0

    common = ["--max-window", str(max_window), "--repeats", str(repeats)]
    tp = in_subprocess(["--worker", "tradpal", "--bars", str(bars), "--single-bars",
                        str(single_bars), *common])
    vb = in_subprocess(["--worker", "vectorbt", "--vbt-bars", str(vbt_bars), *common])

    def rate(side: dict) -> float:
        return side["bars"] * side["combos"] / min(side["sweep_s"])

    tp_rate, vb_rate = rate(tp), rate(vb)
    single_ns = min(tp["single_s"]) / tp["single_bars"] * 1e9

    def fmt(xs: list[float]) -> str:
        return f"{min(xs):.3f} / {statistics.median(xs):.3f} / {max(xs):.3f}"

    print(f"SMA crossover grid, windows 2..{max_window}, fast < slow; fees {FEES:g}; "
          f"{repeats} timed call(s) each, warm (load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} cores)")
    print(f"{'side':<30} {'combos':>7} {'bars':>10} {'s min/median/max':>24} "
          f"{'bar-combos/s':>13} {'peak RSS MB':>12}")
    print(f"{'TradPal framework.sweep.sweep':<30} {tp['combos']:>7,} {tp['bars']:>10,} "
          f"{fmt(tp['sweep_s']):>24} {tp_rate:>13.3e} {tp['peak_rss_mb']:>12,.0f}")
    print(f"{'vectorbt run_combs+from_signals':<30} {vb['combos']:>7,} {vb['bars']:>10,} "
          f"{fmt(vb['sweep_s']):>24} {vb_rate:>13.3e} {vb['peak_rss_mb']:>12,.0f}")
    print(f"speedup vs vectorbt per bar-combination: {tp_rate / vb_rate:.2f}x"
          + ("" if tp["bars"] == vb["bars"] else
             " (the sides ran on different bar counts: rates compare like with like, the "
             "vectorbt time would grow with bars x combinations)"))
    print(f"single Backtest(SmaCross()).run() on {tp['single_bars']:,} bars: "
          f"{fmt(tp['single_s'])} s, {single_ns:.1f} ns/bar (best)")
    print(f"goals: sweeps >= {GOAL_COMBOS_PER_S:.0e} bar-combinations/s (measured "
          f"{tp_rate:.2e}); single <= {GOAL_NS_PER_BAR:g} ns/bar (measured {single_ns:.1f})")
    print("(peak RSS: each framework in its own subprocess, including its imports and data)")
    print()

    result = {
        "tradpal_bar_combos_per_s": round(tp_rate, 1),
        "vectorbt_bar_combos_per_s": round(vb_rate, 1),
        "speedup_vs_vectorbt": round(tp_rate / vb_rate, 4),
        "peak_rss_mb": round(tp["peak_rss_mb"], 1),
        "vectorbt_peak_rss_mb": round(vb["peak_rss_mb"], 1),
        "single_ns_per_bar": round(single_ns, 3),
        "tradpal_grid": {"windows": [2, max_window], "combos": tp["combos"], "bars": tp["bars"]},
        "vectorbt_grid": {"windows": [2, max_window], "combos": vb["combos"], "bars": vb["bars"]},
        "tradpal_sweep_s": tp["sweep_s"],
        "vectorbt_sweep_s": vb["sweep_s"],
        "single_bars": tp["single_bars"],
        "single_s": tp["single_s"],
        "repeats": repeats,
        "goals": {"bar_combos_per_s": GOAL_COMBOS_PER_S, "single_ns_per_bar": GOAL_NS_PER_BAR},
        "loadavg_1min": round(os.getloadavg()[0], 2),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
