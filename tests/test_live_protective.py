"""Broker mode: a position's stop rests on the exchange as a stop-market order (the local
exchange's STOP_LOSS), so it fills where the backtest fills it (at its level, or at the open of
a bar that gaps through it), and protects while the runner is down. A watched stop goes out as
a market order after the close that crossed it: a bar late, at another price.

The runs are the ones of ``tests/test_live_broker.py``: the ccxt broker on the local exchange,
its clock stepped bar by bar."""

from __future__ import annotations

import pandas as pd
import pytest

from live.store import StateStore
from strategies import STRATEGIES
from tests.test_live_broker import (
    FAST,
    SYMBOL,
    backtest,
    client_ids,
    drive,
    exchange,
    make_broker,
    make_runner,
    outcome,
    scripted_data,
    scripted_run,
    settings_for,
    small_data,
)
from tests.test_live_broker import STOPS as TRAILING

L = 40
# stops that fire every few bars on these hourly bars; on the price tick, as the exchange's trigger
STOPS = {"fixed": dict(sl_pct=0.004, price_tick=0.01), "trailing": TRAILING}
HOUR = 3_600_000


def stop_run(tmp_path, stops: dict, protective: str = "exchange", bars: int = L, before_bar=None):
    """The 2/3 moving-average cross with ``stops`` on one symbol: its runner (closed), the local
    exchange's orders and the account's BTC after the run."""
    strategy = STRATEGIES["sma_cross"](**FAST)
    settings = settings_for(strategy, 1)
    settings = type(settings)(**{**vars(settings), **stops})
    ex = exchange(small_data())
    try:
        runner = make_runner(ex.url, strategy, settings, tmp_path, [SYMBOL], protective=protective)
        drive(ex, runner, bars, None if before_bar is None else lambda i: before_bar(ex, runner, i))
        runner.close()
        orders = list(ex.engine.orders.values())
        held = make_broker(ex.url).balance().get("BTC")
    finally:
        ex.stop()
    return runner, strategy, settings, orders, 0.0 if held is None else held.total


def fills_until(store: StateStore, last_bar: str) -> list:
    """The run's fills up to the end of its last bar (a stop fills inside a bar)."""
    end = pd.Timestamp(last_bar).value // 1_000_000 + HOUR
    return [f for f in store.fills() if f.timestamp_ms < end]


def core_id(client_order_id: str) -> str:
    """The core order a fill belongs to (a placement carries a revision: ``<id>.<k>``)."""
    return ".".join(client_order_id.split(".")[:4])


def bar_of(timestamp_ms: int, first_ms: int) -> int:
    return (timestamp_ms - first_ms) // HOUR


@pytest.mark.parametrize("kind", sorted(STOPS))
def test_exchange_placed_stops_fill_as_the_backtest_where_watched_ones_do_not(kind, tmp_path):
    runs = {}
    for protective in ("exchange", "watch"):
        runner, strategy, settings, orders, held = stop_run(tmp_path / protective, STOPS[kind], protective)
        summary = runner.summary()
        with StateStore(runner.store.state_dir, create=False) as store:
            ours = fills_until(store, summary["last_bar"])
        result = backtest(strategy, small_data(), settings, summary).run()
        runs[protective] = (ours, result.fills, summary, orders, held)
    ours, theirs, summary, orders, held = runs["exchange"]
    stops = theirs[theirs["reason"].isin(["stop_loss", "trailing_stop"])]
    assert len(stops) >= 2 and (theirs["reason"] == "signal").sum() >= 4  # both kinds of exit happen
    first_ms = pd.Timestamp(summary["first_bar"]).value // 1_000_000
    index = small_data()[SYMBOL].index
    assert [core_id(f.client_order_id) for f in ours] == theirs["client_order_id"].tolist()
    assert [f.side for f in ours] == theirs["side"].tolist()
    # a stop at its level (or a gap's open): the core's level on the 0.01 tick is a float sum
    # (4356845 * 0.01 = 43568.450000000004), the exchange's trigger its decimal: one ulp apart
    assert [f.price for f in ours] == pytest.approx(theirs["price"].tolist(), rel=1e-15, abs=0)
    assert [index[bar_of(f.timestamp_ms, first_ms)] for f in ours] == theirs["time"].tolist()  # in its bar
    stop_fills = [f for f in ours if core_id(f.client_order_id) in set(stops["client_order_id"])]
    # filled by a resting stop; or, when the open already gapped through a trailing stop's new
    # level (the exchange refuses a stop that would trigger at once), by a market order at once
    assert any(f.client_order_id != core_id(f.client_order_id) for f in stop_fills)
    placed = [o for o in orders if o.type == "STOP_LOSS"]
    assert {o.status for o in placed} <= {"FILLED", "CANCELED", "NEW"} and any(o.status == "FILLED" for o in placed)
    assert summary["equity"] == pytest.approx(float(result.equity.iloc[-1]), rel=1e-4)
    assert held == pytest.approx(summary["positions"][SYMBOL], abs=1e-9)
    # watched: the same stops go out as market orders after the close that crossed them
    watched, theirs_w, _, orders_w, _ = runs["watch"]
    assert not [o for o in orders_w if o.type == "STOP_LOSS"]
    assert [f.price for f in watched] != theirs_w["price"].tolist()


