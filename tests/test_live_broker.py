"""The live runner in broker mode: the ccxt broker against the local exchange (offline), driven
bar by bar with the exchange's stepped clock, so that a market order sent after a close fills at
the next bar's open, as in the backtest.

Parity with the sim's fee rate: the exchange takes its fee from the asset received (base on a
buy, quote on a sell), the backtest from cash. So a buy's fee is compared by value (base fee x
price = the backtest's quote fee), and the position a buy leaves is its quantity less that base
fee: the exit sells exactly that. Everything else (which orders, sides, prices) is equal to the
last bit, quantities and fees to the fee currency's second-order effect on equity (< 1e-5) and
the exchange's rounding of fees to 8 decimals."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from framework.backtest import Backtest
from framework.exchange import RetryPolicy, create_exchange
from framework.local_exchange import LocalExchange, ccxt_client
from framework.settings import SimSettings
from live.ccxt_broker import CcxtBroker
from live.feed import CandleFeed, FeedEvent
from live.runner import LiveRunner, PaperBroker
from live.service import RunnerServices, ServiceOptions
from live.store import StateStore
from strategies import STRATEGIES
from tests.exchange_fixtures import API_KEY, SECRET
from tests.test_live_runner import killed

ROOT = Path(__file__).resolve().parents[1]
W, L = 60, 40  # warm-up bars, live bars
FEE = 0.001
FAST = dict(fast=2, slow=3)  # crosses often: many orders in few bars
RETRY = RetryPolicy(max_retries=3, base_delay_s=0.01, factor=2.0, max_delay_s=0.05, jitter="none")


def frames(k: int, rows: int) -> dict[str, pd.DataFrame]:
    """Hourly bars of ``k`` symbols (imported here: a runner subprocess needs no data files)."""
    from tests.test_live_runner import frames as hourly

    return hourly(k, rows=rows)


def exchange(data: dict[str, pd.DataFrame]) -> LocalExchange:
    """The local exchange, zero spread, the sim's fee, its stepped clock at the open of bar W."""
    return LocalExchange(data, start=next(iter(data.values())).index[W], clock="stepped",
                         api_keys={API_KEY: SECRET}, fee_rate=FEE, spread=0.0).start()


def make_broker(url: str, *, timeout_ms: int = 10_000) -> CcxtBroker:
    """The ccxt broker on the local exchange: quick backoff, a short receive window."""
    c = ccxt_client(url, api_key=API_KEY, secret=SECRET, timeout=timeout_ms)
    c.rateLimit = 1
    return CcxtBroker(c, retry=RETRY, order_window_ms=500, clock_skew_ms=100)


def settings_for(strategy, k: int) -> SimSettings:
    # half the equity per entry: the backtest's cash cap (fee paid from cash) never binds, so
    # both size an entry by the same notional
    return SimSettings.build(strategy.sim_defaults, size=0.5, fees=FEE, cash_sharing=k > 1)


def make_runner(url: str, strategy, settings, state: Path, symbols, *, broker=None, **kw) -> LiveRunner:
    feed = CandleFeed(create_exchange("binance", url=url), list(symbols), "1h")
    return LiveRunner(strategy, broker or make_broker(url), feed, settings, StateStore(state),
                      warmup_bars=W, run_id="b1", poll_s=0.02, **kw)


def drive(ex: LocalExchange, runner: LiveRunner, bars: int, before_bar=None) -> None:
    """Step the exchange's clock one bar at a time and let the runner step that bar."""
    if runner.stepper is None:
        runner.start()
    for i in range(runner.live_bars, bars):
        if before_bar is not None:
            before_bar(i)
        ex.clock.step(1)
        runner.run(max_bars=i + 1)


def backtest(strategy, data, settings, summary) -> Backtest:
    return Backtest(strategy, data, start=summary["first_bar"], end=summary["last_bar"],
                    trade_from=summary["trade_from"], run_id="b1",
                    **{k: v for k, v in vars(settings).items()})


def fills_until(store: StateStore, last_bar: str) -> list:
    """The run's fills up to its last bar (an order decided at the last close fills after it)."""
    end = pd.Timestamp(last_bar).value // 1_000_000
    return [f for f in store.fills() if f.timestamp_ms <= end]


