"""Replay parity (DESIGN.md): bars fed one at a time through the bar stepper (the live runner's
core, paper broker) give the backtest's fills, positions, cash and equity to the last bit."""

import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from framework.backtest import Backtest
from framework.enums import (
    ORDER_LIMIT,
    ORDER_MARKET,
    ORDER_STOP,
    P_EMERGENCY_AT,
    REASON_DAILY_LOSS,
    REASON_EMERGENCY,
    REASON_LIQUIDATION,
    REASON_MAX_DRAWDOWN,
    REASON_SIGNAL,
    REASON_STOP_LOSS,
    REASON_TAKE_PROFIT,
    REASON_TRAILING_STOP,
)
from framework.orders import check_transitions
from framework.runner import BarStepper, utc_day_numbers
from framework.sim_nb import replay_fills_nb
from framework.synthetic import generate_ohlcv
from strategies import STRATEGIES
from tests.records import assert_records_equal
from tests.scripted import Scripted

CONFIGS = {
    "defaults": {},
    "stops_shorts_limits": dict(
        allow_short=True, sl_pct=0.03, tp_pct=0.06, trail_atr=3.0, slippage=0.0005, cooldown_bars=3,
        max_trades_per_day=5, daily_loss=0.05, max_drawdown=0.5, max_position_notional=20_000.0,
    ),
    "portfolio": dict(cash_sharing=True, max_positions=2, size=0.3, allow_short=True, max_exposure=0.9),
    "separate_columns": dict(size=0.5),
}


def replay(bt: Backtest, emergency_at: int | None = None):
    """Step every bar of every cash group through BarStepper; returns fills, and equity and cash
    per group and positions per column at every close, and the events (every order's changes). With ``emergency_at=t`` every group's
    driver raises the emergency stop while bar ``t`` forms (right before stepping it). The
    stepper is given the backtest's ``trade_from`` as its own keyword (a bar index)."""
    cols = list(bt.frames)
    groups = [cols] if bt.settings.cash_sharing or len(cols) == 1 else [[c] for c in cols]
    day = utc_day_numbers(bt.index)
    p = bt.settings.vector(bt.ann_factor)
    p[P_EMERGENCY_AT] = np.nan if bt.emergency_bar is None else bt.emergency_bar
    fills, equity, cash, positions, events = [], [], [], [], []
    for group in groups:
        stepper = BarStepper(bt.strategy, p, n_columns=len(group), trade_from=bt.trade_from_bar)
        pos = np.empty((len(bt.index), len(group)))
        eq, ca = np.empty(len(bt.index)), np.empty(len(bt.index))
        arrays = [np.column_stack([bt.frames[c][f].to_numpy() for c in group])
                  for f in ("open", "high", "low", "close", "volume")]
        for t in range(len(bt.index)):
            if t == emergency_at:
                stepper.emergency_stop()
            stepper.step(day[t], *(a[t] for a in arrays))
            eq[t], ca[t], pos[t] = stepper.equity, stepper.cash, stepper.positions
        f = stepper.fills.copy()  # a read-only view of the stepper's records
        f["col"] += cols.index(group[0])  # a lone stepper numbers its columns from 0
        fills.append(f)
        e = stepper.events.copy()
        e["col"][e["col"] >= 0] += cols.index(group[0])
        events.append(e)
        positions.append(pos)
        equity.append(eq)
        cash.append(ca)
    return (np.concatenate(fills), np.column_stack(equity), np.column_stack(cash), np.column_stack(positions),
            np.concatenate(events))


def backtest_fills_in_replay_order(bt: Backtest, result) -> np.ndarray:
    """The backtest's fills in the order ``replay`` produces them: separate cash groups one after
    the other (column order), each group's fills in booking order (their ids count per group)."""
    if len(bt.frames) > 1 and not bt.settings.cash_sharing:
        return result.fill_records[np.lexsort((result.fill_records["order_id"], result.fill_records["col"]))]
    return result.fill_records


