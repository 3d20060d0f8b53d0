"""The paper runner end to end against the local exchange (offline): replay parity with the
backtest for every bundled strategy, crash safety under kill -9, emergency stop and reset, the
command line."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from framework import cli, enums
from framework.backtest import Backtest
from framework.data import load_ohlcv
from framework.local_exchange import LocalExchange
from framework.runner import BarStepper
from framework.settings import SimSettings
from live.runner import restore_stepper
from live.store import StateStore
from strategies import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
A, W, L = 20_000, 150, 250  # first row of the data used, warm-up bars, live bars
SYMBOLS = ("BTC/USDT", "ETH/USDT")
FILES = {"BTC/USDT": "BTC_USDT-1h", "ETH/USDT": "ETH_USDT-1h"}
_FULL = {s: load_ohlcv(name) for s, name in FILES.items()}


def frames(k: int, rows: int = W + L + 2) -> dict[str, pd.DataFrame]:
    """Hourly bars of the first ``k`` symbols from row ``A`` on (every strategy trades there)."""
    return {s: _FULL[s].iloc[A:A + rows] for s in SYMBOLS[:k]}


@contextmanager
def local_exchange(data: dict[str, pd.DataFrame], clock: str = "fast"):
    """The local exchange on a free port, its clock at the open of bar ``W``: the last ``W``
    bars are closed, so the warm-up is bars 0..W-1 of ``data``."""
    ex = LocalExchange(data, start=next(iter(data.values())).index[W], clock=clock).start()
    try:
        yield ex
    finally:
        ex.stop()


def paper_args(strategy: str, ex: LocalExchange, k: int, state: Path, *extra: str) -> list[str]:
    args = ["paper", strategy, "--exchange", "binance", "--exchange-url", ex.url, "--timeframe", "1h",
            "--state", str(state), "--warmup", str(W), "--run-id", "p1"]
    for s in SYMBOLS[:k]:
        args += ["--symbol", s]
    return args + list(extra)


def expected_backtest(strategy, k: int, summary: dict) -> Backtest:
    return Backtest(strategy, frames(k, rows=4_000), start=summary["first_bar"], end=summary["last_bar"],
                    trade_from=summary["trade_from"], run_id="p1", cash_sharing=k > 1)


def stored_fill_records(state: Path, strategy, k: int, trade_from: int) -> np.ndarray:
    """The core's fill records as the runner's last snapshot (and the records kept beside it)
    restore them."""
    settings = SimSettings.build(strategy.sim_defaults, cash_sharing=k > 1)
    stepper = BarStepper(strategy, settings.vector(8760.0), n_columns=k, trade_from=trade_from, run_id="p1")
    with StateStore(state, create=False) as store:
        restore_stepper(stepper, store)
    return stepper.fills.copy()


def csv_rows(path: Path) -> list[list[str]]:
    """The CSV's rows as text (floats exactly as written)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["timestamp", "symbol", "side", "qty", "price", "fee",
                                   "client_order_id", "order_type", "reason"]
    return frame.values.tolist()