# --- exchange parity -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "k"), [("sma_cross", 1), ("macd_trend", 2)])
def test_exchange_fills_equal_the_backtest(name, k, tmp_path):
    data = frames(k, rows=W + L + 3)
    strategy = STRATEGIES[name](**(FAST if name == "sma_cross" else {}))
    settings = settings_for(strategy, k)
    ex = exchange(data)
    try:
        runner = make_runner(ex.url, strategy, settings, tmp_path, data)
        drive(ex, runner, L)
        summary = runner.summary()
        ours = fills_until(runner.store, summary["last_bar"])
        kinds = [e.kind for e in runner.store.events()]
        runner.close()
        held = {a: b.total for a, b in make_broker(ex.url).balance().items()}
    finally:
        ex.stop()
    result = backtest(strategy, data, settings, summary).run()
    theirs = result.fills
    assert len(ours) == len(theirs) >= 4  # both traded: the comparison is not empty
    assert [f.client_order_id for f in ours] == theirs["client_order_id"].tolist()
    assert [f.side for f in ours] == theirs["side"].tolist()
    assert [f.price for f in ours] == theirs["price"].tolist()  # next bar's open, exactly
    for f, (_, t) in zip(ours, theirs.iterrows(), strict=True):
        if f.side == "buy":
            assert f.fee_currency == f.symbol.split("/")[0]
            assert f.qty == pytest.approx(t["qty"], rel=1e-5)
            # the base fee valued in quote; the exchange books it on 8 decimals
            assert f.fee * f.price == pytest.approx(t["fee"], rel=1e-5, abs=f.price * 1e-8)
        else:
            assert f.fee_currency == "USDT"
            # the exit sells what the buy left after its base fee
            assert f.qty == pytest.approx(t["qty"] * (1 - FEE), rel=1e-5)
            assert f.fee == pytest.approx(t["fee"] * (1 - FEE), rel=1e-5)
    assert summary["equity"] == pytest.approx(float(result.equity.iloc[-1]), rel=1e-4)
    assert "balance_mismatch" not in kinds
    # the account holds what the core books: positions to the unit of the 8th decimal
    for symbol in data:
        assert held.get(symbol.split("/")[0], 0.0) == pytest.approx(summary["positions"][symbol], abs=1e-9)


# --- one small run, uninterrupted and under faults ----------------------------------------------------

SYMBOL = "BTC/USDT"
SCRIPT = """
import sys
from tests.test_live_broker import fast_runner
runner = fast_runner(sys.argv[1], sys.argv[2], stops=True)
runner.run(max_bars=int(sys.argv[3]))
runner.close()
"""
# a trailing stop on the price tick: resting on the exchange, replaced as it moves, filled often
STOPS = dict(trail_pct=0.004, price_tick=0.01)


def fast_runner(url: str, state, stops: bool = False, **kw) -> LiveRunner:
    """The run of these tests: a 2/3 moving-average cross on one symbol (an order every few
    bars); with ``stops``, a trailing stop resting on the exchange."""
    strategy = STRATEGIES["sma_cross"](**FAST)
    settings = settings_for(strategy, 1)
    if stops:
        settings = SimSettings(**{**vars(settings), **STOPS})
    return make_runner(url, strategy, settings, Path(state), [SYMBOL], **kw)


def small_data() -> dict[str, pd.DataFrame]:
    return frames(1, rows=W + L + 3)


def outcome(state: Path) -> tuple[list, list]:
    """The run's fills (without the exchange's trade ids) and orders, from its store."""
    with StateStore(state, create=False) as store:
        fills = [(f.client_order_id, f.side, f.qty, f.price, f.fee, f.fee_currency, f.timestamp_ms)
                 for f in store.fills()]
        orders = [(o.client_order_id, o.status, o.filled_qty) for o in store.orders()]
    return fills, orders


def runner_pid(state: Path) -> int | None:
    if not (state / "state.sqlite").exists():
        return None
    with StateStore(state, create=False) as store:
        return store.runner_pid()


def client_ids(ex: LocalExchange) -> list[str]:
    return [o.client_id for o in ex.engine.orders.values()]