def test_a_trailing_stop_is_replaced_and_exactly_one_protective_order_rests(tmp_path):
    seen: list[tuple[float, int]] = []

    def count(ex, runner, i):  # before each bar: the position and the stops resting for it
        if runner.stepper is not None:
            resting = [o for o in ex.engine.orders.values() if o.is_open and o.type == "STOP_LOSS"]
            seen.append((runner.stepper.positions[0], len(resting)))

    runner, *_, orders, _ = stop_run(tmp_path, STOPS["trailing"], before_bar=count)
    with StateStore(runner.store.state_dir, create=False) as store:
        revisions = [o for o in store.orders() if o.client_order_id.count(".") == 4]
    assert len(revisions) > len({core_id(o.client_order_id) for o in revisions}) >= 2  # replaced
    assert all(n == (1 if pos else 0) for pos, n in seen) and any(pos for pos, _ in seen)
    # each replacement has its own id, the stale one cancelled: at most one open at any time
    ids = [o.client_id for o in orders]
    assert len(ids) == len(set(ids))
    triggers = {}
    for o in orders:
        if o.type == "STOP_LOSS":
            triggers.setdefault(core_id(o.client_id), []).append(o.stop_price)
    assert any(len(t) > 1 and t == sorted(t) for t in triggers.values())  # a long's stop only rises


def test_a_stop_that_fires_while_the_runner_is_down_is_booked_once_as_if_it_had_run(tmp_path):
    reference = stop_run(tmp_path / "ref", STOPS["fixed"])[0]
    ref = outcome(reference.store.state_dir)
    first_ms = reference.info.trade_from_ms
    bars = [bar_of(f[-1], first_ms) for f in ref[0]]
    # a stop filled on the exchange a few bars after its entry, nothing in between
    k = next(k for k, f in enumerate(ref[0]) if f[0].count(".") == 4 and bars[k] - bars[k - 1] >= 2)
    entry, stop = bars[k - 1], bars[k]
    strategy = STRATEGIES["sma_cross"](**FAST)
    settings = settings_for(strategy, 1)
    settings = type(settings)(**{**vars(settings), **STOPS["fixed"]})
    ex = exchange(small_data())
    state = tmp_path / "down"
    try:
        runner = make_runner(ex.url, strategy, settings, state, [SYMBOL])
        drive(ex, runner, entry + 1)  # the position is open, its stop resting on the exchange
        assert runner.stepper.positions[0] > 0
        runner.close()
        ex.clock.step(stop - entry)  # the runner is down while the stop fills
        ex.engine.sync()  # (the exchange matches when asked)
        assert [o.status for o in ex.engine.orders.values() if o.type == "STOP_LOSS"][-1] == "FILLED"
        runner = make_runner(ex.url, strategy, settings, state, [SYMBOL])
        runner.start()
        while runner.live_bars < stop + 1:  # catch up: the bars that closed while it was down
            runner.run(max_bars=runner.live_bars + 1)
        drive(ex, runner, L)
        runner.close()
        trades = sum(len(t) for t in ex.engine.trades.values())
    finally:
        ex.stop()
    assert outcome(state) == ref
    assert len(ref[0]) == trades  # every exchange trade booked, once


def test_a_signal_exit_cancels_the_resting_stop_first_and_never_oversells(tmp_path):
    # long at live bar 1, exit at bar 4; the stop 5 % below never fires
    ex, runner = scripted_run(tmp_path, {1: 1, 4: 2}, sl_pct=0.05)
    try:
        drive(ex, runner, 8)
        fills = runner.store.fills()
        rejected = runner.store.orders("rejected")
        runner.close()
        placed = [(o.type, o.side, o.status, o.client_id) for o in ex.engine.orders.values()]
        calls = [(r.method, r.params.get("type") or r.params.get("origClientOrderId"), r.status)
                 for r in ex.requests("/api/v3/order") if r.method in ("POST", "DELETE")]
        held = make_broker(ex.url).balance().get("BTC")
    finally:
        ex.stop()
    assert [f.side for f in fills] == ["buy", "sell"] and not rejected
    (stop,) = [p for p in placed if p[0] == "STOP_LOSS"]
    assert stop[2] == "CANCELED"
    # the entry, its stop placed at once, the stop cancelled, then the exit: all accepted
    assert calls == [("POST", "MARKET", 200), ("POST", "STOP_LOSS", 200), ("DELETE", stop[3], 200),
                     ("POST", "MARKET", 200)]
    assert held is None or held.total == pytest.approx(0.0, abs=1e-9)


