"""The services around the paper runner (live/service.py): pause / resume, the event bus (in
process and Redis with its outbox), Prometheus metrics against the runner's own numbers, and
the control API end to end on a running ``tradpal paper``."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from framework import cli
from framework.exchange import create_exchange
from framework.settings import SimSettings
from live.auth import issue_token
from live.bus import InProcessBus, stream_key
from live.events import RunnerEvents, from_dict, parse_entry
from live.feed import CandleFeed
from live.redis_local import LocalRedis, free_port
from live.runner import LiveRunner, PaperBroker
from live.service import RunnerServices, ServiceOptions
from live.store import RunnerLockedError, StateStore
from strategies import STRATEGIES
from tests.test_live_runner import ROOT, SYMBOLS, W, frames, local_exchange, paper_args

SERVICE_KINDS = {"session_started", "session_stopped", "heartbeat", "bar", "performance", "position_opened",
                 "position_changed", "position_closed"}


def make_runner(ex, state, k: int = 1) -> LiveRunner:
    strategy = STRATEGIES["sma_cross"](fast=2, slow=3)  # crosses often: orders on most bars
    settings = SimSettings.build(strategy.sim_defaults, cash_sharing=k > 1)
    feed = CandleFeed(create_exchange("binance", url=ex.url), list(SYMBOLS[:k]), "1h")
    return LiveRunner(strategy, PaperBroker(), feed, settings, StateStore(state), warmup_bars=W,
                      run_id="p1", poll_s=0.05)


def step_until(runner: LiveRunner, done, limit: int = 60) -> None:
    for _ in range(limit):
        runner.run(max_bars=runner.live_bars + 1)
        if done():
            return
    raise AssertionError("condition not reached")


def samples(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(url, timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_pause_blocks_entries_manages_exits_survives_restarts_and_metrics_agree(tmp_path):
    state = tmp_path / "state"
    seen: list = []
    with local_exchange(frames(1, rows=W + 200)) as ex:
        runner = make_runner(ex, state)
        bus = InProcessBus()
        bus.subscribe(seen.append)
        services = RunnerServices(runner, ServiceOptions(metrics_port=0), bus=bus).start()
        url = f"http://127.0.0.1:{services.metrics_server.port}/metrics"
        try:
            # a second runner on the same state directory is refused before it publishes anything
            second_seen: list = []
            second_bus = InProcessBus()
            second_bus.subscribe(second_seen.append)
            second = make_runner(ex, state)
            with pytest.raises(RunnerLockedError):
                RunnerServices(second, bus=second_bus).start()
            second.close()
            assert second_seen == [] and second.on_commit == []
            step_until(runner, lambda: runner.summary()["positions"][SYMBOLS[0]] != 0.0)
            n_before = len(runner.store.orders())
            runner.store.request("pause", by="test")
            runner.handle_requests()
            assert runner.summary()["paused"] and runner.store.status()["paused"]
            assert samples(url)[("tradpal_paused", ())] == 1
            step_until(runner, lambda: runner.summary()["positions"][SYMBOLS[0]] == 0.0)  # the exit is managed
            runner.run(max_bars=runner.live_bars + 10)
            paused_orders = runner.store.orders()[n_before:]
            blocked = [o for o in paused_orders if o.status == "rejected"]
            assert blocked and all(o.reason == "entries_blocked" for o in blocked)
            # the long position's exit (a sell) filled while paused; entries (buys) were refused
            assert [o.status for o in paused_orders if o.request.side == "sell"][:1] == ["filled"]
            assert blocked == [o for o in paused_orders if o.request.side == "buy"]
            assert runner.summary()["positions"][SYMBOLS[0]] == 0.0  # no entry filled while paused

            # metrics against the runner's own numbers, and the store's
            summary, m = runner.summary(), samples(url)
            assert m[("tradpal_equity", ())] == summary["equity"] and m[("tradpal_cash", ())] == summary["cash"]
            assert m[("tradpal_position", (("symbol", SYMBOLS[0]),))] == summary["positions"][SYMBOLS[0]]
            assert m[("tradpal_bars_total", ())] == summary["live_bars"]
            assert m[("tradpal_bar_to_order_seconds_count", ())] == summary["live_bars"]
            assert 0 < m[("tradpal_bar_to_order_seconds_sum", ())] < summary["live_bars"] * 1.0
            assert m[("tradpal_fills_total", (("symbol", SYMBOLS[0]),))] == summary["fills"] > 0
            by_status: dict[str, int] = {}
            for o in runner.store.orders():
                by_status[o.status] = by_status.get(o.status, 0) + 1
            assert {k[1][0][1]: v for k, v in m.items() if k[0] == "tradpal_orders" and v} == by_status
            assert m[("tradpal_order_rejections_total", (("reason", "entries_blocked"),))] == len(blocked)
            assert m[("tradpal_events_published_total", ())] == services.bus.published == len(seen)
            assert m[("tradpal_halted", ())] == 0 and m[("tradpal_outbox_depth", ())] == 0
        finally:
            services.stop("test")
            runner.close()

        # restarted: still paused (flag and the core's block in the snapshot), until resumed
        runner = make_runner(ex, state)
        bus = InProcessBus()
        bus.subscribe(seen.append)
        services = RunnerServices(runner, bus=bus).start()
        try:
            assert runner.paused and runner.stepper.entries_blocked
            n_before = len(runner.store.orders())
            runner.run(max_bars=runner.live_bars + 10)
            after_restart = runner.store.orders()[n_before:]
            assert after_restart and all(o.status == "rejected" and o.reason == "entries_blocked"
                                         for o in after_restart)
            assert runner.pause(False) == {"ok": True, "paused": False}
            assert not runner.stepper.entries_blocked and not runner.store.status()["paused"]
            step_until(runner, lambda: runner.summary()["positions"][SYMBOLS[0]] != 0.0)  # entries again
        finally:
            services.stop("test")
            runner.close()
    kinds = [e.kind for e in seen]
    assert kinds.count("paused") == 1 and kinds.count("resumed") == 1
    assert kinds.count("session_started") == kinds.count("session_stopped") == 2
    assert "position_opened" in kinds and "position_closed" in kinds and "performance" in kinds
    assert len({e.id for e in seen}) == len(seen)  # ids are unique: a consumer may dedupe on them
    perf = [e for e in seen if e.kind == "performance"][-1]
    assert perf.equity == runner.summary()["equity"] and perf.drawdown <= 0.0
    assert perf.stats["bars"] > 1 and perf.stats["max_drawdown"] <= 0.0


def test_redis_down_and_restarted_mid_run_loses_reorders_and_doubles_nothing(tmp_path):
    """The runner trades on while Redis is killed (-9); the events wait in the outbox of its
    state file and reach the stream, in commit order, once Redis is back."""
    state = tmp_path / "state"
    with LocalRedis(tmp_path / "redis") as server, local_exchange(frames(2, rows=W + 200)) as ex:
        runner = make_runner(ex, state, k=2)
        services = RunnerServices(runner, ServiceOptions(redis_url=server.url, heartbeat_s=0.05)).start()
        try:
            runner.run(max_bars=30)
            assert services.bus.outbox_depth == 0 and services.bus.published > 0
            server.kill9()
            runner.run(max_bars=60)  # trading goes on
            assert runner.live_bars == 60 and services.bus.outbox_depth > 0
            server.start()
            runner.run(max_bars=90)
        finally:
            services.stop("test")
            summary = runner.summary()
            committed = runner.store.events()
            runner.close()
        client = server.client()
        entries = client.xrange(stream_key("p1"))
        client.close()
    events = [from_dict(raw) for _, fields in entries for raw in parse_entry(fields["e"])]
    assert len({e.id for e in events}) == len(events)  # none twice
    assert events[0].kind == "session_started" and events[-1].kind == "session_stopped"
    # the runner's committed events, in commit order, all of them
    convert = RunnerEvents("p1")
    expected = [e.id for c in committed for e in convert(c.payload | {"kind": c.kind}, 0)]
    assert [e.id for e in events if e.kind not in SERVICE_KINDS] == expected
    bars = [e.bar_ms for e in events if e.kind == "bar" and e.symbol == SYMBOLS[0]]  # each bar, in order
    assert bars == sorted(set(bars)) and bars[-1] == pd.Timestamp(summary["last_bar"]).value // 1_000_000
    assert all(b - a == 3_600_000 for a, b in zip(bars, bars[1:]))
    # every order a signal created comes with the strategy's signal at that close, the same way
    signals = {(e.symbol, e.bar_ms): e.action for e in events if e.kind == "signal"}
    created = [e for e in events if e.kind == "order_created" and e.reason == "signal"]
    assert created and all((e.symbol, e.bar_ms) in signals for e in created)
    assert all(signals[e.symbol, e.bar_ms] in (("long", "exit") if e.side == "buy" else ("short", "exit"))
               for e in created)
    assert sum(e.kind == "fill" for e in events) == summary["fills"] > 0
    assert sum(e.kind == "heartbeat" for e in events) > 0
    assert sum(e.kind == "performance" for e in events) == 90


def test_api_port_without_a_strong_secret_refuses_to_start(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TRADPAL_API_SECRET_FILE", raising=False)
    args = ["paper", "sma_cross", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h",
            "--state", str(tmp_path / "s"), "--api-port", "0"]
    for weak, words in (("weak-secret-kq9", "too short"), ("ab" * 20, "too weak"), (None, "no API secret")):
        if weak is None:
            monkeypatch.delenv("TRADPAL_API_SECRET")
        else:
            monkeypatch.setenv("TRADPAL_API_SECRET", weak)
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert "--api-port" in err and words in err and (weak is None or weak not in err)
        assert not (tmp_path / "s").exists()  # refused before anything started


def _wait(get, check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = get()
            if check(value):
                return value
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_control_api_and_metrics_of_a_running_paper_runner(tmp_path):
    """``tradpal paper --api-port --metrics-port`` on the local exchange: the read endpoints show
    the run; pause (trade token) makes the core refuse entries with entries_blocked, resume
    lifts it; the emergency stop flattens; reset needs admin; a read token cannot post."""
    secret = secrets.token_hex(32)
    tok = {r: issue_token(secret.encode(), r, subject=f"{r}-user") for r in ("read", "trade", "admin")}
    api_port, metrics_port = free_port(), free_port()
    state = tmp_path / "state"
    base = f"http://127.0.0.1:{api_port}"

    def get(path: str, role: str = "read"):
        return httpx.get(base + path, headers={"Authorization": f"Bearer {tok[role]}"}, timeout=5)

    def post(path: str, role: str):
        return httpx.post(base + path, headers={"Authorization": f"Bearer {tok[role]}"}, timeout=5)

    seen_text: list[str] = []  # every response body, for the planted-secret check at the end

    def status() -> dict:
        response = get("/status")
        seen_text.append(response.text)
        return response.json()

    with local_exchange(frames(1), clock="stepped") as ex:
        cmd = [sys.executable, "-m", "framework.cli",
               *paper_args("sma_cross", ex, 1, state, "--param", "fast=2", "--param", "slow=3", "--poll", "0.05",
                           "--api-port", str(api_port), "--metrics-port", str(metrics_port))]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TRADPAL_API_SECRET": secret}
        env.pop("TRADPAL_API_SECRET_FILE", None)
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait(status, lambda s: s["runner_pid"] == proc.pid and s["summary"], "the warm-up")

            def bars(n: int) -> dict:
                before = status()["summary"]["bars"]
                ex.clock.step(n)
                return _wait(status, lambda s: s["summary"]["bars"] == before + n, f"{n} bars")

            assert post("/pause", "read").status_code == 403  # a read token cannot steer
            assert post("/pause", "trade").status_code == 202
            assert _wait(status, lambda s: s["paused"], "the pause")["summary"]["paused"]
            n_orders = status()["orders"]
            bars(8)
            orders = get("/orders").json()[n_orders:]
            assert orders and all(o["status"] == "rejected" and o["reason"] == "entries_blocked" for o in orders)
            assert post("/resume", "trade").status_code == 202
            _wait(status, lambda s: not s["paused"], "the resume")
            for _ in range(30):  # trading again: until a position is open
                s = bars(1)
                if s["summary"]["positions"][SYMBOLS[0]]:
                    break
            else:
                raise AssertionError("no position opened in 30 bars after resume")

            summary = s["summary"]
            fills = get("/fills").json()
            assert len(fills) == summary["fills"] == s["fills"] > 0
            (position,) = get("/positions").json()
            assert position["qty"] == pytest.approx(summary["positions"][SYMBOLS[0]], rel=1e-12)
            assert get("/performance").json()["summary"] == summary
            seen_text += [get(p).text for p in ("/orders", "/fills", "/positions", "/performance")]
            seen_text.append(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text)
            m = samples(f"http://127.0.0.1:{metrics_port}/metrics")
            assert m[("tradpal_equity", ())] == summary["equity"]
            assert m[("tradpal_fills_total", (("symbol", SYMBOLS[0]),))] == summary["fills"]
            assert m[("tradpal_order_rejections_total", (("reason", "entries_blocked"),))] == len(orders)
            assert m[("tradpal_paused", ())] == 0

            assert post("/emergency-stop", "trade").status_code == 202
            _wait(status, lambda s: s["halted"], "the halt")
            flat = bars(1)  # the exit fills at this bar's open
            assert flat["summary"]["positions"][SYMBOLS[0]] == 0.0 and flat["summary"]["halted"]
            assert post("/reset", "trade").status_code == 403  # admin only
            assert post("/reset", "admin").status_code == 202
            _wait(status, lambda s: not s["halted"], "the reset")
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err[-2000:]
            seen_text += [out, err]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    # the secret and the tokens are nowhere: not in a response, the output, the metrics, nor any
    # file of the state directory (store, audit log)
    stored = b"".join(f.read_bytes() for f in state.rglob("*") if f.is_file())
    for planted in (secret, *tok.values()):
        assert not any(planted in text for text in seen_text) and planted.encode() not in stored
    audit = [json.loads(line) for line in (state / "audit.log").read_text().splitlines()]
    assert [(a["who"], a["action"]) for a in audit][:3] == [("read-user", "pause"), ("trade-user", "pause"),
                                                            ("trade-user", "resume")]
