"""Mutation check: plant known bugs one at a time and assert the test suite catches each.

A test suite that passes on broken code protects nothing. Each mutant below is one small
textual patch of the sources (a side swap in a strategy, a one-bar look-ahead in the driver,
dropped exits, halved fees, take-profit before stop-loss, no daily-loss block). For each, the
tree is copied to a temporary folder (without ``.git``, ``.venv``, ``data/cache`` and caches),
the patch is applied -- its anchor must match exactly as often as declared, so the check breaks
loudly when the code moves instead of silently testing an unpatched copy -- and the tests named
for that mutant run against the copy (``PYTHONPATH`` = the copy, numba and kernel caches in the
temporary folder). A mutant is *caught* when pytest reports failing tests (exit status 1).

Prints a table mutant -> catching tests -> caught?, then one JSON line with the results.

    python research/mutation_check.py                      # every mutant
    python research/mutation_check.py lookahead daily_loss # some of them
    python research/mutation_check.py --list

The tests run as plain Python (``NUMBA_DISABLE_JIT=1``): each mutant's copy has new sources,
and compiling its kernels cold would cost 20-60 s per mutant on 2 cores, more than running the
few selected tests uncompiled; ``--jit`` compiles instead. Test files that do not exist in this
tree are reported as missing, and a mutant none of whose tests exist as not verified, never as
caught.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: what a mutant copy leaves out: version control, the virtual environment, downloaded data and
#: every cache (a stale numba cache would run the unpatched kernels)
IGNORE = shutil.ignore_patterns(".git", ".venv", "cache", "__pycache__", ".pytest_cache",
                                ".hypothesis", "*.egg-info", ".ipynb_checkpoints")


@dataclass(frozen=True)
class Patch:
    """Replace ``pattern`` (a regular expression) by ``replacement`` in the file ``path``;
    the pattern must match exactly ``count`` times."""

    path: str
    pattern: str
    replacement: str
    count: int = 1

    def apply(self, text: str) -> str:
        """``text`` patched; ``ValueError`` if the anchor does not match ``count`` times."""
        found = len(re.findall(self.pattern, text))
        if found != self.count:
            raise ValueError(
                f"mutation anchor {self.pattern!r} matches {found} times in {self.path}, "
                f"expected {self.count}: the code moved; update the patch in "
                "research/mutation_check.py"
            )
        return re.sub(self.pattern, self.replacement, text)


@dataclass(frozen=True)
class Mutant:
    """A planted bug: patches applied in order, and the pytest arguments (files, ``-k``
    selections) of the tests that must fail on it."""

    name: str
    bug: str
    patches: tuple[Patch, ...]
    tests: tuple[str, ...]


def side_swap(strategy: str) -> Mutant:
    """Swap the long and short intents in a strategy's decision rule (each strategy writes
    ``= ACTION_LONG`` and ``= ACTION_SHORT`` once)."""
    path = f"strategies/{strategy}.py"
    return Mutant(
        name=f"side_swap_{strategy}",
        bug=f"{strategy}: long and short signals swapped",
        patches=(
            Patch(path, r"= ACTION_LONG\b", "= ACTION_@@SWAP@@"),
            Patch(path, r"= ACTION_SHORT\b", "= ACTION_LONG"),
            Patch(path, r"= ACTION_@@SWAP@@", "= ACTION_SHORT"),
        ),
        # vectorbt's own SMA crossover is the oracle already in the suite for sma_cross
        tests=("tests/test_strategy_oracles.py",
               *(("tests/test_vectorbt_parity.py",) if strategy == "sma_cross" else ())),
    )


#: the driver hands ``decide_nb`` the *next* bar's close (the last bar's own at the end); the
#: bar stepper, whose arrays hold one bar, still gets its own
LOOKAHEAD = Patch("framework/drivers_nb.py", r"c\[row, x\], v\[row, x\]",
                  "c[min(row + 1, c.shape[0] - 1), x], v[row, x]")

MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in (
        *(side_swap(s) for s in ("sma_cross", "rsi_reversion", "macd_trend",
                                 "bollinger_reversion", "donchian_breakout")),
        Mutant(
            name="lookahead",
            bug="backtest driver gives decide_nb the next bar's close",
            patches=(LOOKAHEAD,),
            tests=("tests/test_lookahead.py::"
                   "test_future_bars_change_nothing_decided_before[sma_cross]",),
        ),
        Mutant(
            name="dropped_exits",
            bug="exit signals are ignored (no exit order is queued)",
            patches=(Patch("framework/sim_nb.py",
                           r"_queue_exit\(g, cs, j, t, col0, ev, nrec, REASON_SIGNAL, REJECT_NONE\)\n(\s+)continue",
                           "pass\n\\1continue"),),
            tests=("tests/test_reference_sim.py", "tests/test_sim.py"),
        ),
        Mutant(
            name="fees_halved",
            bug="half the configured fee is booked",
            patches=(Patch("framework/sim_nb.py", r"qty \* price \* p\[P_FEES\], FEE_QUOTE",
                           "qty * price * p[P_FEES] * 0.5, FEE_QUOTE"),),
            tests=("tests/test_reference_sim.py", "tests/test_sim.py"),
        ),
        Mutant(
            name="tp_before_sl",
            bug="take-profit checked before stop-loss when both are touched in one bar",
            # a take-profit check inserted ahead of the stop check: the target wins a bar that
            # touches both (DESIGN.md: the stop-loss is assumed first)
            patches=(Patch(
                "framework/sim_nb.py",
                r"\n([ \t]+)if not np\.isnan\(stop\):\n",
                "\n\\1tp0 = cs[j, C_TP_PRICE]\n"
                "\\1if not inside and not np.isnan(tp0)"
                " and ((h if d > 0.0 else l) - tp0) * d >= 0.0:\n"
                "\\1    _close_position(g, cs, j, t, cs[j, C_TP_ID], o if (o - tp0) * d >= 0.0 else tp0, "
                "ORDER_TAKE_PROFIT, REASON_TAKE_PROFIT, p, fills, nrec, col0)\n"
                "\\1    return\n"
                "\\1if not np.isnan(stop):\n",
            ),),
            tests=("tests/test_reference_sim.py", "tests/test_sim.py"),
        ),
        Mutant(
            name="no_daily_loss_block",
            bug="the daily-loss limit no longer blocks entries for the rest of the day",
            patches=(Patch("framework/sim_nb.py", r"elif g\[G_DAY_BLOCKED\] != 0\.0:", "elif False:"),),
            tests=("tests/test_sim.py", "-k", "daily_loss"),
        ),
    )
}


def mutant_copy(mutant: Mutant, dest: Path) -> None:
    """Copy the tree to ``dest`` and apply the mutant's patches there."""
    shutil.copytree(ROOT, dest, ignore=IGNORE)
    for patch in mutant.patches:
        path = dest / patch.path
        path.write_text(patch.apply(path.read_text()))