# --- parity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_paper_equals_the_backtest_of_its_bars(name, k, tmp_path):
    """``tradpal paper`` over the local exchange and ``tradpal backtest`` on the same bars
    (start = the first warm-up bar, trade from the first live bar, end = the last bar) write the
    same fills CSV, and the runner's core holds the backtest's fill records, exactly."""
    data = frames(k)
    for s, frame in data.items():  # the files `backtest --data` reads
        out = frame.copy()
        out.index = out.index.strftime("%Y-%m-%dT%H:%M:%SZ")
        out.to_csv(tmp_path / f"{FILES[s]}.csv", index_label="timestamp")
    state = tmp_path / "state"
    with local_exchange(data) as ex:
        code = cli.main(paper_args(name, ex, k, state, "--max-bars", str(L), "--fills-out",
                                   str(tmp_path / "paper.csv"), "--summary-out", str(tmp_path / "s.json")))
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    index = data[SYMBOLS[0]].index
    assert (summary["first_bar"], summary["trade_from"], summary["last_bar"]) == tuple(
        t.isoformat() for t in (index[0], index[W], index[W + L - 1]))
    bt_args = ["backtest", name, "--start", summary["first_bar"], "--end", summary["last_bar"],
               "--trade-from", summary["trade_from"], "--run-id", "p1", "--fills-out", str(tmp_path / "bt.csv")]
    for s in data:
        bt_args += ["--data", str(tmp_path / f"{FILES[s]}.csv")]
    if k > 1:
        bt_args += ["--set", "cash_sharing=true"]
    assert cli.main(bt_args) == 0
    paper = csv_rows(tmp_path / "paper.csv")
    assert len(paper) == summary["fills"] > 0  # the strategy traded: the comparison is not empty
    assert paper == csv_rows(tmp_path / "bt.csv")  # the symbol from the file name BTC_USDT-1h

    strategy = STRATEGIES[name]()
    result = expected_backtest(strategy, k, summary).run()
    records = stored_fill_records(state, strategy, k, W)
    assert records.dtype == result.fill_records.dtype and np.array_equal(records, result.fill_records)
    assert summary["equity"] == float(result.equity.iloc[-1])
    with StateStore(state, create=False) as store:
        stored = [(o.client_order_id, o.status) for o in store.orders()]
        assert len({f.trade_id for f in store.fills()}) == len(store.fills())
    assert stored == list(zip(result.orders["client_order_id"], result.orders["status"], strict=True))


def test_the_runner_in_process_publishes_committed_events_and_resumes(tmp_path):
    """The API: a run stopped after 40 bars and started again on the same store continues to
    the fills of one uninterrupted run; every fill is published once as an event."""
    from framework.exchange import create_exchange
    from live.feed import CandleFeed
    from live.runner import LiveRunner, PaperBroker

    strategy = STRATEGIES["macd_trend"]()
    settings = SimSettings.build(strategy.sim_defaults, cash_sharing=True)
    seen: list[dict] = []
    with local_exchange(frames(2)) as ex:
        for max_bars in (40, 120):
            feed = CandleFeed(create_exchange("binance", url=ex.url), list(SYMBOLS), "1h")
            runner = LiveRunner(strategy, PaperBroker(), feed, settings, StateStore(tmp_path),
                                warmup_bars=W, run_id="p1", on_event=[seen.append])
            try:
                assert runner.run(max_bars=max_bars) == max_bars
                summary, fills, records = runner.summary(), runner.fills_frame(), runner.stepper.fills.copy()
            finally:
                runner.close()
    result = expected_backtest(strategy, 2, summary).run()
    assert np.array_equal(records, result.fill_records) and len(records) > 0
    assert fills["client_order_id"].tolist() == result.fills["client_order_id"].tolist()
    assert fills["price"].tolist() == result.fills["price"].tolist()
    published = [e["trade_id"] for e in seen if e["kind"] == "fill"]
    assert sorted(published) == sorted(f"{c}-0" for c in result.fills["client_order_id"])
    assert sum(e["kind"] == "session_started" for e in seen) == 1


def test_catching_up_commits_bars_in_groups_with_the_backtests_fills(tmp_path):
    """On the fast clock the feed is always ahead: bars are committed ``commit_every`` at a time
    (one snapshot per group, every bar's orders, fills and events), and the stored run is the
    backtest's; the restored core holds the same records as the running one."""
    from framework.exchange import create_exchange
    from live.feed import CandleFeed
    from live.runner import LiveRunner, PaperBroker

    strategy = STRATEGIES["macd_trend"]()
    settings = SimSettings.build(strategy.sim_defaults, cash_sharing=True)
    with local_exchange(frames(2)) as ex:
        feed = CandleFeed(create_exchange("binance", url=ex.url), list(SYMBOLS), "1h")
        runner = LiveRunner(strategy, PaperBroker(), feed, settings, StateStore(tmp_path), warmup_bars=W,
                            run_id="p1", commit_every=60)
        snapshots = []
        commit_bar = runner.store.commit_bar
        runner.store.commit_bar = lambda bar_ms, snapshot, *a, **k: (
            snapshots.append(snapshot is not None), commit_bar(bar_ms, snapshot, *a, **k))[1]
        try:
            assert runner.run(max_bars=L) == L
            summary, records, events = runner.summary(), runner.stepper.fills.copy(), runner.stepper.events.copy()
        finally:
            runner.close()
    assert len(snapshots) == 1 + L and 1 + L // 60 <= sum(snapshots) <= 1 + L // 60 + 3  # warm-up, groups
    result = expected_backtest(strategy, 2, summary).run()
    assert np.array_equal(records, result.fill_records) and len(records) > 0
    assert np.array_equal(stored_fill_records(tmp_path, strategy, 2, W), records)
    with StateStore(tmp_path, create=False) as store:
        assert [(o.client_order_id, o.status) for o in store.orders()] == list(
            zip(result.orders["client_order_id"], result.orders["status"], strict=True))
        assert store.records("events") == events.tobytes()


