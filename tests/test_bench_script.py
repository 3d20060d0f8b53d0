"""research/bench_core.py runs end to end and ends with its JSON summary line (README "Benchmark").

A smoke run on few bars: it checks the script works and reports what it promises, never how fast
anything is (no timed assertions in the test suite)."""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_prints_a_json_summary_last():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "research" / "bench_core.py"), "--quick", "--bars", "5000",
         "--repeats", "1", "--bt-bars", "1000"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines, "the benchmark printed nothing"
    summary = json.loads(lines[-1])
    assert isinstance(summary, dict)
    for key in ("tradpal_s", "vectorbt_s", "backtesting_py_s", "speedup_vs_vectorbt",
                "speedup_vs_backtesting_py", "peak_rss_mb"):
        value = summary[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value) and value > 0, (key, value)
    assert summary["bars"] == 5000 and summary["repeats"] == 1
    # the two vectorised tools did the same work: the same trades over the same bars
    assert summary["tradpal_trades"] > 0
    assert summary["tradpal_trades"] == summary["vectorbt_trades"]
    # the table above the JSON line names all three tools
    text = proc.stdout
    assert "TradPal" in text and "vectorbt" in text and "backtesting.py" in text