def assert_replay_parity(bt: Backtest, replayed=None):
    """Run the backtest, replay it bar by bar (or take ``replayed``, a ``replay`` result), assert
    both agree to the last bit; returns the result."""
    result = bt.run()
    fills, equity, cash, positions, events = replay(bt) if replayed is None else replayed
    np.testing.assert_array_equal(fills, backtest_fills_in_replay_order(bt, result))
    # every order's life, event by event: created, filled, cancelled, expired, rejected alike
    assert_records_equal(events, result.event_records)
    assert check_transitions(result.event_records) == []
    np.testing.assert_array_equal(positions, result.positions.to_numpy())
    np.testing.assert_array_equal(equity, result.group_equity)
    # the backtest keeps no cash series: it replays it from its fills, which must give the cash
    # the live state held at every close
    np.testing.assert_array_equal(cash, result._cash_and_positions[0])
    return result


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_replay_parity(name, config):
    settings = CONFIGS[config]
    n_assets = 1 if config in ("defaults", "stops_shorts_limits") else 3
    data = generate_ohlcv(3000, n_assets, freq="1h", seed=zlib.crc32(f"{name}/{config}".encode()) % 1000)
    bt = Backtest(STRATEGIES[name](), data, **settings)
    result = assert_replay_parity(bt)
    assert len(result.fill_records) > 4, "the strategy should trade on this data for the test to mean anything"


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_warm_up_then_trade_from_matches_the_stepper_and_the_full_runs_decision(name):
    """``Backtest(start, trade_from, end)`` == ``BarStepper(trade_from=...)`` over the same bars,
    bit for bit; and warming up changes nothing but the orders: no fill before ``trade_from``,
    equity on the initial cash through its close, and its first order is the one the full run
    (same bars, trading from the start) places at that bar, where the full run is flat too."""
    data = generate_ohlcv(1600, 1, freq="1h", seed=zlib.crc32(f"warm/{name}".encode()) % 1000)
    start, end = data.index[100], data.index[1499]
    settings = dict(slippage=0.0005, sl_pct=0.03)  # long only: exits leave flat bars to start at
    full = Backtest(STRATEGIES[name](), data, start=start, end=end, **settings).run()
    pos = full.positions.to_numpy()[:, 0]
    entry_bars = full.fill_records["bar"][entries(full.fill_records)]
    # a bar T at whose close the full run is flat (and was at T-1) and places an entry
    t0 = next(int(b) - 1 for b in entry_bars if b > 400 and pos[b - 2] == 0.0 and pos[b - 1] == 0.0)
    bt = Backtest(STRATEGIES[name](), data, start=start, end=end, trade_from=full.index[t0], **settings)
    assert bt.trade_from_bar == t0 and bt.index[0] == start and bt.index[-1] == end
    warm = assert_replay_parity(bt)
    assert warm.fill_records["bar"].min() == t0 + 1
    np.testing.assert_array_equal(warm.equity.to_numpy()[: t0 + 1], bt.settings.init_cash)
    first, theirs = warm.fill_records[0], full.fill_records[full.fill_records["bar"] == t0 + 1][0]
    for key in ("side", "price", "order_type", "reason"):
        assert first[key] == theirs[key], key
    assert warm.stats["start"] == full.index[t0]


# ------------------------------------------------------------------------------------------------
# Settings the bundled strategies never reach (they only send market orders): limit and stop
# entries, every sizing, trailing stops, the risk limits, the emergency stop. A scripted strategy
# (tests/scripted.py) reads its decisions from the volume column, here random codes on synthetic
# bars, so one script drives both drivers through each of them. Every test also asserts that the
# feature it covers actually acted on this data, so that parity is not trivially met.
# ------------------------------------------------------------------------------------------------

LONG, EXIT, SHORT = 1, 2, 3
LIMIT, STOP = 10, 20  # tens digit of a script code: the order type of that bar's intent
MARKET_CODES = ([0, LONG, EXIT, SHORT], [0.84, 0.07, 0.02, 0.07])


def scripted_data(n_bars, n_assets, seed, codes=MARKET_CODES, freq="1h"):
    """Synthetic bars whose volume column is a random script of ``codes = (values, probabilities)``."""
    data = generate_ohlcv(n_bars, n_assets, freq=freq, seed=seed)
    frames = {"x": data} if n_assets == 1 else data
    rng = np.random.default_rng(seed + 1)
    for frame in frames.values():
        frame["volume"] = rng.choice(codes[0], size=n_bars, p=codes[1]).astype(float)
    return data


