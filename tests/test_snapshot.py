"""BarStepper.snapshot() / restore(): the whole state of a run as bytes, continued elsewhere.

The test that matters runs in a fresh process: each bundled strategy is stepped to a random bar,
snapshotted, restored in another Python process and stepped to the end there; its orders and
fills must be the backtest's, bit for bit."""

import io
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from framework import enums, sim_nb
from framework.backtest import Backtest
from framework.runner import SNAPSHOT_SCHEMA, BarStepper, utc_day_numbers
from framework.settings import SimSettings
from framework.synthetic import generate_ohlcv
from strategies import STRATEGIES
from strategies.rsi_reversion import RsiReversion
from strategies.sma_cross import SmaCross
from tests.records import assert_records_equal
from tests.scripted import Scripted

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("open", "high", "low", "close", "volume")
# stops, shorts, trailing ATR stops, slippage and risk limits: state beyond a position
SETTINGS = dict(allow_short=True, sl_pct=0.03, tp_pct=0.06, trail_atr=3.0, slippage=0.0005,
                cooldown_bars=3, max_trades_per_day=5, daily_loss=0.05, max_drawdown=0.5)

CONTINUE = '''
import sys
import numpy as np
from framework.runner import BarStepper
from strategies import STRATEGIES

folder = sys.argv[1]
for name in sys.argv[2:]:
    z = np.load(f"{folder}/{name}.npz")
    stepper = BarStepper(STRATEGIES[name](), z["p"])
    stepper.restore(z["snapshot"].tobytes())
    assert stepper.t == int(z["t0"]), (stepper.t, int(z["t0"]))
    for t in range(int(z["t0"]), len(z["day"])):
        stepper.step(int(z["day"][t]), *(z[f][t] for f in ("open", "high", "low", "close", "volume")))
    np.save(f"{folder}/{name}-fills.npy", stepper.fills)
    np.save(f"{folder}/{name}-events.npy", stepper.events)
    np.save(f"{folder}/{name}-equity.npy", np.array([stepper.equity, stepper.cash]))
'''


def bars(bt: Backtest) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    frame = next(iter(bt.frames.values()))
    return utc_day_numbers(bt.index), {f: frame[f].to_numpy() for f in FIELDS}


def step_to(stepper: BarStepper, day, arrays, start: int, stop: int) -> None:
    for t in range(start, stop):
        stepper.step(day[t], *(arrays[f][t] for f in FIELDS))


def test_restored_in_a_fresh_process_every_strategy_continues_to_the_backtests_fills(tmp_path):
    rng = np.random.default_rng(20261127)
    expected = {}
    for name, cls in sorted(STRATEGIES.items()):
        data = generate_ohlcv(2000, freq="1h", seed=zlib.crc32(name.encode()) % 1000)
        bt = Backtest(cls(), data, **SETTINGS)
        result = bt.run()
        day, arrays = bars(bt)
        t0 = int(rng.integers(500, 1500))
        p = bt.settings.vector(bt.ann_factor)
        stepper = BarStepper(bt.strategy, p)
        step_to(stepper, day, arrays, 0, t0)
        blob = stepper.snapshot()
        np.savez(tmp_path / f"{name}.npz", snapshot=np.frombuffer(blob, dtype=np.uint8), p=p, t0=t0,
                 day=day, **arrays)
        before = result.fill_records["bar"] < t0
        assert before.sum() > 2 and (~before).sum() > 2, f"{name}: fills on both sides of bar {t0}"
        expected[name] = result
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", CONTINUE, str(tmp_path), *expected], check=True, env=env,
                   cwd=ROOT, timeout=600)
    for name, result in expected.items():
        fills = np.load(tmp_path / f"{name}-fills.npy")
        np.testing.assert_array_equal(fills, result.fill_records, err_msg=name)
        # every order's life too: created, filled, cancelled, rejected, stops moving
        assert_records_equal(np.load(tmp_path / f"{name}-events.npy"), result.event_records, err_msg=name)
        equity, cash = np.load(tmp_path / f"{name}-equity.npy")
        assert equity == result.group_equity[-1, 0] and cash == result._cash_and_positions[0][-1, 0], name