def test_a_stop_fill_racing_the_exits_cancel_is_booked_and_the_exit_not_sent(tmp_path):
    ex, runner = scripted_run(tmp_path, {1: 1, 4: 2}, sl_pct=0.05)
    broker = runner.broker
    real_cancel = broker.exchange.cancel_order
    raced: list[str] = []

    def fill_then_cancel(*args, **kwargs):
        with ex.engine.lock:  # the stop fills just before its cancel reaches the exchange
            o = next(o for o in ex.engine.orders.values() if o.is_open and o.type == "STOP_LOSS")
            ex.engine._fill(ex.engine.market.by_id[o.symbol], o, o.stop_price, ex.clock.now_ms(), maker=False)
            raced.append(o.client_id)
        return real_cancel(*args, **kwargs)

    try:
        drive(ex, runner, 4)
        broker.exchange.cancel_order = fill_then_cancel
        drive(ex, runner, 5)  # the exit decided at bar 4's close
        broker.exchange.cancel_order = real_cancel
        drive(ex, runner, 8)
        fills = runner.store.fills()
        orders = runner.store.orders()
        positions = runner.stepper.positions
        runner.close()
        sells = [o for o in ex.engine.orders.values() if o.side == "SELL"]
        held = make_broker(ex.url).balance().get("BTC")
    finally:
        ex.stop()
    assert len(raced) == 1 and [f.client_order_id for f in fills][1:] == raced  # the stop's fill, booked once
    (exit_,) = [o for o in orders if o.request.type == "market" and o.request.side == "sell"]
    # never sent (recorded cancelled at once), then expired by the core at the next close
    assert exit_.status == "expired" and "not sent: the position was closed by its protective order" in exit_.reason
    assert [o.type for o in sells] == ["STOP_LOSS"]  # the exit never reached the exchange
    assert positions[0] == 0.0 and (held is None or abs(held.total) < 1e-9)
    assert not [o for o in orders if o.status == "rejected"]


def test_an_emergency_stop_takes_the_resting_stop_off_before_it_flattens(tmp_path):
    ex, runner = scripted_run(tmp_path, {1: 1}, sl_pct=0.05)
    try:
        drive(ex, runner, 3)
        (stop,) = [o for o in ex.engine.orders.values() if o.type == "STOP_LOSS"]
        assert stop.is_open and runner.stepper.positions[0] > 0
        runner.store.request("emergency_stop")
        runner.handle_requests()
        orders = runner.store.orders()
        runner.close()
        held = make_broker(ex.url).balance().get("BTC")
    finally:
        ex.stop()
    assert stop.status == "CANCELED" and not [o for o in orders if o.status == "rejected"]
    exits = [o.status for o in orders if o.request.reduce_only and o.request.type == "market"]
    assert exits == ["filled"]  # the emergency exit sold the whole position
    assert held is None or abs(held.total) < 1e-9


@pytest.mark.parametrize("stops", [dict(tp_pct=0.003), dict(sl_pct=0.05, tp_pct=0.003)])
def test_a_lone_target_rests_on_the_exchange_and_one_beside_a_stop_is_watched(stops, tmp_path):
    codes = {1: 1, 9: 1, 17: 1}  # three longs; each target is hit within a few bars
    ex, runner = scripted_run(tmp_path, codes, price_tick=0.01, **stops)
    try:
        drive(ex, runner, 24)
        summary = runner.summary()
        ours = fills_until(runner.store, summary["last_bar"])
        settings = runner.settings
        runner.close()
        kinds = [(o.type, o.status) for o in ex.engine.orders.values() if o.type != "MARKET"]
    finally:
        ex.stop()
    result = backtest(runner.strategy, scripted_data(codes), settings, summary).run()
    theirs = result.fills
    assert (theirs["reason"] == "take_profit").sum() == 3
    ids = [core_id(f.client_order_id) for f in ours]
    if "sl_pct" not in stops:  # it rests as TAKE_PROFIT and fills at its level, in its bar
        assert kinds == [("TAKE_PROFIT", "FILLED")] * 3
        assert ids == theirs["client_order_id"].tolist()
        assert [f.price for f in ours] == pytest.approx(theirs["price"].tolist(), rel=1e-15, abs=0)
    else:  # the stop rests (on spot it locks the coins); the target, watched, fills at the next open
        assert kinds == [("STOP_LOSS", "CANCELED")] * 3
        assert ids == theirs["client_order_id"].tolist()[:len(ids)]  # the last one after the run's end
        sells = [f for f in ours if f.side == "sell"]
        assert len(sells) >= 2 and all(f.client_order_id.count(".") == 3 for f in sells)  # at market
        assert [f.price for f in sells] != theirs[theirs["side"] == "sell"]["price"].tolist()[:len(sells)]


def test_the_watch_policy_and_bad_values(tmp_path):
    ex, runner = scripted_run(tmp_path, {1: 1}, protective="watch", sl_pct=0.05)
    try:
        drive(ex, runner, 3)
        assert runner.on_exchange == [False] and runner.stepper.positions[0] > 0
        runner.close()
        assert not [o for o in ex.engine.orders.values() if o.type == "STOP_LOSS"]
        assert SYMBOL and len(client_ids(ex)) == 1  # the entry only
    finally:
        ex.stop()
    with pytest.raises(ValueError, match="protective must be one of exchange, watch"):
        scripted_run(tmp_path / "x", {}, protective="both")