def entries(fills) -> np.ndarray:
    """Mask of the fills that open a position (positions open from flat and close whole, so
    each column's fills alternate entry, exit)."""
    mask = np.zeros(len(fills), dtype=bool)
    is_open: dict[int, bool] = {}
    for i, col in enumerate(fills["col"]):
        mask[i] = not is_open.get(int(col), False)
        is_open[int(col)] = mask[i]
    return mask


def opened_before(result, mask) -> np.ndarray:
    """Equity at the close before each selected fill (what its sizing saw), per its cash group."""
    bars = result.fill_records["bar"][mask]
    group = np.searchsorted(result.group_start, result.fill_records["col"][mask], side="right") - 1
    return result.group_equity[bars - 1, group]


def test_replay_parity_limit_and_stop_entries():
    codes = ([0, EXIT, LIMIT + LONG, LIMIT + SHORT, STOP + LONG, STOP + SHORT, LONG, SHORT],
             [0.7, 0.04, 0.05, 0.05, 0.05, 0.05, 0.03, 0.03])
    data = scripted_data(3000, 1, seed=11, codes=codes)
    bt = Backtest(Scripted(gap=0.001), data, allow_short=True, size=0.5, slippage=0.0005, sl_pct=0.02, tp_pct=0.03)
    result = assert_replay_parity(bt)
    f = result.fill_records
    entry = entries(f) & (f["reason"] == REASON_SIGNAL)
    for order_type in (ORDER_LIMIT, ORDER_STOP):
        for side in (1, -1):
            assert np.any(entry & (f["order_type"] == order_type) & (f["side"] == side)), (order_type, side)
    # limits fill at their level inside the bar, and at the open when the bar gaps through
    limit = f[entry & (f["order_type"] == ORDER_LIMIT)]
    opens = data["open"].to_numpy()[limit["bar"]]
    assert np.any(limit["price"] == opens) and np.any(limit["price"] != opens)
    # and orders expire: some limit/stop entry decided flat was not filled at the next bar
    script = data["volume"].to_numpy()
    flat = result.positions.to_numpy()[:, 0] == 0.0
    decided = np.flatnonzero((script >= LIMIT) & (script % 10 != EXIT) & flat)[:-1]
    filled_next = np.isin(decided + 1, f["bar"])
    assert filled_next.any() and not filled_next.all()
    assert np.any(f["reason"] == REASON_STOP_LOSS) and np.any(f["reason"] == REASON_TAKE_PROFIT)


def test_replay_parity_vol_target_sizing():
    data = scripted_data(3000, 1, seed=12)
    bt = Backtest(Scripted(), data, sizing="vol_target", size=0.3, vol_window=24, allow_short=True)
    result = assert_replay_parity(bt)
    f = result.fill_records
    entry = entries(f)
    assert entry.sum() > 20
    # no entry before the realised volatility has warmed up, though the script asked for some
    script = data["volume"].to_numpy()
    assert np.isin(script[:23], (LONG, SHORT)).any() and f["bar"][entry].min() > 23
    # the notional follows the volatility: it varies, and mostly stays below the cash cap
    share = f["qty"][entry] * f["price"][entry] / opened_before(result, entry)
    assert share.min() < 0.9 and share.max() - share.min() > 0.1


def test_replay_parity_risk_sizing_with_atr_stops():
    data = scripted_data(3000, 1, seed=13)
    bt = Backtest(Scripted(), data, sizing="risk", size=0.01, atr_window=14, sl_atr=2.0, tp_atr=3.0, allow_short=True)
    result = assert_replay_parity(bt)
    f = result.fill_records
    entry = entries(f)
    assert f["bar"][entry].min() >= 14  # waited for the ATR
    assert len(np.unique(f["qty"][entry])) > 10  # qty = equity * 1 % / (ATR * 2): varies with the ATR
    for reason in (REASON_STOP_LOSS, REASON_TAKE_PROFIT):
        for side in (1, -1):  # exits of longs (sells) and of shorts (buys)
            assert np.any((f["reason"] == reason) & (f["side"] == side)), (reason, side)


