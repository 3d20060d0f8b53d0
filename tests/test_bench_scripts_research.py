"""research/bench_compile.py, bench_sweep.py and bench_live.py run and end with their JSON summary.

Smoke runs on tiny sizes: they check each script reports what it promises (README "Compile time
and sweeps"), never how fast anything is (no timed assertions in the test suite). The cold
figures of bench_compile (a full compile in an empty cache) are skipped here to keep the test
short; the edit-to-result figure still recompiles one edited strategy."""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_json(script: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "research" / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines, f"{script} printed nothing"
    summary = json.loads(lines[-1])
    assert isinstance(summary, dict)
    return summary


def positive_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def test_bench_compile_reports_fresh_process_timings():
    summary = run_json("bench_compile.py", "--quick", "--skip-cold")
    assert summary["repeats"] == 1
    for key in ("warm_first_backtest_s", "edit_to_result_s"):
        assert positive_number(summary[key]), (key, summary[key])
    # skipped figures are present and null, not missing
    for key in ("cold_first_backtest_s", "install_warm_up_s", "first_demo_after_install_s", "first_sweep_s"):
        assert summary[key] is None
    assert summary["vectorbt_cold_first_s"] is None


def test_bench_sweep_reports_rates_memory_and_ns_per_bar():
    summary = run_json("bench_sweep.py", "--quick", "--bars", "1000", "--vbt-bars", "1000",
                       "--max-window", "6", "--single-bars", "5000")
    for key in ("tradpal_bar_combos_per_s", "vectorbt_bar_combos_per_s", "speedup_vs_vectorbt",
                "peak_rss_mb", "vectorbt_peak_rss_mb", "single_ns_per_bar"):
        assert positive_number(summary[key]), (key, summary[key])
    # windows 2..6, fast < slow: C(5, 2) = 10 combinations on each side, over the bars asked for
    assert summary["tradpal_grid"] == {"windows": [2, 6], "combos": 10, "bars": 1000}
    assert summary["vectorbt_grid"] == {"windows": [2, 6], "combos": 10, "bars": 1000}
    assert summary["single_bars"] == 5000


def test_bench_live_reports_latency_and_replay():
    """research/bench_live.py --quick (README "Benchmarks"): per-bar latency figures for each
    symbol count, and a replay that stepped every bar it was asked for."""
    summary = run_json("bench_live.py", "--quick", "--bars", "200", "--replay", "300", "--warmup", "100")
    assert [r["symbols"] for r in summary["latency"]] == [1, 10]
    for run in summary["latency"]:
        assert run["bars"] == 200
        for part in ("ready", "commit", "handed"):
            p50, p99, top = (run[f"{part}_{q}_ms"] for q in ("p50", "p99", "max"))
            assert positive_number(p50) and p50 <= p99 <= top, (part, run)
        assert run["handed_p99_ms"] <= run["ready_max_ms"] + run["commit_max_ms"]
    replay = summary["replay"]
    assert replay["bars"] == 300 and positive_number(replay["wall_s"]) and positive_number(replay["bars_per_s"])
    assert replay["requests"] < 300  # catching up: many candles per request
    assert set(summary["machine"]) == {"cpu", "cores", "python", "numba"}