def exchange_orders(ex: LocalExchange) -> list[tuple[str, str]]:
    """Every order of the account on the exchange: client id and status."""
    with ex.engine.lock:
        return sorted((o.client_id, o.status) for o in ex.engine.orders.values())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (with its trailing stop on the exchange): its fills and orders,
    and the exchange's orders once each bar was handled (before the next)."""
    state = tmp_path_factory.mktemp("reference")
    ex = exchange(small_data())
    handled: list[list[tuple[str, str]]] = []
    try:
        runner = fast_runner(ex.url, state, stops=True)
        drive(ex, runner, L, lambda i: handled.append(exchange_orders(ex)))
        runner.close()
    finally:
        ex.stop()
    fills, orders = outcome(state)
    assert len(fills) >= 10
    placements = [o for o in orders if o[0].count(".") == 4]
    assert {"filled", "cancelled"} <= {status for _, status, _ in placements}  # stops fill, and move
    return fills, orders, handled


def test_network_faults_on_orders_and_reads_change_nothing(reference, tmp_path):
    """A lost create_order answer, a 5xx, a rate limit, a dropped connection and a latency beyond
    the timeout on the order requests, 5xx on the trade reads: the fills and orders of the run
    without faults, each order once on the exchange."""
    ex = exchange(small_data())
    order = dict(path="/api/v3/order", method="POST")
    ex.faults.lose_response(count=1).http_error(503, count=1, **order)
    ex.faults.rate_limit(retry_after=0.01, count=1, **order).drop_connection(count=1, **order)
    ex.faults.http_error(502, count=2, path="/api/v3/myTrades")

    def later_faults(i: int) -> None:
        if i == L // 2:  # answered after the timeout and after its receive window: refused
            ex.faults.latency(0.9, count=1, **order)

    try:
        runner = fast_runner(ex.url, tmp_path, stops=True, broker=make_broker(ex.url, timeout_ms=200))
        services = RunnerServices(runner, ServiceOptions(metrics_port=0)).start()
        drive(ex, runner, L, later_faults)
        runner.on_poll[0]()  # the services' last turn: counters synced
        errors, retries, registry = dict(runner.broker.errors), dict(runner.broker.retries), services.metrics.registry
        services.stop("test")
        runner.close()
        assert ex.faults.describe()["rules"] == []  # every fault hit a request
        statuses = [r.status for r in ex.requests("/api/v3/order", "POST")]
        ids = client_ids(ex)
    finally:
        ex.stop()
    assert {503, 429, 400} <= set(statuses)
    assert len(ids) == len(set(ids))
    assert outcome(tmp_path) == reference[:2]
    # every network error met and retry made is counted, and exported as the runner's metrics
    assert sum(errors.values()) >= 7 and retries["submit"] >= 4 and sum(retries.values()) > retries["submit"]
    for kind, n in errors.items():
        assert registry.get_sample_value("tradpal_exchange_errors_total", {"kind": kind}) == n
    for operation, n in retries.items():
        assert registry.get_sample_value("tradpal_retries_total", {"operation": operation}) == n