# --- crash safety ---------------------------------------------------------------------------------

_POINTS = ("runner.after_step", "runner.after_fills", "before_commit_bar", "commit_bar.snapshot",
           "commit_bar.orders", "commit_bar.commit", "after_commit_bar", "before_record_fill",
           "record_fill.commit", "after_record_fill")


def _cursor(state: Path) -> int | None:
    if not (state / "state.sqlite").exists():
        return None
    with StateStore(state, create=False) as store:
        cursor = store.cursor()
    return max(cursor.values()) if cursor else None


def killed(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait for a runner process of a crash loop: True if ``kill -9`` ended it; otherwise it
    must have finished cleanly (its stderr shown if not)."""
    _, err = proc.communicate(timeout=timeout)
    if proc.returncode == -signal.SIGKILL:
        return True
    assert proc.returncode == 0, err[-3000:]
    return False


def test_kill_9_at_random_moments_loses_and_doubles_nothing(tmp_path):
    """At least 20 ``kill -9`` of ``tradpal paper`` (crash points inside and between the step,
    the fills and the bar's commit, or a random moment while it steps), each followed by the same
    command: the final fills and orders are the backtest's of the bars the run stepped (which is
    what an uninterrupted run gives, test above), none missing, none twice. The fast clock keeps
    the runner catching up, so it commits bars in groups (``--commit-every 5``): kills land
    inside a group too, whose bars the restart steps again."""
    rng = random.Random(7)
    total = 3000  # enough bars that the kills come before the end at catch-up speed
    data = frames(2, rows=W + total + 300)  # room for the clock to run ahead while restarting
    state = tmp_path / "state"
    kills = 0
    with local_exchange(data) as ex:
        cmd = [sys.executable, "-m", "framework.cli",
               *paper_args("macd_trend", ex, 2, state, "--max-bars", str(total), "--poll", "0.1",
                           "--commit-every", "5", "--fills-out", str(tmp_path / "paper.csv"), "--summary-out", str(tmp_path / "s.json"))]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for attempt in range(60):
            if kills >= 22:
                break
            crash_env = dict(env)
            use_point = attempt % 2 == 0
            if use_point:
                point = rng.choice(_POINTS)
                crash_env["TRADPAL_CRASH_AT"] = f"{point}@{rng.randint(1, 4)}"
            before = _cursor(state)
            proc = subprocess.Popen(cmd, env=crash_env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            if not use_point:  # kill it at a random moment once it steps bars
                deadline = time.monotonic() + 60
                while proc.poll() is None and _cursor(state) == before and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 0.15))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
            if not killed(proc, timeout=120):
                break  # the run reached its bars
            kills += 1
        assert kills >= 20
        final = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stderr[-2000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["live_bars"] == total
    strategy = STRATEGIES["macd_trend"]()
    result = expected_backtest(strategy, 2, summary).run()
    paper = pd.read_csv(tmp_path / "paper.csv")
    assert len(paper) == len(result.fills) > 10
    assert paper["client_order_id"].tolist() == result.fills["client_order_id"].tolist()
    for col, theirs in (("qty", "qty"), ("price", "price"), ("fee", "fee")):
        assert paper[col].tolist() == result.fills[theirs].tolist()
    with StateStore(state, create=False) as store:
        orders = [(o.client_order_id, o.status, o.filled_qty) for o in store.orders()]
        fills = store.fills()
    assert orders == list(zip(result.orders["client_order_id"], result.orders["status"],
                              result.orders["filled_qty"], strict=True))
    assert sorted(f.trade_id for f in fills) == sorted(f"{c}-0" for c in result.fills["client_order_id"])
    assert np.array_equal(stored_fill_records(state, strategy, 2, summary["bars"] - total), result.fill_records)


# --- emergency stop, reset, status, a second runner ------------------------------------------------


def _tradpal(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "framework.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=timeout)


def _wait_for(state: Path, check, what: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (state / "state.sqlite").exists():
            with StateStore(state, create=False) as store:
                status = store.status()
            if status["summary"] and check(status):
                return status
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _refused_since(state: Path, n: int) -> bool:
    """True if every order after the first ``n`` was rejected because the run is halted."""
    with StateStore(state, create=False) as store:
        return all(o.status == "rejected" and o.reason == "halted" for o in store.orders()[n:])


def test_emergency_stop_flattens_within_a_bar_and_holds_until_reset(tmp_path):
    state = tmp_path / "state"
    data = frames(2)
    fast = ("--param", "fast=2", "--param", "slow=3")  # crosses often: soon in a position
    with local_exchange(data, clock="stepped") as ex:
        cmd = [sys.executable, "-m", "framework.cli",
               *paper_args("sma_cross", ex, 2, state, *fast, "--poll", "0.1", "--set", "cash_sharing=true")]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(state, lambda s: s["runner_pid"] == proc.pid, "the warm-up")
            second = _tradpal(*paper_args("sma_cross", ex, 2, state, *fast))
            assert second.returncode == 1 and f"pid {proc.pid}" in second.stderr and "--state" in second.stderr
            for _ in range(40):  # bar by bar until a position is open
                bars = _wait_for(state, lambda s: True, "status")["summary"]["bars"]
                ex.clock.step(1)
                status = _wait_for(state, lambda s, b=bars: s["summary"]["bars"] == b + 1, "a bar")
                if any(status["summary"]["positions"].values()):
                    break
            else:
                raise AssertionError("no position opened in 40 bars")
            stop = _tradpal("runner", "stop", "--state", str(state))
            assert stop.returncode == 0, stop.stderr
            assert json.loads(stop.stdout)["result"]["ok"] is True
            halted = _wait_for(state, lambda s: s["halted"], "the halt")
            assert halted["halt_reason"].startswith("emergency stop")
            bars, n_orders = halted["summary"]["bars"], halted["orders"]
            ex.clock.step(1)  # the exits fill at this bar's open
            flat = _wait_for(state, lambda s: s["summary"]["bars"] == bars + 1, "the exit bar")
            assert not any(flat["summary"]["positions"].values())
            open_before = sum(1 for q in status["summary"]["positions"].values() if q)
            with StateStore(state, create=False) as store:
                fills = [e.payload for e in store.events() if e.kind == "fill"]
            exits = [f for f in fills if f["bar"] == flat["summary"]["last_bar"]]
            assert len(exits) == open_before and all(f["reason"] == "emergency_stop" for f in exits)
            ex.clock.step(5)  # halted: bars go on, no order is placed
            after = _wait_for(state, lambda s: s["summary"]["bars"] == bars + 6, "five more bars")
            assert after["halted"] and not after["open_orders"]
            assert _refused_since(state, n_orders)  # the strategy's entries: rejected, "halted"
            proc.send_signal(signal.SIGTERM)  # a clean stop after the current step
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err[-2000:]
            assert "HALTED" in out
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        status = json.loads(_tradpal("runner", "status", "--state", str(state)).stdout)
        assert status["halted"] and status["runner_pid"] is None and status["summary"]["halted"]
        assert status["summary"]["fills"] == status["fills"]
        # restarted, still halted: no order over more bars, until the reset
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(state, lambda s: s["runner_pid"] == proc.pid, "the restart")
            bars = _wait_for(state, lambda s: True, "status")["summary"]["bars"]
            ex.clock.step(3)
            st = _wait_for(state, lambda s: s["summary"]["bars"] == bars + 3, "three bars")
            assert st["halted"] and _refused_since(state, n_orders)
            reset = _tradpal("runner", "reset", "--state", str(state))
            assert reset.returncode == 0 and json.loads(reset.stdout)["result"] == {"ok": True, "halted": False}
            assert not _wait_for(state, lambda s: True, "status")["halted"]
            bars = st["summary"]["bars"]
            ex.clock.step(20)  # trading again: the fast crossover places orders
            resumed = _wait_for(state, lambda s: s["summary"]["bars"] == bars + 20, "twenty bars")
            assert not resumed["halted"] and not _refused_since(state, st["orders"])  # orders again
            again = _tradpal("runner", "reset", "--state", str(state))
            assert again.returncode == 1 and "not halted" in json.loads(again.stdout)["result"]["error"]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)


def test_stop_posted_while_no_runner_runs_is_handled_at_the_next_start(tmp_path):
    from framework.exchange import create_exchange
    from live.feed import CandleFeed
    from live.runner import LiveRunner, PaperBroker

    strategy = STRATEGIES["sma_cross"](fast=2, slow=3)
    with local_exchange(frames(1)) as ex:
        def runner() -> LiveRunner:
            feed = CandleFeed(create_exchange("binance", url=ex.url), ["BTC/USDT"], "1h")
            return LiveRunner(strategy, PaperBroker(), feed, SimSettings(), StateStore(tmp_path),
                              warmup_bars=W, run_id="p1")

        first = runner()
        first.run(max_bars=5)
        first.close()
        with StateStore(tmp_path, create=False) as store:
            rid = store.request("emergency_stop")
        second = runner()
        second.start()  # handles the request before any bar
        try:
            assert second.stepper.halted and second.store.get_flag("halted") is True
            assert second.store.get_request(rid).result["ok"] is True
            second.run(max_bars=30)
            assert not second.stepper.positions.any()
            assert second.summary()["orders"] == len(second.store.orders())
        finally:
            second.close()


# --- the command line --------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "words"), [
    (["paper", "sma_cross", "--exchange", "binance", "--symbol", "BTCUSDT", "--timeframe", "1h", "--state", "S"],
     "--symbol 'BTCUSDT'"),
    (["paper", "sma_cross", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h", "--state", "S",
      "--max-bars", "-1"], "--max-bars"),
    (["paper", "sma_cross", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h", "--state", "S",
      "--warmup", "0"], "--warmup"),
    (["paper", "sma_cross", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1x", "--state", "S"],
     "--timeframe"),
    (["paper", "sma_cross", "--exchange", "nosuch", "--symbol", "BTC/USDT", "--timeframe", "1h", "--state", "S"],
     "--exchange"),
    (["paper", "sma_cross", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h", "--state", "S",
      "--fills-out", "f.txt"], "--fills-out"),
    (["paper", "sma_cross", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h", "--state", "S",
      "--run-id", "a b"], "--run-id"),
    (["paper", "sma_cross", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h"], "--state"),
    (["runner", "status", "--state", "no/such/dir"], "--state"),
    (["runner", "stop", "--state", "no/such/dir"], "--state"),
    (["backtest", "sma_cross", "--data", "BTC_USDT-1d", "--trade-from", "yesterday-ish"], "--trade-from"),
    (["backtest", "sma_cross", "--data", "BTC_USDT-1d", "--trade-from", "1990-01-01"], "--trade-from"),
    (["backtest", "sma_cross", "--data", "BTC_USDT-1d", "--fills-out", "f.json"], "--fills-out"),
])
def test_bad_options_exit_2_naming_the_option(args, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main(args)
    except SystemExit as e:  # argparse's own errors (a required option missing)
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert words in err, err
    assert not (tmp_path / "S").exists()  # nothing was created for a bad command


def test_a_restart_with_other_parameters_is_refused(tmp_path, capsys):
    with local_exchange(frames(1)) as ex:
        assert cli.main(paper_args("sma_cross", ex, 1, tmp_path, "--max-bars", "3")) == 0
        code = cli.main(paper_args("sma_cross", ex, 1, tmp_path, "--param", "fast=5", "--max-bars", "3"))
    assert code == 2
    assert "another run" in capsys.readouterr().err


def test_clear_emergency_stop_only_when_halted_by_it_and_flat():
    """``BarStepper.clear_emergency_stop`` (what ``runner reset`` does): refused while a
    position is open or when no emergency stop was raised; afterwards orders are placed again."""
    strategy = STRATEGIES["sma_cross"](fast=2, slow=3)
    bars = frames(1)["BTC/USDT"]
    stepper = BarStepper(strategy, SimSettings().vector(8760.0))
    with pytest.raises(ValueError, match="not halted by an emergency stop"):
        stepper.clear_emergency_stop()
    rows = iter(bars.itertuples())

    def step() -> None:
        r = next(rows)
        stepper.step(r.Index.value // 86_400_000_000_000, r.open, r.high, r.low, r.close, np.nan)

    while not stepper.positions.any():
        step()
    stepper.emergency_stop()
    with pytest.raises(ValueError, match="positions are still open"):
        stepper.clear_emergency_stop()
    step()  # the exit fills at this bar's open
    assert not stepper.positions.any() and stepper.halted
    n_orders = len(stepper.orders)
    stepper.clear_emergency_stop()
    assert not stepper.halted
    for _ in range(30):
        step()
    placed = stepper.orders[n_orders:]
    assert len(placed) > 0 and (placed["status"] != enums.STATUS_REJECTED).any()  # not all refused


class ScriptedFeed:
    """A feed that hands out a script of batches and events (the runner's side of the feed's
    contract, without an exchange): history is the first ``W`` bars of ``data``."""

    def __init__(self, data: dict[str, pd.DataFrame], items: list) -> None:
        self.data, self.symbols, self.timeframe = data, tuple(data), "1h"
        self.items, self.started = iter(items), None

    def history(self, symbol: str, limit: int | None = None, since_ms=None, until_ms=None) -> pd.DataFrame:
        return self.data[symbol].iloc[:W].assign(volume=np.nan)

    def start_from(self, since_ms: int) -> None:
        self.started = since_ms

    def next_bars(self, timeout_s=None):
        return next(self.items, None)

    def close(self) -> None:
        pass


def test_a_batch_without_a_symbol_is_skipped_as_an_inner_aligned_backtest_skips_it(tmp_path):
    """A batch with a symbol missing is not stepped (logged and recorded), a stale notice is
    recorded: the run equals the backtest of the data without that bar time."""
    from live.feed import BarBatch, FeedEvent
    from live.runner import LiveRunner, PaperBroker

    data = frames(2)
    index = data["BTC/USDT"].index
    gap = W + 40
    items: list = []
    for i in range(W, W + L):
        rows = np.array([[*data[s].iloc[i][["open", "high", "low", "close"]], np.nan] for s in SYMBOLS])
        missing = frozenset()
        if i == gap:
            items.append(FeedEvent("stale", 0, ("ETH/USDT",), "ETH/USDT stale"))
            rows[1] = np.nan
            missing = frozenset({"ETH/USDT"})
        items.append(BarBatch(int(index[i].value // 1_000_000), 3_600_000, SYMBOLS, rows, missing))
    strategy = STRATEGIES["donchian_breakout"]()
    feed = ScriptedFeed(data, items)
    runner = LiveRunner(strategy, PaperBroker(), feed, SimSettings.build(strategy.sim_defaults),
                        StateStore(tmp_path), warmup_bars=W, run_id="p1")
    try:
        assert runner.run(max_bars=L - 1) == L - 1
        records = runner.stepper.fills.copy()
        kinds = [e.kind for e in runner.store.events()]
    finally:
        runner.close()
    assert feed.started == int(index[W].value // 1_000_000)
    assert "feed_stale" in kinds and kinds.count("bar_skipped") == 1
    inner = {s: f.iloc[:W + L].drop(index[gap]) for s, f in data.items()}
    result = Backtest(strategy, inner, calendar="sessions", trade_from=index[W], run_id="p1",
                      cash_sharing=True).run()
    assert len(records) > 0 and np.array_equal(records, result.fill_records)
