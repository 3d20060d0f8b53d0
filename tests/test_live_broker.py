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
import time
from pathlib import Path

import pandas as pd
import pytest

from framework.backtest import Backtest
from framework.exchange import RetryPolicy, create_exchange
from framework.local_exchange import LocalExchange, ccxt_client
from framework.settings import SimSettings
from live.ccxt_broker import CcxtBroker
from live.feed import CandleFeed
from live.runner import LiveRunner
from live.store import StateStore
from strategies import STRATEGIES
from tests.exchange_fixtures import API_KEY, SECRET
from tests.test_live_runner import frames

ROOT = Path(__file__).resolve().parents[1]
W, L = 60, 40  # warm-up bars, live bars
FEE = 0.001
FAST = dict(fast=2, slow=3)  # crosses often: many orders in few bars
RETRY = RetryPolicy(max_retries=3, base_delay_s=0.01, factor=2.0, max_delay_s=0.05, jitter="none")


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
runner = fast_runner(sys.argv[1], sys.argv[2])
runner.run(max_bars=int(sys.argv[3]))
runner.close()
"""


def fast_runner(url: str, state, **kw) -> LiveRunner:
    """The run of these tests: a 2/3 moving-average cross on one symbol (an order every few bars)."""
    strategy = STRATEGIES["sma_cross"](**FAST)
    return make_runner(url, strategy, settings_for(strategy, 1), Path(state), [SYMBOL], **kw)


def small_data() -> dict[str, pd.DataFrame]:
    return frames(1, rows=W + L + 3)


def outcome(state: Path) -> tuple[list, list]:
    """The run's fills (without the exchange's trade ids) and orders, from its store."""
    with StateStore(state, create=False) as store:
        fills = [(f.client_order_id, f.side, f.qty, f.price, f.fee, f.fee_currency, f.timestamp_ms)
                 for f in store.fills()]
        orders = [(o.client_order_id, o.status, o.filled_qty) for o in store.orders()]
    return fills, orders


def client_ids(ex: LocalExchange) -> list[str]:
    return [o.client_id for o in ex.engine.orders.values()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: its fills and orders."""
    state = tmp_path_factory.mktemp("reference")
    ex = exchange(small_data())
    try:
        runner = fast_runner(ex.url, state)
        drive(ex, runner, L)
        runner.close()
    finally:
        ex.stop()
    fills, orders = outcome(state)
    assert len(fills) >= 10
    return fills, orders


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
        runner = fast_runner(ex.url, tmp_path, broker=make_broker(ex.url, timeout_ms=200))
        drive(ex, runner, L, later_faults)
        runner.close()
        assert ex.faults.describe()["rules"] == []  # every fault hit a request
        statuses = [r.status for r in ex.requests("/api/v3/order", "POST")]
        ids = client_ids(ex)
    finally:
        ex.stop()
    assert {503, 429, 400} <= set(statuses)
    assert len(ids) == len(set(ids))
    assert outcome(tmp_path) == reference


def test_kill_9_at_random_moments_and_after_submit_loses_and_doubles_nothing(reference, tmp_path):
    """At least 20 kill -9 of a broker-mode runner process (at the crash point between the
    exchange's acknowledgement and the store's commit, at other crash points, or at a random
    moment), each followed by a restart: the fills and orders of the uninterrupted run, no order
    twice on the exchange; one more restart books nothing new."""
    rng = random.Random(11)
    points = ("runner.after_submit", "runner.after_step", "after_record_fill", "before_record_fill",
              "commit_bar.commit", "after_commit_bar", "before_update_order")
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ex = exchange(small_data())
    stepped, kills = 0, 0
    first_ms = int(ex.clock.now_ms())  # the open of the first live bar

    def caught_up() -> bool:
        """The runner has stepped every closed bar and booked every trade of the exchange."""
        if not (state / "state.sqlite").exists():
            return False
        with StateStore(state, create=False) as store:
            cursor = store.cursor()
            created = [o for o in store.orders("created") if o.request.type in ("market", "limit")]
            n_fills = len(store.fills())
        trades = sum(len(t) for t in ex.engine.trades.values())
        return bool(cursor) and max(cursor.values()) == first_ms + (stepped - 1) * 3_600_000 \
            and not created and n_fills == trades

    try:
        cmd = [sys.executable, "-c", SCRIPT, ex.url, str(state), str(L)]
        for attempt in range(200):
            crash_env = dict(env)
            if attempt % 2 == 0:
                crash_env["TRADPAL_CRASH_AT"] = f"{rng.choice(points)}@{rng.randint(1, 2)}"
            proc = subprocess.Popen(cmd, env=crash_env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            kill_at = time.monotonic() + rng.uniform(1.5, 5.0) if attempt % 2 else None
            while proc.poll() is None:
                if kill_at is not None and time.monotonic() >= kill_at:
                    proc.send_signal(signal.SIGKILL)
                    break
                if stepped < L and caught_up():
                    ex.clock.step(1)
                    stepped += 1
                time.sleep(0.01)
            _, err = proc.communicate(timeout=60)
            if proc.returncode == -signal.SIGKILL:
                kills += 1
            else:
                assert proc.returncode == 0, err[-3000:]
                if kills >= 20:
                    break
                # finished before 20 kills: nothing left to crash; the loop cannot reach 20
                raise AssertionError(f"the run ended after {kills} kills")
        assert kills >= 20
        ids = client_ids(ex)
        again = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr[-3000:]
        assert client_ids(ex) == ids  # the restart sent nothing
    finally:
        ex.stop()
    assert len(ids) == len(set(ids))  # no client order id twice on the exchange
    assert outcome(state) == reference