def test_kill_9_at_random_moments_and_after_submit_loses_and_doubles_nothing(reference, tmp_path):
    """At least 20 kill -9 of a broker-mode runner process (at the crash point between the
    exchange's acknowledgement and the store's commit, between the cancel of a resting stop and
    its record, at other crash points, or at a random moment), each followed by a restart: the
    fills and orders of the uninterrupted run (its trailing stop's placements included), no
    order twice on the exchange; one more restart books nothing new."""
    rng = random.Random(11)
    points = ("runner.after_submit", "runner.after_cancel", "runner.after_step", "after_record_fill",
              "before_record_fill", "commit_bar.commit", "after_commit_bar", "before_update_order")
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ex = exchange(small_data())
    stepped, kills = 0, 0
    first_ms = int(ex.clock.now_ms())  # the open of the first live bar

    def caught_up() -> bool:
        """The runner has stepped every closed bar, booked every trade of the exchange and
        done there what the uninterrupted run had done by then (its stop placed, replaced...)."""
        if not (state / "state.sqlite").exists():
            return False
        with StateStore(state, create=False) as store:
            cursor = store.cursor()
            created = [o for o in store.orders("created") if o.request.type in ("market", "limit")]
            n_fills = len(store.fills())
        trades = sum(len(t) for t in ex.engine.trades.values())
        return bool(cursor) and max(cursor.values()) == first_ms + (stepped - 1) * 3_600_000 \
            and not created and n_fills == trades and exchange_orders(ex) == reference[2][stepped]

    try:
        cmd = [sys.executable, "-c", SCRIPT, ex.url, str(state), str(L)]
        for attempt in range(200):
            crash_env, crashing = dict(env), kills < 22  # then one run to the end, undisturbed
            if crashing and attempt % 2 == 0:
                crash_env["TRADPAL_CRASH_AT"] = rng.choice(points)
            proc = subprocess.Popen(cmd, env=crash_env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            # while crashing, each process gets at most one new bar, so the run outlasts the kills
            budget = stepped + 1 if crashing else L
            kill_at, deadline = None, time.monotonic() + 120
            while proc.poll() is None:
                if time.monotonic() > deadline:  # it never got where the uninterrupted run was
                    proc.kill()
                    raise AssertionError(f"bar {stepped}: {exchange_orders(ex)} != {reference[2][stepped]}")
                if crashing and attempt % 2 and kill_at is None and runner_pid(state) == proc.pid:
                    kill_at = time.monotonic() + rng.uniform(0.0, 1.0)  # a random moment
                if kill_at is not None and time.monotonic() >= kill_at:
                    proc.send_signal(signal.SIGKILL)
                    break
                if stepped < L and caught_up():
                    if stepped < budget:
                        ex.clock.step(1)
                        stepped += 1
                    elif stepped < L:  # its bar is done and no crash point came: between bars
                        proc.send_signal(signal.SIGKILL)
                        break
                time.sleep(0.01)
            if not killed(proc, timeout=60):
                break  # the run reached its bars
            kills += 1
        assert kills >= 20
        ids = client_ids(ex)
        again = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr[-3000:]
        assert client_ids(ex) == ids  # the restart sent nothing
    finally:
        ex.stop()
    assert len(ids) == len(set(ids))  # no client order id twice on the exchange
    assert outcome(state) == reference[:2]


# --- reconcile, rejections, stale feed, approvals ------------------------------------------------------


def kinds_of(store: StateStore) -> list[str]:
    return [e.kind for e in store.events()]


def test_restart_adopts_its_own_orders_flags_external_ones_and_halts_on_a_balance_difference(tmp_path):
    ex = exchange(small_data())
    try:
        runner = fast_runner(ex.url, tmp_path)
        drive(ex, runner, 8)
        runner.close()
        n_fills = len(outcome(tmp_path)[0])
        raw = ccxt_client(ex.url, api_key=API_KEY, secret=SECRET)
        price = raw.fetch_ticker(SYMBOL)["last"]
        for cid in ("manual-1", "smacross.b1.0.999"):  # someone else's; this run's, unrecorded
            raw.create_order(SYMBOL, "limit", "buy", 0.001, round(price * 0.5, 2), {"clientOrderId": cid})
        ex.engine.account(API_KEY).bal("USDT")[0] += 100.0  # a deposit the run knows nothing of
        runner = fast_runner(ex.url, tmp_path)
        runner.start()
        store = runner.store
        kinds = kinds_of(store)
        assert "order_adopted" in kinds and "order_external" in kinds and "balance_mismatch" in kinds
        assert store.order("smacross.b1.0.999").status == "submitted"
        assert store.order("manual-1") is None
        (external,) = [e.payload for e in store.events() if e.kind == "order_external"]
        assert external["client_order_id"] == "manual-1" and external["policy"] == "report"
        assert store.get_flag("balance_hold")["USDT"]["exchange"] == pytest.approx(
            store.get_flag("balance_hold")["USDT"]["expected"] + 100.0)
        assert runner.stepper.entries_blocked
        rid = store.request("confirm_balance")
        runner.handle_requests()
        assert store.get_request(rid).result == {"ok": True, "balance_hold": False}
        assert not runner.stepper.entries_blocked and store.get_flag("balance_hold") is None
        assert len(store.fills()) == n_fills  # nothing was missed, nothing booked twice
        runner.close()
        # the policy "cancel": the foreign order is cancelled at the next start; the balance holds
        runner = fast_runner(ex.url, tmp_path, external_orders="cancel")
        runner.start()
        assert kinds_of(runner.store).count("balance_mismatch") == 1
        assert not runner.stepper.entries_blocked and len(runner.store.fills()) == n_fills
        runner.close()
        open_ids = [o["clientOrderId"] for o in raw.fetch_open_orders(SYMBOL)]
    finally:
        ex.stop()
    assert "manual-1" not in open_ids


def test_insufficient_funds_and_lost_orders_are_final_with_the_reason(tmp_path):
    ex = exchange(small_data())
    post = dict(path="/api/v3/order", method="POST")
    try:
        runner = fast_runner(ex.url, tmp_path)
        runner.start()
        usdt = ex.engine.account(API_KEY).bal("USDT")
        kept = usdt[0]
        usdt[0] = 1.0  # the next entry cannot be paid
        i = 0
        while not runner.store.orders("rejected"):
            drive(ex, runner, i + 1)
            i += 1
        (rejected,) = runner.store.orders("rejected")
        assert "insufficient balance" in rejected.reason and not runner.store.fills()
        event = next(e.payload for e in runner.store.events() if e.kind == "order_rejected")
        assert event["balance"]["USDT"] == 1.0  # refreshed from the exchange
        usdt[0] = kept
        ex.faults.drop_connection(count=None, **post)  # the exchange never gets an order
        while not runner.store.orders("lost"):
            drive(ex, runner, i + 1)
            i += 1
        ex.faults.clear()
        (lost,) = runner.store.orders("lost")
        alert = next(e.payload for e in runner.store.events() if e.kind == "order_lost")
        assert alert["alert"] is True and alert["client_order_id"] == lost.client_order_id
        assert lost.client_order_id not in client_ids(ex)
        drive(ex, runner, i + 6)  # trading goes on: later orders fill
        assert runner.store.fills() and runner.store.order(rejected.client_order_id).status == "rejected"
        runner.close()
    finally:
        ex.stop()


def test_partial_fills_are_booked_as_they_are(tmp_path):
    ex = exchange(small_data())
    ex.faults.partial_fills(0.5)  # every market order fills half and expires
    try:
        runner = fast_runner(ex.url, tmp_path)
        drive(ex, runner, 12)
        summary = runner.summary()
        fills = runner.store.fills()
        orders = {o.client_order_id: o for o in runner.store.orders()}
        runner.close()
        held = make_broker(ex.url).balance()["BTC"].total
        trades = sum(len(t) for t in ex.engine.trades.values())
    finally:
        ex.stop()
    assert len(fills) == trades >= 2
    first = fills[0]
    assert first.side == "buy" and orders[first.client_order_id].status == "filled"
    assert first.qty * first.price == pytest.approx(0.25 * 10_000.0, rel=1e-3)  # half of half the equity
    assert held == pytest.approx(summary["positions"][SYMBOL], abs=1e-9)


def test_a_stale_feed_blocks_entries_and_exits_still_go_out(tmp_path):
    ex = exchange(small_data())
    window: list[int] = []  # live bars at which the feed turned stale and fresh
    try:
        runner = fast_runner(ex.url, tmp_path)
        notices: list = []
        real = runner.feed.next_bars
        runner.feed.next_bars = lambda timeout_s=None: notices.pop(0) if notices else real(timeout_s=timeout_s)

        def feed_notices(i: int) -> None:
            # stale while a position is open (its exit must still go out), fresh 12 bars later
            if not window and i >= 3 and runner.stepper.positions[0] > 0 or len(window) == 1 and i == window[0] + 12:
                window.append(i)
                notices.append(FeedEvent("stale" if len(window) == 1 else "fresh", 0, (SYMBOL,), "test"))

        drive(ex, runner, 30, feed_notices)
        orders = runner.store.orders()
        t0 = runner.info.trade_from_ms
        kinds = kinds_of(runner.store)
        runner.close()
    finally:
        ex.stop()
    assert len(window) == 2 and "feed_stale" in kinds and "feed_fresh" in kinds
    stale = range(t0 + window[0] * 3_600_000, t0 + window[1] * 3_600_000)
    blocked = [o for o in orders if o.reason == "entries_blocked"]
    assert blocked and all(o.created_bar_ms in stale and not o.request.reduce_only and o.status == "rejected"
                           for o in blocked)
    assert all(o.client_order_id not in client_ids(ex) for o in blocked)
    assert not [o for o in orders if o.created_bar_ms in stale and o.status == "filled" and not o.request.reduce_only]
    assert [o for o in orders if o.created_bar_ms in stale and o.status == "filled" and o.request.reduce_only]
    assert [o for o in orders if o.created_bar_ms >= stale.stop and o.status == "filled"
            and not o.request.reduce_only]  # entries again once fresh


class ScriptedGate:
    """Answers per order, in the order asked: a list of answers for each new order (the last
    one repeats)."""

    def __init__(self, scripts: list[list[str]]) -> None:
        self.scripts, self.orders, self.asked = list(scripts), {}, []

    def decide(self, order, created_s: float, now_s: float) -> str:
        if order.client_order_id not in self.orders:
            self.orders[order.client_order_id] = self.scripts.pop(0) if self.scripts else ["approved"]
        answers = self.orders[order.client_order_id]
        self.asked.append((order.client_order_id, answers[0]))
        return answers.pop(0) if len(answers) > 1 else answers[0]


def test_confirm_orders_gate_sends_only_approved_orders(tmp_path):
    gate = ScriptedGate([["pending", "approved"], ["rejected"], ["pending"], ["expired"]])
    ex = exchange(small_data())
    try:
        runner = fast_runner(ex.url, tmp_path, order_gate=gate)
        drive(ex, runner, 25)
        orders = runner.store.orders()
        runner.close()
        sent = client_ids(ex)
    finally:
        ex.stop()
    first, second, third, fourth = (o.client_order_id for o in orders[:4])
    assert [a for c, a in gate.asked if c == first] == ["pending", "approved"]
    assert first in sent and orders[0].status == "filled"
    for o, reason in zip(orders[1:4], ("not_approved", "approval_expired", "approval_expired"), strict=True):
        assert (o.status, o.reason) == ("rejected", reason) and o.client_order_id not in sent
    assert any(o.status == "filled" for o in orders[4:])  # approved later orders go out


# --- watched stops, a cancel racing a fill (a scripted strategy: its decisions in the volume) ----------


def scripted_data(codes: dict[int, int]) -> dict[str, pd.DataFrame]:
    """The bars of one symbol whose live bar ``i`` carries volume code ``codes[i]``."""
    data = small_data()
    volume = np.zeros(len(data[SYMBOL]))
    for i, code in codes.items():
        volume[W + i] = code
    return {SYMBOL: data[SYMBOL].assign(volume=volume)}


def scripted_run(tmp_path, codes: dict[int, int], gap: float = 0.0, protective: str = "exchange", **settings):
    """A Scripted strategy on :func:`scripted_data`."""
    from tests.scripted import Scripted

    strategy = Scripted(gap=gap)
    ex = exchange(scripted_data(codes))
    runner = make_runner(ex.url, strategy, SimSettings(size=0.5, fees=FEE, **settings), tmp_path, [SYMBOL],
                         protective=protective)
    return ex, runner


def test_a_watched_stop_that_the_bar_crossed_goes_out_as_a_market_order(tmp_path):
    ex, runner = scripted_run(tmp_path, {1: 1}, protective="watch", sl_pct=0.002)  # long, a stop 0.2 % below
    try:
        drive(ex, runner, 30)
        events = [e.payload for e in runner.store.events() if e.kind == "fill"]
        stop_cid = next(e["client_order_id"] for e in events if e["reason"] == "stop_loss")
        stored = runner.store.order(stop_cid)
        level = stored.request.trigger
        summary = runner.summary()
        runner.close()
        held = make_broker(ex.url).balance().get("BTC")
        sent = [o for o in ex.engine.orders.values() if o.client_id == stop_cid]
    finally:
        ex.stop()
    assert [e["reason"] for e in events] == ["signal", "stop_loss"]
    assert stored.status == "filled" and stored.request.type == "stop"
    (order,) = sent  # sent once, as a market order when a bar crossed the level
    assert order.type == "MARKET" and order.side == "SELL"
    bars = small_data()[SYMBOL]
    exit_ms = next(e for e in events if e["reason"] == "stop_loss")["bar"]
    crossed = bars.loc[: pd.Timestamp(exit_ms) - pd.Timedelta(hours=1)].iloc[-1]  # the bar before the exit's
    assert crossed["low"] <= level
    assert summary["positions"][SYMBOL] == 0.0 and (held is None or abs(held.total) < 1e-9)


def test_a_cancel_that_races_a_fill_books_the_fill(tmp_path):
    ex, runner = scripted_run(tmp_path, {1: 11}, gap=0.2)  # a buy limit 20 % below: it rests
    broker = runner.broker
    real_cancel = broker.exchange.cancel_order
    raced: list[str] = []

    def cancel_after_a_fill(*args, **kwargs):
        with ex.engine.lock:  # the order fills just before the cancel reaches the exchange
            o = next(o for o in ex.engine.orders.values() if o.is_open)
            ex.engine._fill(ex.engine.market.by_id[o.symbol], o, o.price, ex.clock.now_ms(), maker=True)
            raced.append(o.client_id)
        return real_cancel(*args, **kwargs)

    broker.exchange.cancel_order = cancel_after_a_fill
    submitted = []
    real_submit = broker.submit
    broker.submit = lambda order: submitted.append(order) or real_submit(order)
    try:
        drive(ex, runner, 4)
        fills = runner.store.fills()
        order = runner.store.order(raced[0])
        positions = runner.stepper.positions
        runner.close()
        held = make_broker(ex.url).balance()["BTC"].total
    finally:
        ex.stop()
    assert len(raced) == 1 and [f.client_order_id for f in fills] == raced
    assert order.status == "filled" and order.request.type == "limit"
    assert fills[0].price == pytest.approx(order.request.price, abs=1e-8)  # on the price tick
    assert submitted[0].ref_price == small_data()[SYMBOL]["close"].iloc[W + 1]  # decided at that close
    assert positions[0] == pytest.approx(held, abs=1e-9) and held > 0


def test_emergency_stop_flattens_at_the_broker_at_once(tmp_path):
    ex = exchange(small_data())
    try:
        runner = fast_runner(ex.url, tmp_path)
        runner.start()
        i = 0
        while not runner.stepper.positions.any():
            drive(ex, runner, i + 1)
            i += 1
        broker = make_broker(ex.url)
        assert broker.balance()["BTC"].total > 0
        rid = runner.store.request("emergency_stop")
        runner.handle_requests()  # within one poll: no bar in between
        assert runner.store.get_request(rid).result["ok"] is True
        assert broker.balance()["BTC"].total == pytest.approx(0.0, abs=1e-9)
        assert not runner.stepper.positions.any() and runner.store.get_flag("halted") is True
        n_orders = len(ex.engine.orders)
        drive(ex, runner, i + 10)  # halted: the strategy's entries are refused, nothing is sent
        assert len(ex.engine.orders) == n_orders
        runner.close()
    finally:
        ex.stop()


def test_emergency_stop_cancels_a_resting_order_at_the_broker(tmp_path):
    ex, runner = scripted_run(tmp_path, {1: 11}, gap=0.2)  # a buy limit 20 % below: it rests
    try:
        drive(ex, runner, 2)
        (resting,) = [o for o in ex.engine.orders.values() if o.is_open]
        runner.store.request("emergency_stop")
        runner.handle_requests()
        order = runner.store.order(resting.client_id)
        runner.close()
    finally:
        ex.stop()
    assert resting.status == "CANCELED" and order.status == "cancelled"


def test_bad_broker_and_options_are_refused_in_their_words():
    strategy = STRATEGIES["sma_cross"]()
    with pytest.raises(TypeError, match="lacks submit, cancel, fetch_order"):
        LiveRunner(strategy, object(), None, SimSettings(), None)
    broker = CcxtBroker(ccxt_client("http://127.0.0.1:9"))
    with pytest.raises(ValueError, match="external_orders must be one of report, cancel"):
        LiveRunner(strategy, broker, None, SimSettings(), None, external_orders="adopt")
    with pytest.raises(TypeError, match="order_gate must have a decide"):
        LiveRunner(strategy, broker, None, SimSettings(), None, order_gate=object())
    with pytest.raises(ValueError, match=r"order_gate \(--confirm-orders\) needs a broker that sends orders"):
        LiveRunner(strategy, PaperBroker(), None, SimSettings(), None, order_gate=ScriptedGate([]))


class RecordingGate:
    """Answers ``answer`` to every order and records what it was asked: (id, created_s)."""

    def __init__(self, answer: str) -> None:
        self.answer, self.asked = answer, []

    def decide(self, order, created_s: float, now_s: float) -> str:
        self.asked.append((order.client_order_id, created_s))
        return self.answer


def test_an_order_waiting_for_approval_is_offered_again_after_a_restart(tmp_path):
    wall = [1_000.0]
    ex = exchange(small_data())
    try:
        gate = RecordingGate("pending")
        runner = fast_runner(ex.url, tmp_path, order_gate=gate, wall_clock=lambda: wall[0])
        i = 0
        while not gate.asked:
            drive(ex, runner, i + 1)
            i += 1
        (cid, decided_s), *_ = gate.asked
        runner.close()  # stopped while the order waits (the same bar: it is still due)
        wall[0] += 30.0
        gate = RecordingGate("approved")
        runner = fast_runner(ex.url, tmp_path, order_gate=gate, wall_clock=lambda: wall[0])
        runner.start()
        order = runner.store.order(cid)
        runner.close()
        sent = client_ids(ex)
    finally:
        ex.stop()
    assert decided_s == 1_000.0 and gate.asked[0] == (cid, decided_s)  # its wait counts from then
    assert cid in sent and order.status == "filled"


def test_confirm_orders_by_control_requests_through_the_runners_loop(tmp_path):
    """The real ``OrderGate`` (``--confirm-orders=control``) with the runner in its own thread:
    each order waits unsent until an operator, on another store connection, approves it
    (``approve_order``: sent and filled), rejects it (``reject_order``) or lets the timeout pass
    (the test moves the runner's wall clock on): both never reach the exchange."""
    from live.confirm import OrderGate

    skew = [0.0]  # the runner's wall clock runs ahead by this much (an expiry without waiting)
    ex = exchange(small_data())
    state = tmp_path / "state"
    try:
        started = threading.Event()
        held: list[LiveRunner] = []

        def run() -> None:  # the runner's store belongs to its own thread
            runner = fast_runner(ex.url, state, order_gate=OrderGate(timeout_s=60.0), wall_clock=lambda: time.time() + skew[0])
            held.append(runner)
            try:
                runner.start()
                started.set()
                runner.run(max_bars=25)
            finally:
                runner.close()

        thread = threading.Thread(target=run)
        thread.start()
        assert started.wait(120), "the runner did not start"
        runner = held[0]
        control = StateStore(state)

        def wait_for(condition) -> None:
            deadline = time.monotonic() + 60
            while not condition():
                assert time.monotonic() < deadline and thread.is_alive(), "the runner did not act"
                time.sleep(0.01)

        def waiting() -> list[str]:
            return [o.client_order_id for o in control.orders() if o.status == "created"]

        decided: list[tuple[str, str]] = []
        for i in range(25):
            ex.clock.step(1)
            bar_ms = runner.info.trade_from_ms + i * 3_600_000
            wait_for(lambda bar_ms=bar_ms: max(control.cursor().values()) >= bar_ms)  # bar i committed
            for cid in waiting():
                what = ("approve_order", "reject_order", "expire")[len(decided) % 3]
                if what == "expire":
                    skew[0] += 61.0
                else:
                    control.request(what, by="test", client_order_id=cid)
                wait_for(lambda cid=cid: cid not in waiting())
                decided.append((cid, what))
        thread.join(timeout=60)
        orders = {o.client_order_id: o for o in control.orders()}
        control.close()
        sent = client_ids(ex)
    finally:
        ex.stop()
    assert {w for _, w in decided} == {"approve_order", "reject_order", "expire"}
    for cid, what in decided:
        o = orders[cid]
        if what == "approve_order":
            assert cid in sent and o.status == "filled"
        else:
            assert cid not in sent and o.status == "rejected"
            assert o.reason == ("not_approved" if what == "reject_order" else "approval_expired")
    assert set(sent) <= {cid for cid, what in decided if what == "approve_order"}  # nothing unapproved went out
