"""`tradpal live` and its safeguards, offline against the local exchange: refusal without
`--live`, the `--yes` rule, the typed confirmation, credentials (file or environment, never
shown anywhere), the live defaults (order cap, daily loss), the order gate of
`--confirm-orders` and `tradpal runner approve|reject`."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from framework import cli
from framework.exchange import Credentials, RedactingFilter, load_credentials
from framework.local_exchange import LocalExchange
from live.broker import OrderRequest
from live.ccxt_broker import CcxtBroker
from live.confirm import OrderGate
from live.runner import PaperBroker
from live.store import ControlRequest, StateStore
from tests.exchange_fixtures import API_KEY, BTC, SECRET, START, client, exchange  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
PLANTED_KEY, PLANTED_SECRET = "PLANTEDkey7c1e9a0b55d2", "PLANTEDsecret4f8e2d6a9b13"


def live_args(ex, state: Path, *extra: str, command: str = "live") -> list[str]:
    return [command, "sma_cross", "--exchange", "binance", "--exchange-url", ex.url, "--symbol", "BTC/USDT",
            "--timeframe", "1m", "--state", str(state), "--warmup", "50", *extra]


def parse(argv: list[str]):
    return cli.build_parser("paper").parse_args(argv)


@pytest.fixture
def env_keys(monkeypatch):
    """The local exchange's test keys in the generic variables, nothing else set."""
    for var in list(os.environ):
        if var.startswith("TRADPAL_") and ("KEY" in var or "SECRET" in var or "CREDENTIALS" in var
                                           or var == "TRADPAL_LIVE_CONFIRM"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("TRADPAL_API_KEY", API_KEY)
    monkeypatch.setenv("TRADPAL_API_SECRET", SECRET)


def private_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


# --- refusals before anything is sent --------------------------------------------------------

def test_live_without_the_live_flag_refuses_and_sends_nothing(exchange, env_keys, tmp_path, capsys):
    state = tmp_path / "state"
    assert cli.main(live_args(exchange, state)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "add --live" in err and "nothing was sent" in err
    assert exchange.requests() == [] and not state.exists()


def test_yes_needs_the_environment_variable(exchange, env_keys, tmp_path, capsys, monkeypatch):
    state = tmp_path / "state"
    for value in (None, "0", "yes"):
        if value is None:
            monkeypatch.delenv("TRADPAL_LIVE_CONFIRM", raising=False)
        else:
            monkeypatch.setenv("TRADPAL_LIVE_CONFIRM", value)
        assert cli.main(live_args(exchange, state, "--live", "--yes")) == 2
        err = capsys.readouterr().err.strip()
        assert "--yes" in err and "TRADPAL_LIVE_CONFIRM=1" in err and err.count("\n") == 0
    assert exchange.requests() == [] and not state.exists()


def test_live_without_credentials_refuses_before_any_request(exchange, env_keys, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TRADPAL_API_KEY")
    assert cli.main(live_args(exchange, tmp_path / "s", "--live")) == 2
    err = capsys.readouterr().err
    assert "no API credentials for binance" in err and "--credentials-file" in err
    assert exchange.requests() == []


# --- the typed confirmation ------------------------------------------------------------------

def test_typed_confirmation_accepted_builds_a_capped_live_run(exchange, env_keys, tmp_path):
    shown = io.StringIO()
    run = cli.build_run(parse(live_args(exchange, tmp_path / "s", "--live")),
                        stdin=io.StringIO("LIVE binance\n"), out=shown)
    text = shown.getvalue()
    assert run.mode == "live" and isinstance(run.broker, CcxtBroker) and run.gate is None
    # the live defaults: order cap 1000 at the broker, daily loss 5 % in the core's settings
    assert run.max_order_notional == run.broker.max_order_notional == 1000.0
    assert run.settings.daily_loss == 0.05
    assert "order cap  1,000.00 quote per order" in text and "daily loss 5.0%" in text
    # what will be traded, the account as the exchange reports it (a signed read), the phrase
    assert "SmaCross(fast=10, slow=30) on BTC/USDT 1m" in text and f"binance at {exchange.url}" in text
    assert "USDT 10000 free / 10000 total" in text and "environment TRADPAL_API_KEY" in text
    assert "Type 'LIVE binance'" in text
    assert [r.path for r in exchange.requests() if r.path.endswith("/account")] == ["/api/v3/account"]
    # sizing 100 % of 10,000 > the cap: the confirmation says entries will be rejected
    assert "WARNING" in text and "exceed the order cap" in text


@pytest.mark.parametrize("typed", ["LIVE\n", "live binance\n", "yes\n", ""])
def test_typed_confirmation_refused(exchange, env_keys, tmp_path, typed):
    with pytest.raises(ValueError, match="nothing was sent"):
        cli.build_run(parse(live_args(exchange, tmp_path / "s", "--live")), stdin=io.StringIO(typed),
                      out=io.StringIO())
    assert exchange.requests("/api/v3/order") == [] and not (tmp_path / "s").exists()


def test_typed_confirmation_on_the_command_line(exchange, tmp_path):
    """The real stdin of `tradpal live`: a wrong phrase cancels (exit 2), the summary was shown."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADPAL_")}
    env.update(PYTHONPATH=str(ROOT), TRADPAL_API_KEY=API_KEY, TRADPAL_API_SECRET=SECRET)
    out = subprocess.run([sys.executable, "-m", "framework.cli", *live_args(exchange, tmp_path / "s", "--live")],
                         input="LIVE kraken\n", capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 2
    assert "LIVE TRADING" in out.stderr and "Type 'LIVE binance'" in out.stderr
    assert "the confirmation typed is not 'LIVE binance': live run cancelled" in out.stderr
    assert exchange.requests("/api/v3/order") == [] and not (tmp_path / "s").exists()


def test_live_overrides_of_the_defaults(exchange, env_keys, tmp_path):
    def build(*extra):
        shown = io.StringIO()
        run = cli.build_run(parse(live_args(exchange, tmp_path / "s", "--live", *extra)),
                            stdin=io.StringIO("LIVE binance\n"), out=shown)
        return run, shown.getvalue()

    run, _ = build("--max-order-notional", "250", "--daily-loss", "0.02")
    assert (run.broker.max_order_notional, run.settings.daily_loss) == (250.0, 0.02)
    run, _ = build("--set", "daily_loss=0.03", "--set", "size=0.05")
    assert run.settings.daily_loss == 0.03
    run, text = build("--max-order-notional", "off", "--daily-loss", "off")
    assert run.broker.max_order_notional is None and run.settings.daily_loss is None
    assert "order cap  OFF" in text and "daily loss OFF" in text
    with pytest.raises(ValueError, match="--daily-loss and --set daily_loss both given"):
        build("--daily-loss", "0.02", "--set", "daily_loss=0.03")
    with pytest.raises(ValueError, match="--max-order-notional takes a number > 0"):
        build("--max-order-notional", "-5")


def test_paper_keeps_the_backtest_defaults(exchange, tmp_path):
    run = cli.build_run(parse(live_args(exchange, tmp_path / "s", command="paper")))
    assert run.mode == "paper" and isinstance(run.broker, PaperBroker)
    assert run.settings.daily_loss is None and run.max_order_notional is None and run.credentials == {}
    assert exchange.requests() == []  # nothing is read before the runner starts


def test_a_paper_state_directory_is_never_resumed_live(tmp_path):
    with StateStore(tmp_path / "s") as store:
        store.set_flag("run", {"run_id": "paper"})  # a paper run from before modes were stored
        cli._check_state_mode(store, "paper")
        with pytest.raises(ValueError, match="holds a paper run; a live run needs its own state directory"):
            cli._check_state_mode(store, "live")


# --- credentials -----------------------------------------------------------------------------

def test_credentials_file_inside_a_repository_or_readable_by_others_is_refused(tmp_path, env_keys):
    with pytest.raises(ValueError, match="inside the repository"):  # checked before it is opened
        load_credentials("binance", str(ROOT / "data" / "creds.json"))
    (tmp_path / "project" / ".git").mkdir(parents=True)  # any git work tree
    inside = private_file(tmp_path / "project" / "conf" / "creds.json", '{"apiKey": "k", "secret": "s"}')
    with pytest.raises(ValueError, match="--credentials-file .* inside the repository or git work tree"):
        load_credentials("binance", str(inside))
    shared = private_file(tmp_path / "home" / "creds.json", '{"apiKey": "k", "secret": "s"}')
    shared.chmod(0o644)
    with pytest.raises(ValueError, match="mode 0644.*chmod 600"):
        load_credentials("binance", str(shared))
    shared.chmod(0o600)
    assert load_credentials("binance", str(shared)) == {"apiKey": "k", "secret": "s"}


def test_credentials_file_inside_the_repository_refused_on_the_command_line(exchange, env_keys, tmp_path, capsys):
    code = cli.main(live_args(exchange, tmp_path / "s", "--live", "--credentials-file", str(ROOT / "creds.txt")))
    assert code == 2 and "inside the repository" in capsys.readouterr().err
    assert exchange.requests() == []


def test_credentials_file_forms_and_the_environment_order(tmp_path, env_keys, monkeypatch):
    kv = private_file(tmp_path / "c" / "creds.env", "# keys\napi_key = kk\napi_secret='ss'\n")
    assert load_credentials("binance", str(kv)) == {"apiKey": "kk", "secret": "ss"}
    nested = private_file(tmp_path / "c" / "all.json", '{"binance": {"apiKey": "bk", "secret": "bs"}}')
    assert load_credentials("binance", str(nested)) == {"apiKey": "bk", "secret": "bs"}
    bad = private_file(tmp_path / "c" / "bad.env", "api_key=kk\nPLANTED-not-a-pair\n")
    with pytest.raises(ValueError, match="line 2 is not key=value") as info:
        load_credentials("binance", str(bad))
    assert "PLANTED" not in str(info.value)
    # the environment: exchange-specific variables first, then the generic ones
    generic = load_credentials("binance")
    assert generic == {"apiKey": API_KEY, "secret": SECRET} and "TRADPAL_API_KEY" in generic.source
    monkeypatch.setenv("TRADPAL_BINANCE_API_KEY", "bk2")
    monkeypatch.setenv("TRADPAL_BINANCE_API_SECRET", "bs2")
    assert load_credentials("binance") == {"apiKey": "bk2", "secret": "bs2"}
    assert load_credentials("kraken") == {"apiKey": API_KEY, "secret": SECRET}


def test_secrets_are_masked_in_log_records_and_errors():
    creds = Credentials(apiKey=PLANTED_KEY, secret=PLANTED_SECRET)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(creds))
    log = logging.getLogger("tradpal.test.redact")
    log.addHandler(handler)
    try:
        log.warning("signed %s with %s", PLANTED_KEY, PLANTED_SECRET)
    finally:
        log.removeHandler(handler)
    assert stream.getvalue() == "signed *** with ***\n"
    assert creds.redact(f"GET /account?key={PLANTED_KEY}") == "GET /account?key=***"


@pytest.mark.parametrize("source", ["environment", "file"])
def test_planted_credentials_appear_in_no_output_log_or_file(tmp_path, source):
    """A whole `tradpal live --live --yes` run with planted keys: the exchange accepts them (the
    account's balance is shown), yet no output, log line, state file, fills or summary holds them."""
    ex = LocalExchange({"BTC/USDT": BTC}, start=START + (BTC.index[1] - BTC.index[0]) * 200,
                       clock="fast", api_keys={PLANTED_KEY: PLANTED_SECRET}).start()
    try:
        run_dir = tmp_path / "run"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRADPAL_")}
        env.update(PYTHONPATH=str(ROOT), TRADPAL_LIVE_CONFIRM="1")
        args = live_args(ex, run_dir / "state", "--live", "--yes", "--max-bars", "5",
                         "--fills-out", str(run_dir / "fills.csv"), "--summary-out", str(run_dir / "summary.json"),
                         "--max-order-notional", "500", "--set", "size=0.02")
        if source == "file":  # outside the searched folder, private
            creds = private_file(tmp_path / "secret" / "creds.json",
                                 json.dumps({"apiKey": PLANTED_KEY, "secret": PLANTED_SECRET}))
            args += ["--credentials-file", str(creds)]
        else:
            env.update(TRADPAL_API_KEY=PLANTED_KEY, TRADPAL_API_SECRET=PLANTED_SECRET)
        out = subprocess.run([sys.executable, "-m", "framework.cli", *args], capture_output=True, text=True,
                             env=env, cwd=tmp_path, timeout=300)
        account = [r for r in ex.requests() if r.path == "/api/v3/account"]
    finally:
        ex.stop()
    assert account and account[0].status == 200  # the planted keys signed the balance read
    assert "USDT 10000 free" in out.stderr and "LIVE TRADING" in out.stderr
    assert out.returncode == 0, out.stderr  # the runner traded on the exchange: files written
    assert (run_dir / "summary.json").exists() and (run_dir / "fills.csv").exists()
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert files
    for planted in (PLANTED_KEY, PLANTED_SECRET):
        assert planted not in out.stdout and planted not in out.stderr
        for path in files:
            assert planted.encode() not in path.read_bytes(), path


def test_refused_credentials_are_reported_without_their_values(tmp_path):
    ex = LocalExchange({"BTC/USDT": BTC}, api_keys={API_KEY: SECRET}).start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRADPAL_")}
        env.update(PYTHONPATH=str(ROOT), TRADPAL_LIVE_CONFIRM="1", TRADPAL_API_KEY=PLANTED_KEY,
                   TRADPAL_API_SECRET=PLANTED_SECRET)
        out = subprocess.run([sys.executable, "-m", "framework.cli",
                              *live_args(ex, tmp_path / "s", "--live", "--yes")],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    finally:
        ex.stop()
    assert out.returncode == 2
    assert "binance refused the credentials from environment TRADPAL_API_KEY" in out.stderr
    assert "AuthenticationError" in out.stderr and "nothing was sent" in out.stderr
    assert PLANTED_KEY not in out.stderr + out.stdout and PLANTED_SECRET not in out.stderr + out.stdout


def test_an_unreachable_exchange_stops_the_live_start_with_exit_1(env_keys, tmp_path, capsys):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    args = live_args(type("Ex", (), {"url": url}), tmp_path / "s", "--live")
    assert cli.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tradpal: error: reading the account's balances failed (BrokerError")
    assert err.endswith("nothing was sent") and err.count("\n") == 0 and SECRET not in err
    assert not (tmp_path / "s").exists()


# --- the order cap at the broker -------------------------------------------------------------

def test_the_order_cap_stops_an_order_before_the_exchange_and_lets_exits_through(exchange):
    broker = CcxtBroker(client(exchange), max_order_notional=1_000.0)
    price = float(BTC["close"].iloc[-1])  # the clock stands at the end of the data
    over = broker.submit(OrderRequest("cap-1", "BTC/USDT", "buy", "market", 0.03, ref_price=price))
    assert over.status == "rejected" and "above max_order_notional 1000" in over.reason
    by_cost = broker.submit(OrderRequest("cap-2", "BTC/USDT", "buy", "market", None, cost=1_000.01))
    assert by_cost.status == "rejected" and "max_order_notional" in by_cost.reason
    unknown = broker.submit(OrderRequest("cap-3", "BTC/USDT", "buy", "market", 0.001))
    assert unknown.status == "rejected" and "notional of this market order is unknown" in unknown.reason
    assert exchange.requests("/api/v3/order", "POST") == []  # none of them was sent
    under = broker.submit(OrderRequest("cap-4", "BTC/USDT", "buy", "market", 0.02, ref_price=price))
    assert 0.02 * price < 1_000 and under.status == "filled"
    # an exit is never capped: closing a position must always be possible
    exit_ = broker.submit(OrderRequest("cap-5", "BTC/USDT", "sell", "limit", 0.0199, price=price * 9,
                                       reduce_only=True))
    assert 0.0199 * price * 9 > 1_000 and exit_.status == "submitted"
    assert [r.params["newClientOrderId"] for r in exchange.requests("/api/v3/order", "POST")] == ["cap-4", "cap-5"]
    with pytest.raises(ValueError, match="max_order_notional must be a finite number > 0"):
        CcxtBroker(client(exchange), max_order_notional=0)


# --- the order gate (--confirm-orders) -------------------------------------------------------

T0 = 1_700_000_000.0  # epoch seconds: the fake clock of the gate tests


def order(cid: str = "o-1") -> OrderRequest:
    return OrderRequest(cid, "BTC/USDT", "buy", "market", 0.01, ref_price=40_000.0)


def request(kind: str, cid: str, at_s: float, rid: int = 1, **args) -> ControlRequest:
    return ControlRequest(rid, kind, {"client_order_id": cid, "by": "tester", **args}, int(at_s * 1000), None, None)


def test_gate_approves_on_request():
    gate = OrderGate(60)
    assert gate.decide(order(), T0, T0) == "pending" and gate.reason("o-1") is None
    assert gate.decide(order(), T0, T0 + 30) == "pending"
    assert gate.on_request(request("approve_order", "o-1", T0 + 31)) == {
        "ok": True, "client_order_id": "o-1", "decision": "approved"}
    assert gate.decide(order(), T0, T0 + 31.5) == "approved"
    assert gate.decide(order(), T0, T0 + 500) == "approved"  # a final answer is repeated
    assert gate.reason("o-1") == "approved by tester"
    again = gate.on_request(request("reject_order", "o-1", T0 + 32, rid=2))
    assert again["ok"] is False and "already approved" in again["error"]


def test_gate_rejects_on_request_with_the_reason():
    gate = OrderGate(60)
    assert gate.decide(order(), T0, T0 + 1) == "pending"
    gate.on_request(request("reject_order", "o-1", T0 + 2, reason="too big"))
    assert gate.decide(order(), T0, T0 + 3) == "rejected"
    assert gate.reason("o-1") == "rejected by tester: too big"


def test_gate_expires_unapproved_orders_and_late_approvals():
    gate = OrderGate(60)
    assert gate.decide(order(), T0, T0 + 59.999) == "pending"
    assert gate.decide(order(), T0, T0 + 60) == "expired"
    assert "not approved within 60 s" in gate.reason("o-1")
    late = gate.on_request(request("approve_order", "o-1", T0 + 61))
    assert late["ok"] is False and "already expired" in late["error"]
    assert gate.decide(order(), T0, T0 + 61) == "expired"
    # an approval posted after the deadline but handled before the order is looked at again
    assert gate.on_request(request("approve_order", "o-2", T0 + 60.5))["ok"] is True
    assert gate.decide(order("o-2"), T0, T0 + 70) == "expired"


def test_gate_applies_a_decision_that_came_before_the_order_was_seen():
    """A restarted runner handles the requests posted while it was down before it looks at the
    waiting orders again; the creation time it passes is the stored one."""
    gate = OrderGate(60)
    assert gate.on_request(request("approve_order", "o-1", T0 + 20))["ok"] is True
    assert gate.decide(order(), T0, T0 + 45) == "approved"
    assert gate.decide(order("o-2"), T0, T0 + 45) == "pending"  # another order is not approved


def test_gate_leaves_other_requests_to_the_runner():
    gate = OrderGate(60)
    assert gate.on_request(ControlRequest(1, "emergency_stop", {}, int(T0 * 1000), None, None)) is None
    assert gate.on_request(ControlRequest(2, "approve_order", {}, int(T0 * 1000), None, None)) == {
        "ok": False, "error": "approve_order needs the argument client_order_id"}
    with pytest.raises(ValueError, match="--approval-timeout"):
        OrderGate(0)


def test_gate_prompt_asks_until_a_clear_answer_or_the_deadline():
    asked: list[tuple[str, float]] = []
    answers = iter(["maybe\n", "y\n"])

    def ask(question: str, timeout_s: float):
        asked.append((question, timeout_s))
        return next(answers)

    gate = OrderGate(60, ask=ask)
    assert gate.decide(order(), T0, T0 + 10) == "pending"
    assert gate.decide(order(), T0, T0 + 15) == "approved"
    assert [t for _, t in asked] == [50.0, 45.0]  # each wait ends at the deadline
    assert "approve buy 0.01 BTC/USDT market (~400.00 quote), o-1? [y/n] (50 s left)" in asked[0][0]
    assert gate.reason("o-1") == "approved at the prompt"

    silent: list[float] = []
    gate = OrderGate(60, ask=lambda q, t: silent.append(t))  # nobody answers: None
    assert gate.decide(order("o-2"), T0, T0 + 1) == "pending"
    assert gate.decide(order("o-2"), T0, T0 + 60) == "expired"
    assert silent == [59.0]  # not asked again once the deadline has passed
    gate = OrderGate(60, ask=lambda q, t: "n")
    assert gate.decide(order("o-3"), T0, T0) == "rejected" and gate.reason("o-3") == "rejected at the prompt"


def test_confirm_orders_prompt_needs_a_terminal(exchange, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code = cli.main(live_args(exchange, tmp_path / "s", "--confirm-orders=prompt", command="paper"))
    assert code == 2 and "--confirm-orders=prompt needs a terminal" in capsys.readouterr().err
    run = cli.build_run(parse(live_args(exchange, tmp_path / "s", "--confirm-orders", "--approval-timeout", "5",
                                        command="paper")))
    assert isinstance(run.gate, OrderGate) and run.gate.ask is None and run.gate.timeout_s == 5.0


# --- tradpal runner approve | reject ---------------------------------------------------------

def test_runner_approve_and_reject_post_requests_the_gate_takes(tmp_path, capsys):
    state = tmp_path / "state"
    with StateStore(state) as store:
        for cid in ("o-1", "o-2", "o-3"):
            store.record_order(order(cid))
        store.record_order(order("done"), status="filled")
    assert cli.main(["runner", "approve", "--state", str(state), "o-1"]) == 0
    assert "posted approve_order request 1; no runner is running" in capsys.readouterr().out
    assert cli.main(["runner", "reject", "--state", str(state), "o-2", "--reason", "not now"]) == 0
    for cid, words in (("nope", "no such order"), ("done", "is filled: only an order waiting")):
        assert cli.main(["runner", "approve", "--state", str(state), cid]) == 2
        err = capsys.readouterr().err
        assert f"CLIENT_ORDER_ID {cid!r}" in err and words in err
    gate = OrderGate(60)
    with StateStore(state) as store:
        reqs = store.pending_requests()
        assert [(r.kind, r.args) for r in reqs] == [
            ("approve_order", {"by": "tradpal runner approve", "client_order_id": "o-1"}),
            ("reject_order", {"by": "tradpal runner reject", "client_order_id": "o-2", "reason": "not now"})]
        for r in reqs:  # what the runner's handle_requests does with them
            store.mark_handled(r.id, gate.on_request(r))
        assert [store.get_request(r.id).result["ok"] for r in reqs] == [True, True]
        created = reqs[0].created_ms / 1000 - 1
    assert gate.decide(order("o-1"), created, created + 2) == "approved"
    assert gate.decide(order("o-2"), created, created + 2) == "rejected"
    assert gate.reason("o-2") == "rejected by tradpal runner reject: not now"
    assert gate.decide(order("o-3"), created, created + 2) == "pending"