def scripted_run(n_bars=300, seed=3, **settings):
    data = generate_ohlcv(n_bars, freq="4h", seed=seed)
    data["volume"] = np.random.default_rng(seed).choice([0, 1, 2, 3], size=n_bars, p=[0.8, 0.08, 0.04, 0.08])
    bt = Backtest(Scripted(), data, allow_short=True, sl_pct=0.02, **settings)
    return bt, *bars(bt)


def test_restore_in_process_continues_exactly_and_keeps_bar_and_day():
    bt, day, arrays = scripted_run(max_trades_per_day=2)
    p = bt.settings.vector(bt.ann_factor)
    whole = BarStepper(Scripted(), p)
    step_to(whole, day, arrays, 0, len(day))
    first = BarStepper(Scripted(), p)
    step_to(first, day, arrays, 0, 150)
    second = BarStepper(Scripted(), p)
    second.restore(first.snapshot())
    # the bar index and the UTC day travel with the state: numbering continues, and a bar from
    # before the snapshot's last day is refused
    assert (second.t, second.day) == (150, int(day[149]))
    with pytest.raises(ValueError, match=f"bar 150 rejected, state unchanged: its UTC day {int(day[149]) - 1} is before"):
        second.step(int(day[149]) - 1, *(arrays[f][150] for f in FIELDS))
    step_to(second, day, arrays, 150, len(day))
    np.testing.assert_array_equal(second.fills, whole.fills)
    np.testing.assert_array_equal(second.g, whole.g)
    np.testing.assert_array_equal(second.cs, whole.cs)
    assert len(whole.fills) > 20 and whole.fills["bar"].max() > 150


def test_fills_are_a_read_only_view_grown_in_place():
    bt, day, arrays = scripted_run(n_bars=600)
    stepper = BarStepper(Scripted(), bt.settings.vector(bt.ann_factor))
    seen = []
    for t in range(len(day)):
        seen.append(stepper.step(day[t], *(arrays[f][t] for f in FIELDS)).fills.copy())
    assert len(stepper.fills) > 16 * sim_nb.FILLS_PER_COLUMN_BAR  # the buffer has doubled several times
    np.testing.assert_array_equal(stepper.fills, np.concatenate(seen))
    np.testing.assert_array_equal(stepper.fills, bt.run().fill_records)
    with pytest.raises(ValueError, match="read-only"):
        stepper.fills["qty"][0] = 0.0


def snapshot_parts(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob)) as z:
        return {k: z[k] for k in z.files}


def rewrite(blob: bytes, **changes) -> bytes:
    parts = {**snapshot_parts(blob), **changes}
    buf = io.BytesIO()
    np.savez(buf, **parts)
    return buf.getvalue()


@pytest.fixture(scope="module")
def taken():
    """A stepper 120 bars into a scripted run, and its snapshot."""
    bt, day, arrays = scripted_run()
    stepper = BarStepper(Scripted(), bt.settings.vector(bt.ann_factor))
    step_to(stepper, day, arrays, 0, 120)
    return stepper, stepper.snapshot(), bt.settings.vector(bt.ann_factor)


def assert_refused_and_untouched(stepper: BarStepper, blob: bytes, message: str) -> None:
    before = stepper.snapshot()
    with pytest.raises(ValueError, match=message):
        stepper.restore(blob)
    assert stepper.snapshot() == before


def test_mismatched_schema_version_is_refused(taken):
    stepper, blob, p = taken
    target = BarStepper(Scripted(), p)
    future = rewrite(blob, schema=np.array(SNAPSHOT_SCHEMA + 1, dtype=np.int64))
    assert_refused_and_untouched(target, future, f"schema version {SNAPSHOT_SCHEMA + 1}, this TradPal reads "
                                                  f"version {SNAPSHOT_SCHEMA} only")
    no_schema = {k: v for k, v in snapshot_parts(blob).items() if k != "schema"}
    buf = io.BytesIO()
    np.savez(buf, **no_schema)
    assert_refused_and_untouched(target, buf.getvalue(), "without a valid schema version")