@pytest.mark.parametrize("cash_sharing", [True, False])
def test_replay_parity_cash_sizing(cash_sharing):
    data = scripted_data(2000, 3, seed=14)
    settings = dict(sizing="cash", size=3000.0, allow_short=True, cash_sharing=cash_sharing)
    if cash_sharing:
        settings.update(max_positions=2, init_cash=7000.0)
    result = assert_replay_parity(Backtest(Scripted(), data, **settings))
    f = result.fill_records
    entry = entries(f)
    assert set(f["col"][entry]) == {0, 1, 2}
    notional = f["qty"][entry] * f["price"][entry]
    assert np.isclose(notional, 3000.0, rtol=1e-12, atol=0).mean() > 0.5
    if cash_sharing:
        open_positions = (result.positions.to_numpy() != 0.0).sum(axis=1)
        assert open_positions.max() == 2  # max_positions binds, and holds
        assert np.any(notional < 2999.0)  # the shared cash capped some entries


@pytest.mark.parametrize("trail", [dict(trail_pct=0.01), dict(trail_atr=1.5, sl_pct=0.05)])
def test_replay_parity_trailing_stops(trail):
    data = scripted_data(3000, 1, seed=15, codes=([0, LONG, EXIT, SHORT], [0.92, 0.03, 0.02, 0.03]))
    result = assert_replay_parity(Backtest(Scripted(), data, allow_short=True, slippage=0.0002, **trail))
    trades = result.trade_records
    trailed = trades[trades["exit_reason"] == REASON_TRAILING_STOP]
    for direction in (1, -1):
        mine = trailed[trailed["direction"] == direction]
        assert len(mine) > 0, direction
        # the stop trailed the best price: some exits lock in a gain before fees
        assert np.any((mine["exit_price"] - mine["entry_price"]) * direction > 0), direction


def risk_limit_case(limit, seed, n_assets=1, freq="1h", **settings):
    """(result with the limit, result without it) on the same scripted bars."""
    data = scripted_data(3000, n_assets, seed=seed, codes=([0, LONG, EXIT, SHORT], [0.76, 0.1, 0.04, 0.1]), freq=freq)
    settings = dict(allow_short=True, **settings)
    limited = assert_replay_parity(Backtest(Scripted(), data, **settings, **limit))
    free = Backtest(Scripted(), data, **settings).run()
    return limited, free


def test_replay_parity_max_drawdown_halts_a_portfolio():
    result, free = risk_limit_case(dict(max_drawdown=0.1), seed=16, n_assets=3, cash_sharing=True,
                                   size=0.3, fees=0.002)
    f = result.fill_records
    halt = f[f["reason"] == REASON_MAX_DRAWDOWN]
    assert len(halt) >= 2 and len(set(halt["bar"])) == 1  # every open column, at one open
    t = halt["bar"][0]
    assert f["bar"].max() == t and np.all(result.positions.to_numpy()[t:] == 0.0)
    assert np.all(result.group_equity[t:] == result.group_equity[t])
    assert free.fill_records["bar"].max() > t  # without the limit it would have traded on


def test_replay_parity_daily_loss_limit():
    result, free = risk_limit_case(dict(daily_loss=0.01), seed=17)
    f = result.fill_records
    day = utc_day_numbers(result.index)
    stops = f["bar"][f["reason"] == REASON_DAILY_LOSS]
    assert len(stops) > 3
    # breached at the close before the exit: no entry decided later that UTC day
    entry_bars = f["bar"][entries(f)]
    for b in stops:
        later = entry_bars[entry_bars >= b]
        assert not np.any(day[later - 1] == day[b - 1]), b
    assert not np.array_equal(f, free.fill_records)


def test_replay_parity_max_trades_per_day():
    result, free = risk_limit_case(dict(max_trades_per_day=2), seed=18)
    day = utc_day_numbers(result.index)

    def per_day(res):
        return np.unique(day[res.fill_records["bar"][entries(res.fill_records)]], return_counts=True)[1]

    assert per_day(result).max() == 2 and per_day(free).max() > 2


