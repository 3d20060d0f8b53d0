"""Risk analytics benchmark: Monte Carlo paths per second and VaR over 1M bars, beside NumPy/pandas.

One run, one machine, the same inputs for both sides of every row, and the outputs compared
(the ``max_diff`` columns) so that the two sides provably did the same work:

- Monte Carlo, bootstrap of trades: ``--paths`` paths (10,000) of ``--trades`` trades (1,000)
  drawn with replacement from 1,000 trade returns; per path the final return, max drawdown and
  lowest equity. TradPal: ``risk.monte_carlo(trades, "trades", ...)`` end to end (DataFrame
  included) and the kernel alone (``risk_nb.mc_trades_nb``). Peer: the same computation
  vectorised in NumPy over a (paths, trades) matrix, drawing the *same* indices (SplitMix64 in
  uint64 arithmetic, the generator documented in ``framework.risk_nb``), then ``cumprod``,
  ``maximum.accumulate`` and ``min``: same draws, so the same outputs to rounding. The
  stationary block bootstrap is timed too (TradPal only, the same sizes in bars).
- Rolling historical VaR over ``--bars`` (1M) returns, window ``--window`` (250), 99 %: TradPal
  ``risk.rolling_var_es`` (sorted window slid by one insertion per bar, chunks in parallel; it
  also returns ES) against pandas ``Series.rolling(window).quantile(0.01)`` (VaR only; pandas
  has no rolling ES). Both interpolate linearly.
- Rolling parametric (normal) VaR and ES: TradPal ``rolling_var_es(method="parametric")``
  (rolling power sums in chunks) against pandas ``rolling().mean()`` and ``.std()`` with the
  same normal formula.
- One VaR and ES over all 1M returns, ``risk.var_es``: historical (TradPal's partial sort vs
  ``np.quantile`` and a masked mean) and parametric (vs NumPy mean/std with scipy's normal).

Warm timings are the best of ``--repeats`` calls; the first call (compilation, or loading it
from numba's on-disk cache) is reported apart. The returns are the close-to-close returns of
``generate_ohlcv(--bars)`` (GARCH volatility clusters, fat tails).

Prints a table and, as its last line, one JSON object (``mc_paths_per_s``, ``mc_s``,
``mc_numpy_s``, ``rolling_hist_var_s``, ``rolling_hist_var_pandas_s``, ... ``target_met``).

    python research/bench_research.py            # the sizes above (about a minute on 2 cores)
    python research/bench_research.py --quick    # small smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numba  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from framework import risk  # noqa: E402
from framework import risk_nb as nb  # noqa: E402
from framework.synthetic import generate_ohlcv  # noqa: E402

TARGET_MC_S = 0.5  # issue 10: 10,000 paths x 1,000 trades in under 0.5 s
CONFIDENCE = 0.99
SEED = 12345


def best_of(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(first call's seconds, best warm seconds, last output)."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return first, best, out


# --- NumPy peers --------------------------------------------------------------------------

_GAMMA = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def numpy_trade_bootstrap(trades: np.ndarray, n_paths: int, n_steps: int, seed: int) -> np.ndarray:
    """(paths, 3) final return, max drawdown, min return; vectorised over a paths x steps matrix."""
    with np.errstate(over="ignore"):
        start = _mix(np.uint64(seed) + _GAMMA * np.arange(1, n_paths + 1, dtype=np.uint64))
        z = _mix(start[:, None] + _GAMMA * np.arange(1, n_steps + 1, dtype=np.uint64)[None, :])
    u = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    idx = np.minimum((u * len(trades)).astype(np.int64), len(trades) - 1)
    equity = np.maximum(np.cumprod(1.0 + trades[idx], axis=1), 0.0)
    peak = np.maximum(np.maximum.accumulate(equity, axis=1), 1.0)  # the start (1.0) is a peak
    out = np.empty((n_paths, 3))
    out[:, 0] = equity[:, -1] - 1.0
    out[:, 1] = np.minimum((equity / peak - 1.0).min(axis=1), 0.0)
    out[:, 2] = np.minimum(equity.min(axis=1), 1.0) - 1.0
    return out


def pandas_rolling_normal_var(r: pd.Series, window: int, confidence: float) -> np.ndarray:
    level = 1.0 - confidence
    rolling = r.rolling(window)
    return -(rolling.mean() + rolling.std() * stats.norm.ppf(level)).to_numpy()


def numpy_hist_var_es(r: np.ndarray, confidence: float) -> tuple[float, float]:
    q = np.quantile(r, 1.0 - confidence)
    return -q, -r[r <= q].mean()


def numpy_normal_var_es(r: np.ndarray, confidence: float) -> tuple[float, float]:
    level = 1.0 - confidence
    mu, sd = r.mean(), r.std(ddof=1)
    z = stats.norm.ppf(level)
    return -(mu + sd * z), -(mu - sd * stats.norm.pdf(z) / level)


# --- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bars", type=int, default=1_000_000, help="returns for the VaR rows")
    parser.add_argument("--window", type=int, default=250, help="rolling window (bars)")
    parser.add_argument("--paths", type=int, default=10_000, help="Monte Carlo paths")
    parser.add_argument("--trades", type=int, default=1_000, help="trades per path")
    parser.add_argument("--repeats", type=int, default=5, help="warm calls; the best counts")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.bars, args.paths, args.trades, args.repeats = 20_000, 500, 200, 1

    rng = np.random.default_rng(SEED)
    trades = rng.normal(0.004, 0.03, 1_000)  # a pool of 1,000 trade returns
    close = generate_ohlcv(args.bars + 1, freq="1h", seed=1)["close"].to_numpy()
    r_np = close[1:] / close[:-1] - 1.0
    r = pd.Series(r_np)
    rows: list[tuple[str, str, float, float, float | None]] = []  # name, side, first, warm, diff
    res: dict[str, object] = {}

    # Monte Carlo: trade bootstrap
    empty = np.empty((0, 0))
    first, mc_s, mc = best_of(
        lambda: risk.monte_carlo(trades, "trades", args.paths, args.trades, seed=SEED),
        args.repeats)
    _, mc_kernel_s, mc_kernel = best_of(
        lambda: nb.mc_trades_nb(trades, args.paths, args.trades, np.uint64(SEED), empty),
        args.repeats)
    _, mc_np_s, mc_np = best_of(
        lambda: numpy_trade_bootstrap(trades, args.paths, args.trades, SEED), args.repeats)
    mc_diff = float(np.abs(mc_kernel - mc_np).max())
    assert np.array_equal(mc.paths.to_numpy(), mc_kernel)
    rows += [
        (f"MC trade bootstrap {args.paths:,} x {args.trades:,}", "TradPal monte_carlo", first,
         mc_s, None),
        ("", "TradPal kernel alone", np.nan, mc_kernel_s, None),
        ("", "NumPy vectorised (same draws)", np.nan, mc_np_s, mc_diff),
    ]
    first, block_s, _ = best_of(
        lambda: risk.monte_carlo(r_np[: max(args.trades, 10)], "block", args.paths, args.trades,
                                 block=20, seed=SEED), args.repeats)
    rows.append((f"MC block bootstrap {args.paths:,} x {args.trades:,} bars", "TradPal", first,
                 block_s, None))
    res.update(mc_s=mc_s, mc_kernel_s=mc_kernel_s, mc_numpy_s=mc_np_s,
               mc_paths_per_s=args.paths / mc_s, mc_numpy_paths_per_s=args.paths / mc_np_s,
               mc_speedup_vs_numpy=mc_np_s / mc_s, mc_max_diff=mc_diff, mc_block_s=block_s)

    # rolling historical VaR
    first, hist_s, hist = best_of(lambda: risk.rolling_var_es(r, args.window, CONFIDENCE),
                                  args.repeats)
    _, hist_pd_s, hist_pd = best_of(
        lambda: -r.rolling(args.window).quantile(1.0 - CONFIDENCE).to_numpy(), args.repeats)
    hist_diff = float(np.nanmax(np.abs(hist["var"].to_numpy() - hist_pd)))
    rows += [
        (f"Rolling historical VaR+ES, {args.bars:,} bars, window {args.window}", "TradPal",
         first, hist_s, None),
        ("", "pandas rolling().quantile (VaR only)", np.nan, hist_pd_s, hist_diff),
    ]
    # rolling parametric VaR
    first, par_s, par = best_of(
        lambda: risk.rolling_var_es(r, args.window, CONFIDENCE, method="parametric"),
        args.repeats)
    _, par_pd_s, par_pd = best_of(
        lambda: pandas_rolling_normal_var(r, args.window, CONFIDENCE), args.repeats)
    par_diff = float(np.nanmax(np.abs(par["var"].to_numpy() - par_pd)))
    rows += [
        ("Rolling normal VaR+ES, same bars", "TradPal", first, par_s, None),
        ("", "pandas rolling mean/std (VaR only)", np.nan, par_pd_s, par_diff),
    ]
    res.update(rolling_hist_var_s=hist_s, rolling_hist_var_pandas_s=hist_pd_s,
               rolling_hist_speedup_vs_pandas=hist_pd_s / hist_s, rolling_hist_max_diff=hist_diff,
               rolling_param_var_s=par_s, rolling_param_var_pandas_s=par_pd_s,
               rolling_param_speedup_vs_pandas=par_pd_s / par_s, rolling_param_max_diff=par_diff)

    # one VaR over all bars
    for name, method, peer in (("historical", "historical", numpy_hist_var_es),
                               ("parametric", "parametric", numpy_normal_var_es)):
        first, s, got = best_of(lambda m=method: risk.var_es(r_np, CONFIDENCE, method=m),
                                args.repeats)
        _, s_np, want = best_of(lambda p=peer: p(r_np, CONFIDENCE), args.repeats)
        diff = float(np.abs(np.subtract(got, want)).max())
        rows += [
            (f"VaR+ES {name}, all {args.bars:,} bars", "TradPal", first, s, None),
            ("", "NumPy/scipy", np.nan, s_np, diff),
        ]
        res.update({f"static_{name}_s": s, f"static_{name}_numpy_s": s_np,
                    f"static_{name}_max_diff": diff})

    # table
    print(f"TradPal risk benchmark: numba {numba.__version__}, numpy {np.__version__}, "
          f"pandas {pd.__version__}, {numba.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    head = f"{'':58} {'':36} {'first call s':>12} {'warm s':>10} {'max |diff|':>11}"
    print(head)
    print("-" * len(head))
    for name, side, first, warm, diff in rows:
        first_s = "" if np.isnan(first) else f"{first:.3f}"
        diff_s = "" if diff is None else f"{diff:.1e}"
        print(f"{name:58} {side:36} {first_s:>12} {warm:>10.4f} {diff_s:>11}")
    print(f"\nMonte Carlo: {args.paths / mc_s:,.0f} paths/s end to end "
          f"(target {args.paths:,} x {args.trades:,} in < {TARGET_MC_S} s: "
          f"{'met' if mc_s < TARGET_MC_S else 'NOT met'}).")
    print("max |diff| compares each peer with the TradPal row above it (VaR, or the per-path "
          "statistics for Monte Carlo).")
    res.update(bars=args.bars, window=args.window, paths=args.paths, trades=args.trades,
               repeats=args.repeats, threads=numba.get_num_threads(),
               target_mc_s=TARGET_MC_S, target_met=bool(mc_s < TARGET_MC_S))
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