def split_tests(args: tuple[str, ...], root: Path) -> tuple[list[str], list[str]]:
    """(pytest arguments without the test files missing under ``root``, those missing files)."""
    kept, missing = [], []
    for arg in args:
        if arg.startswith("tests/") and not (root / arg.split("::")[0]).exists():
            missing.append(arg)
        else:
            kept.append(arg)
    return kept, missing


def run_pytest(args: list[str], root: Path, cache: Path, jit: bool,
               timeout: float) -> tuple[int, str]:
    """Run pytest on ``args`` inside ``root`` with ``root`` first on the path; (status, output)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "TRADPAL_KERNEL_CACHE", "NUMBA_DISABLE_JIT")}
    env.update(PYTHONPATH=str(root), TRADPAL_CACHE_HOME=str(cache), PYTHONDONTWRITEBYTECODE="1")
    if not jit:
        env["NUMBA_DISABLE_JIT"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr


def check_mutant(mutant: Mutant, jit: bool = False, timeout: float = 900.0) -> dict:
    """Apply ``mutant`` to a temporary copy and run its tests there, as plain Python unless
    ``jit``. The result's ``caught`` is True when they failed, False when they passed, None when
    nothing could be run."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"tradpal-mutant-{mutant.name}-") as tmp:
        copy = Path(tmp) / "tree"
        mutant_copy(mutant, copy)
        args, missing = split_tests(mutant.tests, copy)
        row = {"mutant": mutant.name, "bug": mutant.bug, "tests": list(mutant.tests),
               "missing": missing, "caught": None, "failed": [], "status": None}
        if any(a.startswith("tests/") for a in args):
            status, out = run_pytest(args, copy, Path(tmp) / "cache", jit, timeout)
            row["status"] = status
            row["failed"] = re.findall(r"^FAILED (\S+)", out, flags=re.M)
            if status == 1:
                row["caught"] = True
            elif status == 0:
                row["caught"] = False
            else:  # collection error, usage error, interrupted: no verdict
                row["error"] = out[-2000:]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def verdict(row: dict) -> str:
    if row["caught"] is True:
        return "caught"
    if row["caught"] is False:
        return "NOT CAUGHT"
    if row.get("error"):
        return f"error (pytest status {row['status']})"
    return "not verified (tests missing)"


def table(rows: list[dict]) -> str:
    """Mutant -> catching tests -> caught? as fixed-width text."""
    lines = [("mutant", "catching tests", "caught?", "failing test")]
    for r in rows:
        tests = " ".join(a + (" [missing]" if a in r["missing"] else "") for a in r["tests"])
        lines.append((r["mutant"], tests, verdict(r), r["failed"][0] if r["failed"] else ""))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    """Run the named mutants (default: all); exit status 0 only if every one was caught."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mutants", nargs="*",
                        help=f"mutant names (default: all): {', '.join(MUTANTS)}")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--jit", action="store_true",
                        help="run the tests compiled (a cold numba compile per mutant) instead of "
                             "as plain Python (NUMBA_DISABLE_JIT=1)")
    args = parser.parse_args(argv)
    if args.list:
        for m in MUTANTS.values():
            print(f"{m.name:28s} {m.bug}  <- {' '.join(m.tests)}")
        return 0
    unknown = [n for n in args.mutants if n not in MUTANTS]
    if unknown:
        parser.error(f"unknown mutant(s) {', '.join(unknown)}; valid: {', '.join(MUTANTS)}")
    rows = []
    for name in args.mutants or list(MUTANTS):
        rows.append(check_mutant(MUTANTS[name], jit=args.jit))
        print(f"{name}: {verdict(rows[-1])} ({rows[-1]['seconds']} s)", file=sys.stderr, flush=True)
    print(table(rows))
    print(json.dumps({"mutants": rows,
                      "caught": sum(r["caught"] is True for r in rows),
                      "not_caught": [r["mutant"] for r in rows if r["caught"] is False],
                      "not_verified": [r["mutant"] for r in rows if r["caught"] is None]}))
    return 0 if all(r["caught"] is True for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