def test_replay_parity_cooldown_after_stop_out():
    result, free = risk_limit_case(dict(cooldown_bars=6), seed=19, sl_pct=0.005)

    def entries_in_cooldown(res):
        f = res.fill_records
        entry_bars = f["bar"][entries(f)]
        stops = f["bar"][f["reason"] == REASON_STOP_LOSS]
        return sum(np.any((entry_bars > b) & (entry_bars <= b + 6)) for b in stops), len(stops)

    blocked, stops = entries_in_cooldown(result)
    assert stops > 10 and blocked == 0
    assert entries_in_cooldown(free)[0] > 0


@pytest.mark.parametrize("n_assets", [1, 3])
def test_replay_parity_maintenance_margin_liquidations(n_assets):
    group = {"cash_sharing": True, "size": 0.5} if n_assets > 1 else {}
    # daily bars move enough for a 90 % margin to bite (a lone all-in short at +5 %)
    # (seeds picked so that the group's run also liquidates a long, the rarer case)
    result, free = risk_limit_case({"maintenance_margin": 0.9}, seed=21 if n_assets == 1 else 22,
                                   n_assets=n_assets, freq="1D", **group)
    f = result.fill_records
    liquidated = f[f["reason"] == REASON_LIQUIDATION]
    assert len(liquidated) > 20
    # shorts are bought back; a lone all-in long is paid from cash and never liquidated, but in a
    # group the shorts beside a long can take the equity below the margin, and a long is sold
    assert set(liquidated["side"]) == ({1} if n_assets == 1 else {1, -1})
    assert not np.any(free.fill_records["reason"] == REASON_LIQUIDATION)


@pytest.mark.parametrize("cash_sharing", [True, False])
def test_emergency_stop_mid_run_matches_the_backtest_then_flattens_once(cash_sharing):
    """A driver raising the emergency stop while bar t forms gives the plain backtest's fills
    before bar t, the flattening of every position held at t-1's close at t's open (market, with
    slippage; the entries decided at t-1 are cancelled), and nothing after; and it is bit for bit
    ``Backtest(emergency_at=<time of bar t>)``."""
    codes = ([0, LONG, EXIT, SHORT, LIMIT + LONG, STOP + SHORT], [0.8, 0.05, 0.03, 0.05, 0.035, 0.035])
    data = scripted_data(800, 3, seed=20, codes=codes)
    settings = dict(allow_short=True, size=0.3, slippage=0.0005, sl_pct=0.03, trail_pct=0.02, cash_sharing=cash_sharing)
    bt = Backtest(Scripted(gap=0.002), data, **settings)
    result = bt.run()
    expected = backtest_fills_in_replay_order(bt, result)
    bt_pos, bt_cash = result.positions.to_numpy(), result._cash_and_positions[0]
    opens = np.column_stack([frame["open"].to_numpy() for frame in bt.frames.values()])
    held = np.flatnonzero((bt_pos != 0.0).sum(axis=1) >= 2) + 1  # raised before the bar after
    # ... and an entry decided at the last close would fill at that bar's open: it is cancelled
    # (the checks below find only emergency exits at t)
    candidates = np.intersect1d(held, expected["bar"][entries(expected)])
    for t in (candidates[candidates > 200][0], candidates[candidates > 400][0], candidates[candidates > 600][0]):
        replayed = replay(bt, emergency_at=t)
        fills, equity, cash, positions, _ = replayed
        before = fills[fills["bar"] < t]
        np.testing.assert_array_equal(before, expected[expected["bar"] < t])
        np.testing.assert_array_equal(positions[:t], bt_pos[:t])
        np.testing.assert_array_equal(equity[:t], result.group_equity[:t])
        np.testing.assert_array_equal(cash[:t], bt_cash[:t])
        # one market exit per position held at the last close, at this bar's open, nothing after
        flat = fills[fills["bar"] >= t]
        held_cols = np.flatnonzero(bt_pos[t - 1] != 0.0)
        assert len(held_cols) >= 2 and np.any(expected["bar"] > t)
        np.testing.assert_array_equal(np.sort(flat["col"]), held_cols)
        assert np.all(flat["bar"] == t) and np.all(flat["reason"] == REASON_EMERGENCY)
        assert np.all(flat["order_type"] == ORDER_MARKET)
        for x in flat:
            q = bt_pos[t - 1, x["col"]]
            d = 1.0 if q > 0.0 else -1.0
            assert x["side"] == -d and x["qty"] == abs(q)
            assert x["price"] == opens[t, x["col"]] * (1.0 - 0.0005 * d)
            assert x["fees"] == x["qty"] * x["price"] * bt.settings.fees
        assert np.all(positions[t:] == 0.0)
        assert np.all(cash[t:] == cash[t]) and np.all(equity[t:] == cash[t:])
        # the backtest raising it before the same bar: the same run, bit for bit
        assert_replay_parity(Backtest(Scripted(gap=0.002), data, emergency_at=bt.index[t], **settings), replayed)
        # the live cash and positions are what booking the fills gives
        col_group = np.searchsorted(result.group_start, np.arange(len(bt.frames)), side="right") - 1
        replayed_cash, replayed_pos = replay_fills_nb(
            fills, len(bt.index), col_group, len(result.group_start) - 1, bt.settings.init_cash)
        np.testing.assert_array_equal(replayed_cash, cash)
        np.testing.assert_array_equal(replayed_pos, positions)