def test_another_strategy_parameters_or_settings_are_refused(taken):
    stepper, blob, p = taken
    with pytest.raises(ValueError, match="snapshot is of strategy tests.scripted.Scripted, this stepper runs "
                                         "strategies.sma_cross.SmaCross"):
        BarStepper(SmaCross(), p).restore(blob)
    with pytest.raises(ValueError, match=r"snapshot's strategy parameters \{'order_type': 0.0, 'offset': 0.0, "
                                         r"'gap': 0.0\} on 1 column\(s\) differ from this stepper's \{'order_type': 0.0, "
                                         r"'offset': 0.0, 'gap': 0.01\}"):
        BarStepper(Scripted(gap=0.01), p).restore(blob)
    with pytest.raises(ValueError, match=r"on 1 column\(s\) differ .* on 2"):
        BarStepper(Scripted(), p, n_columns=2).restore(blob)
    other = SimSettings(allow_short=True, sl_pct=0.02, fees=0.002).vector(p[enums.P_ANN_FACTOR])
    with pytest.raises(ValueError, match=r"simulator settings differ from this stepper's \(fees: 0.001 vs 0.002\)"):
        BarStepper(Scripted(), other).restore(blob)
    with pytest.raises(ValueError, match=r"snapshot is of strategy tests.scripted.Scripted, this stepper runs "
                                         r"strategies.rsi_reversion.RsiReversion"):
        BarStepper(RsiReversion(), p).restore(blob)


def test_a_state_array_of_another_shape_is_refused(taken):
    stepper, blob, p = taken
    g = snapshot_parts(blob)["g"]
    assert_refused_and_untouched(BarStepper(Scripted(), p), rewrite(blob, g=np.append(g, 0.0)),
                                 rf"snapshot array 'g' is float64 \({enums.N_GROUP_STATE + 1},\), this stepper's is "
                                 rf"float64 \({enums.N_GROUP_STATE},\)")
    assert_refused_and_untouched(BarStepper(Scripted(), p), rewrite(blob, extra=np.zeros(1)),
                                 "snapshot holds arrays this stepper does not know: extra")


def test_garbage_and_truncated_bytes_are_refused_never_misread(taken):
    stepper, blob, p = taken
    target = BarStepper(Scripted(), p)
    for bad in (b"", b"garbage", blob[: len(blob) // 2], blob[:-1]):
        assert_refused_and_untouched(target, bad, "not a readable BarStepper snapshot")
    # one flipped byte anywhere: refused (the archive's CRCs), or, where the byte is not read at
    # all, restored to exactly the snapshot's state; never a different state
    rng = np.random.default_rng(5)
    refused = 0
    for pos in rng.choice(len(blob), size=60, replace=False):
        bad = bytearray(blob)
        bad[pos] ^= 0x5A
        fresh = BarStepper(Scripted(), p)
        try:
            fresh.restore(bytes(bad))
        except ValueError:
            refused += 1
            continue
        assert fresh.snapshot() == blob, f"byte {pos} flipped was misread"
    assert refused > 40


def test_a_halted_stepper_restored_from_its_snapshot_stays_halted_and_places_no_orders():
    """The emergency stop raised with positions open and an order pending: the snapshot taken
    right after it restores a halted stepper that flattens at the next open, then never trades
    again, although the script keeps signalling; the same continuation as the original's."""
    bt, day, arrays = scripted_run(n_bars=600)
    p = bt.settings.vector(bt.ann_factor)
    run = bt.run()
    free, pos = run.fill_records, run.positions.to_numpy()[:, 0]
    # a position is open at t0 - 1's close and an order decided there fills at t0's open
    t0 = next(int(b) for b in free["bar"] if b > 100 and pos[b - 1] != 0.0)
    first = BarStepper(Scripted(), p)
    step_to(first, day, arrays, 0, t0)
    held = first.positions[0]
    assert held == pos[t0 - 1] != 0.0
    first.emergency_stop()
    blob = first.snapshot()
    second = BarStepper(Scripted(), p)
    second.restore(blob)
    assert second.halted and snapshot_parts(blob)["g"][enums.G_HALTED] == 1.0
    n0 = len(second.fills)
    step_to(first, day, arrays, t0, len(day))
    step_to(second, day, arrays, t0, len(day))
    np.testing.assert_array_equal(second.fills, first.fills)
    after = second.fills[n0:]
    # only the emergency exit of the open position (if any) at t0's open, nothing else
    assert np.all(after["reason"] == enums.REASON_EMERGENCY) and np.all(after["bar"] == t0)
    assert len(after) == int(held != 0.0) and np.all(after["qty"] == abs(held))
    assert second.positions.tolist() == [0.0] and second.halted
    assert np.sum(free["bar"] > t0) > 10  # the script kept trading without the stop
