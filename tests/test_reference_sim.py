"""Long random runs of the simulator against two independent models.

1. vectorbt (``tests/vbt_oracle.py``, conventions emulated as its docstring says): shorts and
   reversals, stop-loss, take-profit, trailing stops, slippage, fees and a cash group across
   instruments, on thousands of bars per seeded random configuration.
2. ``tests/reference_sim.py``, a plain-Python reading of the README's rules, for what vectorbt
   cannot express: limit and stop entries, every sizing mode, ATR stops, the risk limits, and
   shorts inside a cash group.

Decisions come from the scripted strategy (``tests/scripted.py``: the volume column holds a
random script), so both sides see the very same intents and only the fill rules are compared.

Tolerances: prices are the same operations in the same order on both sides (rtol 1e-12).
Quantities, fees, cash and equity are sums booked in a different order (and the models seed
their ATR and volatility windows differently), so they agree to rtol 1e-9 over the run.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from framework.backtest import Backtest
from framework.enums import ORDER_TYPE_NAMES, REASON_NAMES
from framework.runner import BarStepper
from framework.settings import SimSettings
from framework.synthetic import generate_ohlcv
from tests import reference_sim as ref
from tests.scripted import Scripted
from tests.vbt_oracle import assert_same_trades, run_model

HOURS_PER_YEAR = 365 * 24  # the synthetic bars are hourly


def scripted_frames(n_bars: int, n_cols: int, seed: int, codes: np.ndarray) -> dict[str, pd.DataFrame]:
    """Synthetic hourly bars whose volume column carries the script (``codes``: bars x cols)."""
    frames = generate_ohlcv(n_bars, n_cols, freq="1h", seed=seed)
    frames = frames if isinstance(frames, dict) else {"asset": frames}
    out = {}
    for j, (name, f) in enumerate(frames.items()):
        f = f.copy()
        f["volume"] = codes[:, j].astype(float)
        out[name] = f
    return out


def prices(frames: dict[str, pd.DataFrame]) -> list[np.ndarray]:
    return [np.column_stack([f[x].to_numpy() for f in frames.values()]) for x in ("open", "high", "low", "close")]


def random_script(rng: np.random.Generator, n_bars: int, n_cols: int, codes, p_signal: float) -> np.ndarray:
    """A decision at a fraction ``p_signal`` of the closes, drawn from ``codes``."""
    script = rng.choice(codes, size=(n_bars, n_cols))
    return np.where(rng.random((n_bars, n_cols)) < p_signal, script, 0)


# ---------------------------------------------------------------------------------------------
# 1. against vectorbt
# ---------------------------------------------------------------------------------------------

VBT_SEEDS = range(12)
VBT_BARS = 4000


def vbt_config(seed: int) -> tuple[dict, int]:
    """Random settings vectorbt can express, and the number of instruments."""
    rng = np.random.default_rng(1000 + seed)
    settings = {
        "fees": float(rng.choice([0.0, 0.0005, 0.001, 0.003])),
        "slippage": float(rng.choice([0.0, 0.0002, 0.001])),
        "allow_short": bool(rng.random() < 0.7),
    }
    # levels a few bars' moves away, or (one run in three) both inside an hourly bar's range
    # (about 1 %), where the stop and the target are often touched in one bar
    top = 0.006 if seed % 3 == 0 else 0.04
    stop = rng.choice(["sl", "trail", "none"], p=[0.45, 0.4, 0.15])
    if stop == "sl":
        settings["sl_pct"] = float(rng.uniform(0.002, top))
    elif stop == "trail":
        settings["trail_pct"] = float(rng.uniform(0.002, top))
    if rng.random() < 0.75 or seed % 3 == 0:
        settings["tp_pct"] = float(rng.uniform(0.002, top))
    n_cols = 1
    if seed % 4 == 3:  # a cash group: long only (see vbt_oracle: shorts in a group differ)
        n_cols = 2
        settings.update(cash_sharing=True, allow_short=False)
        if seed % 8 == 3:  # no stops: every fill at the open
            for name in ("sl_pct", "trail_pct", "tp_pct"):
                settings.pop(name, None)
        # half the equity each, so the cash cap binds at times
        settings["size"] = 0.5
    return settings, n_cols


@pytest.mark.parametrize("seed", VBT_SEEDS)
def test_long_random_runs_match_vectorbt(seed):
    settings, n_cols = vbt_config(seed)
    rng = np.random.default_rng(seed)
    codes = random_script(rng, VBT_BARS, n_cols, [1, 2, 3], p_signal=0.04)
    frames = scripted_frames(VBT_BARS, n_cols, seed, codes)
    res = Backtest(Scripted(), frames, init_cash=10_000.0, **settings).run()
    o, h, l, c = prices(frames)
    long_entry, exit_, short = codes == 1, codes == 2, codes == 3
    allow_short = settings.get("allow_short", False)
    model = run_model(
        o, h, l, c, long_entry, short, exit_ | (short & ~allow_short), exit_,
        init_cash=10_000.0, **settings,
    )
    label = f"seed {seed}: {settings}"
    assert len(res.trade_records) > 20, label
    assert_same_trades(res.trade_records, model.records, label)
    np.testing.assert_allclose(res.group_equity, model.equity, rtol=1e-9, err_msg=label)


# ---------------------------------------------------------------------------------------------
# 2. against the plain-Python reference of the README's rules
# ---------------------------------------------------------------------------------------------

REF_SEEDS = range(30)
REF_BARS = 2500
# script codes (tests/scripted.py): 1 long, 3 short, 2 exit; +10 as a limit order, +20 as a stop
ALL_CODES = [1, 2, 3, 11, 13, 21, 23]


def ref_config(seed: int) -> tuple[dict, int]:
    """Random settings over every sizing mode, stop form and risk limit, and the instruments."""
    rng = np.random.default_rng(5000 + seed)
    def pick(p):
        return rng.random() < p
    sizing = str(rng.choice(["fraction", "cash", "risk", "vol_target"]))
    size = {"fraction": rng.uniform(0.2, 1.0), "cash": rng.uniform(500, 20_000),
            "risk": rng.uniform(0.005, 0.05), "vol_target": rng.uniform(0.1, 1.5)}[sizing]
    s = {
        "fees": float(rng.choice([0.0, 0.0005, 0.001, 0.003])),
        "slippage": float(rng.choice([0.0, 0.0005, 0.002])),
        "sizing": sizing,
        "size": float(size),
        "atr_window": int(rng.integers(3, 20)),
        "atr_stop_mult": float(rng.uniform(0.5, 3.0)),
        "vol_window": int(rng.integers(5, 40)),
        "allow_short": bool(pick(0.6)),
    }
    tight = seed % 3 == 0  # levels inside a bar's range: stop and target often meet in one bar
    for name in ("sl", "tp", "trail"):
        form = rng.choice(["pct", "atr", "none"], p=[0.6, 0.25, 0.15] if tight else None)
        if form == "pct":
            s[f"{name}_pct"] = float(rng.uniform(0.002, 0.006 if tight else 0.04))
        elif form == "atr":
            s[f"{name}_atr"] = float(rng.uniform(0.3, 1.0 if tight else 4.0))
    if pick(0.4):
        s["max_drawdown"] = float(rng.uniform(0.03, 0.3))
    if pick(0.4):
        s["daily_loss"] = float(rng.uniform(0.005, 0.05))
    if pick(0.4):
        s["max_trades_per_day"] = int(rng.integers(1, 6))
    if pick(0.4):
        s["max_position_notional"] = float(rng.uniform(500, 8_000))
    if pick(0.3):
        s["max_exposure"] = float(rng.uniform(0.3, 1.5))
    if pick(0.4):
        s["cooldown_bars"] = int(rng.integers(0, 12))
    n_cols = int(rng.choice([1, 2, 3]))
    if n_cols > 1:
        s["cash_sharing"] = bool(pick(0.7))
        if pick(0.5):
            s["max_positions"] = int(rng.integers(1, n_cols + 1))
    return s, n_cols


def reference_decisions(codes: np.ndarray, c: np.ndarray, gap: float) -> list[list[ref.Decision | None]]:
    """The scripted strategy's intents, read from its docstring: action in the units digit,
    order type in the tens, level ``gap`` away from the close on the side the market must reach."""
    kinds = {0: ref.MARKET, 1: ref.LIMIT, 2: ref.STOP}
    actions = {1: ref.LONG, 2: ref.EXIT, 3: ref.SHORT}
    out = []
    for t in range(codes.shape[0]):
        row = []
        for j in range(codes.shape[1]):
            code = int(codes[t, j])
            if code % 10 not in actions:
                row.append(None)
                continue
            kind = kinds[code // 10]
            direction = {1: 1.0, 3: -1.0, 2: 0.0}[code % 10]
            side = direction if kind == ref.STOP else -direction
            row.append(ref.Decision(actions[code % 10], kind, c[t, j] * (1.0 + side * gap)))
        out.append(row)
    return out


def run_both(settings: dict, n_cols: int, seed: int, n_bars: int, codes: np.ndarray, gap: float,
             trade_from: int | None = None, emergency_at: int | None = None):
    """The backtest and the reference over the same script; ``trade_from`` and ``emergency_at``
    are bar indices (the backtest is given their times)."""
    frames = scripted_frames(n_bars, n_cols, seed, codes)
    index = next(iter(frames.values())).index
    times = {k: index[v] for k, v in (("trade_from", trade_from), ("emergency_at", emergency_at)) if v is not None}
    res = Backtest(Scripted(gap=gap), frames, init_cash=10_000.0, **times, **settings).run()
    o, h, l, c = prices(frames)
    days = (index.asi8 // 86_400_000_000_000).astype(np.int64)
    s = SimSettings.build(None, init_cash=10_000.0, **settings)
    fills, equity = ref.simulate(s, HOURS_PER_YEAR, o, h, l, c, days, reference_decisions(codes, c, gap),
                                 emergency_at=emergency_at, trade_from=trade_from or 0)
    return res, fills, equity


def assert_same_fills(res, fills: list[ref.Fill], equity: np.ndarray, label: str) -> None:
    f = res.fill_records
    order = np.lexsort((np.arange(len(f)), f["col"], f["bar"]))  # by bar, column, booking order
    f = f[order]
    theirs = sorted(enumerate(fills), key=lambda x: (x[1].bar, x[1].col, x[0]))
    theirs = [x[1] for x in theirs]
    ours = [(int(r["bar"]), int(r["col"]), int(r["side"]), ORDER_TYPE_NAMES[r["order_type"]], REASON_NAMES[r["reason"]])
            for r in f]
    want = [(x.bar, x.col, x.side, x.order_type, x.reason) for x in theirs]
    if ours != want:
        i = next((i for i, (a, b) in enumerate(zip(ours, want)) if a != b), min(len(ours), len(want)))
        raise AssertionError(
            f"{label}: {len(ours)} fills, reference {len(want)}; first difference at fill {i}:\n"
            f"tradpal   {ours[max(i - 3, 0):i + 2]}\nreference {want[max(i - 3, 0):i + 2]}"
        )
    np.testing.assert_allclose(f["price"], [x.price for x in theirs], rtol=1e-12, err_msg=label)
    np.testing.assert_allclose(f["qty"], [x.qty for x in theirs], rtol=1e-9, err_msg=label)
    np.testing.assert_allclose(f["fees"], [x.fees for x in theirs], rtol=1e-9, atol=1e-12, err_msg=label)
    np.testing.assert_allclose(res.group_equity, equity, rtol=1e-9, err_msg=label)


@pytest.mark.parametrize("seed", REF_SEEDS)
def test_long_random_runs_match_the_reference_simulator(seed):
    settings, n_cols = ref_config(seed)
    rng = np.random.default_rng(seed)
    codes = random_script(rng, REF_BARS, n_cols, ALL_CODES, p_signal=float(rng.uniform(0.02, 0.15)))
    gap = float(rng.choice([0.0, 0.002, 0.01]))
    res, fills, equity = run_both(settings, n_cols, seed, REF_BARS, codes, gap)
    label = f"seed {seed}, {n_cols} instrument(s): {settings}, gap {gap}"
    assert len(fills) > 20, label
    assert_same_fills(res, fills, equity, label)


@pytest.mark.parametrize("seed", range(3))
def test_emergency_stop_raised_between_bars_matches_the_reference(seed):
    """The live runner's core (``BarStepper``) and the backtest (``emergency_at``) with an
    emergency stop raised right before a random bar: its open flattens, nothing trades after."""
    settings, n_cols = ref_config(100 + seed)
    settings = {k: v for k, v in settings.items() if k not in ("cash_sharing", "max_drawdown")}
    settings["cash_sharing"] = n_cols > 1  # one stepper is one cash group
    rng = np.random.default_rng(100 + seed)
    n_bars = 1500
    codes = random_script(rng, n_bars, n_cols, ALL_CODES, p_signal=0.1)
    gap = 0.002
    frames = scripted_frames(n_bars, n_cols, seed, codes)
    o, h, l, c = prices(frames)
    days = (next(iter(frames.values())).index.asi8 // 86_400_000_000_000).astype(np.int64)
    s = SimSettings.build(None, init_cash=10_000.0, **settings)
    stepper = BarStepper(Scripted(gap=gap), s.vector(HOURS_PER_YEAR), n_columns=n_cols)
    # raised with a position open, to have something to flatten
    plain, _ = ref.simulate(s, HOURS_PER_YEAR, o, h, l, c, days, reference_decisions(codes, c, gap))
    held = np.zeros(n_bars, dtype=bool)
    for j in range(n_cols):
        mine = [x for x in plain if x.col == j] + [None]  # a column's fills alternate entry, exit
        for entry, leave in zip(mine[0::2], mine[1::2]):
            held[entry.bar:n_bars if leave is None else leave.bar] = True
    candidates = np.flatnonzero(held[n_bars // 3: 2 * n_bars // 3]) + n_bars // 3
    raised = int(rng.choice(candidates))
    equity = np.empty((n_bars, 1))
    for t in range(n_bars):
        if t == raised:
            stepper.emergency_stop()
            assert stepper.halted
        stepper.step(int(days[t]), o[t], h[t], l[t], c[t], codes[t].astype(float))
        equity[t] = stepper.equity
    fills, ref_equity = ref.simulate(s, HOURS_PER_YEAR, o, h, l, c, days, reference_decisions(codes, c, gap),
                                     emergency_at=raised)
    label = f"seed {seed}, emergency before bar {raised}: {settings}"
    assert any(x.reason == "emergency_stop" for x in fills), label  # it had something to close
    # at once: the flattening is at the open of the bar it was raised before, and nothing after
    assert {x.bar for x in fills if x.reason == "emergency_stop"} == {raised}, label
    assert max(x.bar for x in fills) == raised, label
    assert_same_fills(SimpleNamespace(fill_records=stepper.fills, group_equity=equity), fills, ref_equity, label)
    res, ref_fills, ref_equity = run_both(settings, n_cols, seed, n_bars, codes, gap, emergency_at=raised)
    assert_same_fills(res, ref_fills, ref_equity, label + " (Backtest emergency_at)")


@pytest.mark.parametrize("seed", range(3))
def test_trading_from_a_later_bar_matches_the_reference(seed):
    """``Backtest(trade_from=...)``: the bars before it place no orders (reference: decisions
    ignored before it), the fills from it on follow every rule as before."""
    settings, n_cols = ref_config(200 + seed)
    rng = np.random.default_rng(200 + seed)
    n_bars = 1200
    codes = random_script(rng, n_bars, n_cols, ALL_CODES, p_signal=0.1)
    start = int(rng.integers(100, 600))
    res, fills, equity = run_both(settings, n_cols, seed, n_bars, codes, 0.002, trade_from=start)
    label = f"seed {seed}, trade_from bar {start}: {settings}"
    assert len(fills) > 10 and min(x.bar for x in fills) > start, label  # first fill: the open after it
    assert np.all(equity[: start + 1] == 10_000.0), label  # every group flat on its initial cash
    assert_same_fills(res, fills, equity, label)


def daily_bars(rows: list[tuple]) -> pd.DataFrame:
    """Daily bars from (open, high, low, close, script code) rows (tests/scripted.py)."""
    index = pd.date_range("2024-01-01", periods=len(rows), freq="1D", tz="UTC", name="timestamp")
    return pd.DataFrame(rows, index=index, columns=["open", "high", "low", "close", "volume"], dtype=float)


def test_cash_group_fills_every_open_order_before_any_stop_of_the_bar():
    """In a cash group an entry at the open cannot spend cash that a stop-out of another column
    frees later in the same bar; the outcome must not depend on which column comes first."""
    def entries_of_newcomer(first_stopped: bool) -> list:
        # the holder buys all in at bar 1's open and is stopped at 95 inside bar 2; the newcomer's
        # entry, decided at bar 1's close, fills at bar 2's open, before that stop
        holder = [(100, 101, 99, 100, 1), (100, 101, 99, 100, 0), (100, 101, 94, 96, 0), (96, 97, 95, 96, 0)]
        newcomer = [(50, 51, 49, 50, 0), (50, 51, 49, 50, 1), (50, 51, 49, 50, 0), (50, 51, 49, 50, 0)]
        index = pd.date_range("2024-01-01", periods=4, freq="1D", tz="UTC", name="timestamp")
        def frame(rows):
            return pd.DataFrame(rows, index=index, columns=["open", "high", "low", "close", "volume"], dtype=float)
        data = {"holder": frame(holder), "newcomer": frame(newcomer)}
        if not first_stopped:
            data = dict(reversed(list(data.items())))
        res = Backtest(Scripted(), data, init_cash=1000.0, fees=0.0, sl_pct=0.05, cash_sharing=True).run()
        o = res.fills
        return o[o["instrument"] == "newcomer"][["time", "side", "qty", "price"]].to_dict("records")

    # README order (every open order, then the stops inside the bar): no cash at bar 2's open
    assert entries_of_newcomer(first_stopped=True) == entries_of_newcomer(first_stopped=False) == []


def test_rounding_residue_of_the_cash_opens_no_position():
    """All in at 19 leaves 1000 - (1000 / 19) x 19 = 1.1e-13 of cash. The other instrument's entry
    must find no cash (not buy 2e-15 units), so that once the first position is sold its next
    long signal opens a real position instead of being ignored as pyramiding on the dust."""
    first = [(19, 19, 19, 19, 1), (19, 19, 19, 19, 0), (19, 19, 19, 19, 2), (19, 19, 19, 19, 0)] + [(19, 19, 19, 19, 0)] * 2
    other = [(50, 50, 50, 50, 0), (50, 50, 50, 50, 1), (50, 50, 50, 50, 0), (50, 50, 50, 50, 1)] + [(50, 50, 50, 50, 0)] * 2
    assert 1000.0 - (1000.0 / 19.0) * 19.0 > 0.0  # the residue this example needs
    res = Backtest(Scripted(), {"first": daily_bars(first), "other": daily_bars(other)},
                   init_cash=1000.0, fees=0.0, cash_sharing=True).run()
    o = res.fills
    buys = o[(o["instrument"] == "other") & (o["side"] == "buy")]
    # README: the sale at bar 3's open frees the cash; the long decided at bar 3 buys at bar 4
    assert list(buys["time"]) == [res.index[4]]
    assert buys["qty"].iloc[0] == pytest.approx(1000.0 / 50.0, rel=1e-12)