# ------------------------------------------------------------------------------------------------
# The invariant as a property: any settings, any script, any number of instruments
# ------------------------------------------------------------------------------------------------

ANY_CODES = ([0, LONG, EXIT, SHORT, LIMIT + LONG, LIMIT + SHORT, STOP + LONG, STOP + SHORT],
             [0.72, 0.05, 0.03, 0.05, 0.04, 0.04, 0.035, 0.035])


def _maybe(x):
    return st.none() | x


SIM_SETTINGS = st.fixed_dictionaries(
    {
        "allow_short": st.booleans(),
        "cash_sharing": st.booleans(),
        "fees": st.sampled_from([0.0, 0.001, 0.0025]),
        "slippage": st.sampled_from([0.0, 0.0005]),
        "sizing": st.sampled_from(["fraction", "cash", "risk", "vol_target"]),
        "sl_pct": _maybe(st.sampled_from([0.01, 0.03])),
        "tp_pct": _maybe(st.sampled_from([0.02, 0.06])),
        "trail_atr": _maybe(st.sampled_from([1.5, 3.0])),
        "max_drawdown": _maybe(st.sampled_from([0.1, 0.3])),
        "daily_loss": _maybe(st.sampled_from([0.02, 0.05])),
        "max_trades_per_day": _maybe(st.integers(1, 4)),
        "cooldown_bars": _maybe(st.integers(1, 8)),
        "max_exposure": _maybe(st.sampled_from([0.5, 1.0])),
        "max_positions": _maybe(st.integers(1, 2)),
        "maintenance_margin": _maybe(st.sampled_from([0.0, 0.5, 0.9])),
        # exchange precision: quantities on a step, prices on a tick, minimum sizes
        "qty_step": _maybe(st.sampled_from([0.001, 0.1])),
        "price_tick": _maybe(st.sampled_from([0.01, 0.5])),
        "min_qty": _maybe(st.sampled_from([0.01, 0.5])),
        "min_notional": _maybe(st.sampled_from([10.0, 500.0])),
    }
)
SIZES = {"fraction": 0.4, "cash": 2_000.0, "risk": 0.01, "vol_target": 0.5}


# derandomize: the same 40 examples on every run, so a failure is reproducible and CI cannot
# pass or fail by the luck of the draw
@hypothesis_settings(max_examples=40, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.too_slow])
@given(sim=SIM_SETTINGS, n_assets=st.integers(1, 3), seed=st.integers(0, 10_000), gap=st.sampled_from([0.0, 0.003]))
def test_replay_parity_holds_for_any_settings(sim, n_assets, seed, gap):
    sim = {k: v for k, v in sim.items() if v is not None}
    sim["size"] = SIZES[sim["sizing"]]
    data = scripted_data(400, n_assets, seed=seed, codes=ANY_CODES)
    result = assert_replay_parity(Backtest(Scripted(gap=gap), data, **sim))
    # parity of two runs that never trade would hold trivially
    assert entries(result.fill_records).sum() >= 2, sim
