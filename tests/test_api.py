"""The control API (live/api.py), its tokens (live/auth.py) and audit log (live/audit.py)."""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import subprocess
import time
import urllib.parse
from pathlib import Path

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framework.cli import main
from live.api import create_app, serve_api
from live.audit import AuditChainError, AuditLog, verify_log
from live.auth import (
    SECRET_ENV,
    SECRET_FILE_ENV,
    SecretError,
    issue_token,
    load_secret,
    parse_ttl,
)
from live.metrics import RunnerMetrics
from live.store import StateStore
from tests.api_fixtures import BAR_MS, BTC_POSITION, FILLS, SUMMARY, fill_store

SECRET = secrets.token_bytes(32)

# every route: method, path, the lowest role that may call it
ROUTES = [
    ("GET", "/status", "read"), ("GET", "/positions", "read"), ("GET", "/orders", "read"),
    ("GET", "/fills", "read"), ("GET", "/performance", "read"),
    ("POST", "/emergency-stop", "trade"), ("POST", "/pause", "trade"), ("POST", "/resume", "trade"),
    ("POST", "/orders/o2/approve", "trade"), ("POST", "/orders/o2/reject", "trade"),
    ("POST", "/reset", "admin"),
]
ROLE_RANK = {"read": 0, "trade": 1, "admin": 2}


@pytest.fixture
def state_dir(tmp_path):
    d = tmp_path / "state"
    fill_store(d)
    return d


@pytest.fixture
def client(state_dir, tmp_path):
    with TestClient(create_app(state_dir, secret=SECRET, audit_log_path=tmp_path / "audit.log")) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token(role: str, subject: str = "alice", **kw) -> str:
    return issue_token(SECRET, role, subject=subject, **kw)


def b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _claims(**over) -> dict:
    now = int(time.time())
    return {"sub": "mallory", "role": "admin", "typ": "access", "iat": now, "exp": now + 600, **over}


def _tampered() -> str:
    """A read token whose payload was changed to admin, signature kept."""
    head, _, sig = token("read").split(".")
    return f"{head}.{b64(_claims())}.{sig}"


# each yields the Authorization header (None: no header) of a request that must get a bare 401
AUTH_FAILURES = {
    "missing": lambda: None,
    "basic scheme": lambda: "Basic " + base64.b64encode(b"admin:admin").decode(),
    "empty bearer": lambda: "Bearer ",
    "garbage": lambda: "Bearer not.a.jwt",
    "bad signature": lambda: "Bearer " + issue_token(secrets.token_bytes(32), "admin"),
    "alg none": lambda: "Bearer " + f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(_claims())}.",
    "alg HS512": lambda: "Bearer " + jwt.encode(_claims(), SECRET, algorithm="HS512"),
    "expired": lambda: "Bearer " + token("admin", ttl_s=60, now=time.time() - 3600),
    "refresh token": lambda: "Bearer " + token("admin", token_type="refresh"),
    "unknown role": lambda: "Bearer " + jwt.encode(_claims(role="root"), SECRET, algorithm="HS256"),
    "no exp": lambda: "Bearer " + jwt.encode({k: v for k, v in _claims().items() if k != "exp"},
                                             SECRET, algorithm="HS256"),
    "no typ": lambda: "Bearer " + jwt.encode({k: v for k, v in _claims().items() if k != "typ"},
                                             SECRET, algorithm="HS256"),
    "tampered payload": _tampered,
}


# --- authentication and roles ---------------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(AUTH_FAILURES))
def test_every_auth_failure_is_a_bare_401_on_every_route(client, state_dir, mode):
    header = AUTH_FAILURES[mode]()
    for method, path, _ in ROUTES:
        r = client.request(method, path, headers={} if header is None else {"Authorization": header})
        assert (r.status_code, r.content) == (401, b""), (mode, method, path)
        assert r.headers["www-authenticate"] == "Bearer"
    with StateStore(state_dir, create=False) as store:
        assert store.pending_requests() == []  # nothing got through


@pytest.mark.parametrize("role", ["read", "trade", "admin"])
def test_roles_open_exactly_their_routes(client, role):
    for method, path, needed in ROUTES:
        r = client.request(method, path, headers=bearer(token(role)))
        if ROLE_RANK[role] >= ROLE_RANK[needed]:
            assert r.status_code == (200 if method == "GET" else 202), (role, path, r.content)
        else:
            assert (r.status_code, r.content) == (403, b""), (role, path)


# --- endpoints against the hand-filled store ------------------------------------------------


def test_read_endpoints_show_the_store(client):
    h = bearer(token("read"))
    status = client.get("/status", headers=h).json()
    assert status["halted"] is True and status["halt_reason"] == "daily loss"
    assert status["paused"] is False
    assert status["cursor"] == {"BTC/USDT": BAR_MS, "ETH/USDT": BAR_MS}
    assert (status["orders"], status["fills"]) == (3, 3)
    assert [o["client_order_id"] for o in status["open_orders"]] == ["o2"]
    assert status["summary"] == SUMMARY
    assert "state_file" not in status

    assert client.get("/performance", headers=h).json() == {"snapshot_bar_ms": BAR_MS, "summary": SUMMARY}

    orders = client.get("/orders", headers=h).json()
    assert [(o["client_order_id"], o["status"], o["filled_qty"]) for o in orders] == [
        ("o1", "filled", 0.5), ("o2", "partially_filled", 0.2), ("o3", "rejected", 0.0)]
    assert orders[2]["reason"] == "min_notional" and orders[1]["price"] == 31000.0
    assert [o["client_order_id"] for o in client.get("/orders?status=open", headers=h).json()] == ["o2"]
    assert [o["client_order_id"] for o in client.get("/orders?symbol=ETH/USDT", headers=h).json()] == ["o3"]
    assert client.get("/orders?status=bogus", headers=h).status_code == 422

    fills = client.get("/fills", headers=h).json()
    assert [(f["trade_id"], f["qty"], f["price"], f["fee"]) for f in fills] == [
        (f.trade_id, f.qty, f.price, f.fee) for f in FILLS]
    assert client.get("/fills?symbol=ETH/USDT", headers=h).json() == []

    (btc,) = client.get("/positions", headers=h).json()
    assert btc.keys() == BTC_POSITION.keys()
    for key, want in BTC_POSITION.items():
        assert btc[key] == (pytest.approx(want) if isinstance(want, float) else want), key


def test_control_posts_become_requests_the_store_shows(client, state_dir):
    r = client.post("/emergency-stop", headers=bearer(token("trade", "bob")), json={"reason": "drill"})
    assert r.status_code == 202
    stop_id = r.json()["request_id"]
    client.post("/pause", headers=bearer(token("trade", "bob")))
    client.post("/orders/o2/reject", headers=bearer(token("trade", "bob")), json={"reason": "too big"})
    client.post("/reset", headers=bearer(token("admin", "root-ops")))
    with StateStore(state_dir, create=False) as store:
        pending = [(q.kind, q.args) for q in store.pending_requests()]
        assert store.get_request(stop_id).kind == "emergency_stop"
    assert pending == [
        ("emergency_stop", {"by": "bob", "reason": "drill"}),
        ("pause", {"by": "bob"}),
        ("reject_order", {"by": "bob", "client_order_id": "o2", "reason": "too big"}),
        ("reset", {"by": "root-ops"}),
    ]
    status = client.get("/status", headers=bearer(token("read"))).json()
    assert [p["kind"] for p in status["pending_requests"]] == [k for k, _ in pending]


def test_approving_an_unknown_order_is_404_and_posts_nothing(client, state_dir):
    r = client.post("/orders/nope/approve", headers=bearer(token("trade")))
    assert r.status_code == 404
    with StateStore(state_dir, create=False) as store:
        assert store.pending_requests() == []


def test_a_directory_without_a_store_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no runner state"):
        create_app(tmp_path / "empty", secret=SECRET, audit_log_path=tmp_path / "a.log")


# --- secrets and tokens ---------------------------------------------------------------------


def test_secret_loading_and_refusals(tmp_path):
    good = secrets.token_urlsafe(48)
    assert load_secret({SECRET_ENV: good}) == good.encode()
    with pytest.raises(SecretError, match=SECRET_ENV):
        load_secret({})
    with pytest.raises(SecretError, match="too short"):
        load_secret({SECRET_ENV: secrets.token_urlsafe(16)})
    with pytest.raises(SecretError, match="too weak"):
        load_secret({SECRET_ENV: "ab" * 40})
    with pytest.raises(SecretError, match="only one"):
        load_secret({SECRET_ENV: good, SECRET_FILE_ENV: "/x"})
    f = tmp_path / "secret"
    f.write_text(good + "\n")
    f.chmod(0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        load_secret({SECRET_FILE_ENV: str(f)})
    f.chmod(0o600)
    assert load_secret({SECRET_FILE_ENV: str(f)}) == good.encode()
    with pytest.raises(SecretError, match="cannot read"):
        load_secret({SECRET_FILE_ENV: str(tmp_path / "missing")})


def test_the_api_refuses_to_start_without_a_strong_secret(state_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv(SECRET_FILE_ENV, raising=False)
    with pytest.raises(SecretError, match="no API secret"):
        create_app(state_dir, audit_log_path=tmp_path / "a.log")
    with pytest.raises(SecretError, match="too short"):
        create_app(state_dir, secret=b"short", audit_log_path=tmp_path / "a.log")
    monkeypatch.setenv(SECRET_ENV, "x" * 64)
    with pytest.raises(SecretError, match="too weak"):
        create_app(state_dir, audit_log_path=tmp_path / "a.log")


def test_cli_token_prints_a_token_of_the_role_and_ttl(monkeypatch, capsys):
    secret = secrets.token_urlsafe(48)
    monkeypatch.setenv(SECRET_ENV, secret)
    monkeypatch.delenv(SECRET_FILE_ENV, raising=False)
    assert main(["api", "token", "--role", "trade", "--ttl", "15m", "--subject", "ops"]) == 0
    printed = capsys.readouterr().out.strip()
    claims = jwt.decode(printed, secret.encode(), algorithms=["HS256"])
    assert (claims["role"], claims["sub"], claims["typ"]) == ("trade", "ops", "access")
    assert claims["exp"] - claims["iat"] == 900
    assert main(["api", "token", "--role", "read", "--ttl", "soon"]) == 2
    assert "--ttl" in capsys.readouterr().err
    monkeypatch.delenv(SECRET_ENV)
    assert main(["api", "token", "--role", "read"]) == 2
    assert SECRET_ENV in capsys.readouterr().err


def test_parse_ttl():
    assert [parse_ttl(t) for t in ("90", "90s", "15m", "1h", "7d")] == [90, 90, 900, 3600, 604800]
    for bad in ("0", "-1h", "1w", "", "h"):
        with pytest.raises(ValueError, match="--ttl"):
            parse_ttl(bad)


# --- audit log ------------------------------------------------------------------------------


def test_control_actions_are_audited_with_subject_and_result(client, tmp_path):
    trade, read = token("trade", "bob"), token("read", "eve")
    client.post("/pause", headers=bearer(trade), json={"reason": "lunch"})
    client.post("/reset", headers=bearer(trade))  # too low: audited as forbidden
    client.post("/orders/ghost/approve", headers=bearer(trade))
    client.post("/resume", headers=bearer(read))
    client.get("/status", headers=bearer(read))  # reads are not control actions
    log = tmp_path / "audit.log"
    assert verify_log(log) == 4
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["who"], r["action"], r["args"], r["result"]) for r in records] == [
        ("bob", "pause", {"reason": "lunch"}, {"request_id": 1}),
        ("bob", "reset", {}, "forbidden"),
        ("bob", "approve_order", {"client_order_id": "ghost"}, "unknown order"),
        ("eve", "resume", {}, "forbidden"),
    ]
    text = log.read_text()
    assert trade not in text and read not in text and trade.split(".")[2] not in text


def _log_with(tmp_path: Path, n: int) -> Path:
    log = AuditLog(tmp_path / "chain.log")
    for i in range(n):
        log.append(f"user{i}", "pause", {"i": i}, {"request_id": i})
    return log.path


def test_audit_verify_detects_a_removed_line(tmp_path, capsys):
    path = _log_with(tmp_path, 5)
    assert main(["audit", "verify", "--log", str(path)]) == 0
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2] + lines[3:]))  # remove line 3
    with pytest.raises(AuditChainError) as err:
        verify_log(path)
    assert err.value.line == 3
    assert main(["audit", "verify", "--log", str(path)]) == 1
    assert "line 3" in capsys.readouterr().err


@pytest.mark.parametrize("rehash", [False, True])
def test_audit_verify_detects_an_edited_line(tmp_path, rehash):
    path = _log_with(tmp_path, 5)
    lines = path.read_text().splitlines(keepends=True)
    record = json.loads(lines[1])
    record["result"] = {"request_id": 99}
    if rehash:  # a forger who recomputes the line's own hash breaks the link of the next one
        from live.audit import _digest
        record["hash"] = _digest(record)
    lines[1] = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    path.write_text("".join(lines))
    with pytest.raises(AuditChainError) as err:
        verify_log(path)
    assert err.value.line == (3 if rehash else 2)
    with pytest.raises(AuditChainError):  # an altered log is never extended
        AuditLog(path)


def test_an_audit_log_reopened_continues_the_chain(tmp_path):
    path = _log_with(tmp_path, 2)
    AuditLog(path).append("carol", "resume", {}, {"request_id": 3})
    assert verify_log(path) == 3


# --- planted secrets ------------------------------------------------------------------------


def test_planted_secrets_never_leave(tmp_path, monkeypatch):
    jwt_secret = "PLANTEDjwt" + secrets.token_urlsafe(40)
    planted = {
        SECRET_ENV: jwt_secret,
        "TRADPAL_EXCHANGE_API_KEY": "PLANTEDkey" + secrets.token_hex(16),
        "TRADPAL_EXCHANGE_API_SECRET": "PLANTEDsec" + secrets.token_hex(16),
        "TRADPAL_REDIS_URL": "redis://:PLANTEDredis" + secrets.token_hex(8) + "@127.0.0.1:6379/0",
    }
    for k, v in planted.items():
        monkeypatch.setenv(k, v)
    state = tmp_path / "state"
    fill_store(state)
    audit = tmp_path / "audit.log"
    app = create_app(state, audit_log_path=audit)  # the secret from the environment
    seen: list[bytes] = []
    with TestClient(app) as c:
        tokens = {r: issue_token(jwt_secret.encode(), r, subject=f"{r}-user") for r in ROLE_RANK}
        for method, path, _ in ROUTES + [("GET", "/openapi.json", "read"), ("GET", "/docs", "read"),
                                         ("POST", "/orders/ghost/approve", "trade"),
                                         ("GET", "/orders?status=bogus", "read")]:
            for header in [*(bearer(t) for t in tokens.values()), {}, {"Authorization": "Bearer x"}]:
                r = c.request(method, path, headers=header, json={"reason": "planted?"})
                seen.append(r.content + json.dumps(dict(r.headers)).encode())
    assert len(seen) == (len(ROUTES) + 4) * 5
    metrics = RunnerMetrics()
    with StateStore(state, create=False) as store:
        metrics.sync_from_store(store)
    metrics.observe_step(bar_ms=BAR_MS, equity=1.0, cash=1.0, positions={"BTC/USDT": 0.1},
                         prices={"BTC/USDT": 30000.0})
    seen.append(metrics.exposition())
    seen.append(audit.read_bytes())
    seen += [p.read_bytes() for p in state.iterdir() if p.is_file()]
    blob = b"\n".join(seen)
    for name, value in planted.items():
        assert value.encode() not in blob, name
    assert b"PLANTED" not in blob
    for t in tokens.values():
        assert t.encode() not in audit.read_bytes()


# --- fuzzing over the OpenAPI schema --------------------------------------------------------


def test_fuzz_the_api_over_its_own_openapi_schema(tmp_path):
    """Hypothesis-made requests to every operation of the schema: odd path parameters, query
    values inside and outside their enums, bodies of the right and wrong shapes, good and bad
    tokens. The server must answer every one without a 5xx, with a status the schema documents."""
    state = tmp_path / "state"
    fill_store(state)
    app = create_app(state, secret=SECRET, audit_log_path=tmp_path / "audit.log")
    schema = app.openapi()
    operations = [(path, method, op) for path, ops in schema["paths"].items() for method, op in ops.items()]
    assert len(operations) == len(ROUTES)
    assert all({"401", "403"} <= set(op["responses"]) for _, _, op in operations)
    tokens = [token(r) for r in ROLE_RANK]
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                               | st.text(max_size=20),
                               lambda inner: st.lists(inner, max_size=3)
                               | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
    bodies = st.none() | json_values | st.fixed_dictionaries(
        {}, optional={"reason": st.text(max_size=250) | st.integers() | st.none()})

    def param_values(param: dict) -> st.SearchStrategy:
        s = param["schema"]
        options = [o for o in s.get("anyOf", [s]) if "enum" in o]
        text = st.text(max_size=80)
        return (st.sampled_from(options[0]["enum"]) | text) if options else text

    with TestClient(app, raise_server_exceptions=True) as c:

        @settings(max_examples=100, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(st.data())
        def run(data):
            path, method, op = data.draw(st.sampled_from(operations))
            url, query = path, {}
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    value = data.draw(param_values(param) | st.sampled_from(["o1", "o2", "o3"]))
                    url = url.replace("{" + param["name"] + "}", urllib.parse.quote(value, safe=""))
                elif param["in"] == "query" and data.draw(st.booleans()):
                    query[param["name"]] = data.draw(param_values(param))
            printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
            auth = data.draw(st.sampled_from(tokens) | printable)  # headers are ASCII
            headers = {"Authorization": f"Bearer {auth}"}
            kwargs = {}
            if "requestBody" in op and data.draw(st.booleans()):
                kwargs["json"] = data.draw(bodies)
            r = c.request(method.upper(), url, params=query, headers=headers, **kwargs)
            allowed = {int(code) for code in op["responses"]}
            assert r.status_code < 500 and r.status_code in allowed, (method, url, query, r.content)

        run()


# --- serving --------------------------------------------------------------------------------


def test_serve_api_listens_on_loopback_and_stops(state_dir, tmp_path):
    app = create_app(state_dir, secret=SECRET, audit_log_path=tmp_path / "audit.log")
    server = serve_api(app, port=0)
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        url = f"http://127.0.0.1:{server.port}"
        r = httpx.get(f"{url}/performance", headers=bearer(token("read")), timeout=5)
        assert r.json() == {"snapshot_bar_ms": BAR_MS, "summary": SUMMARY}
        assert httpx.get(f"{url}/status", timeout=5).status_code == 401
    finally:
        server.close()
    assert not server.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/status", timeout=2)


def test_serve_api_checks_its_port():
    with pytest.raises(ValueError, match="--api-port"):
        serve_api(None, port=70000)  # type: ignore[arg-type]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_pki(d: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=test-ca", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


def test_mutual_tls_requires_a_client_certificate(state_dir, tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    _make_pki(pki)
    app = create_app(state_dir, secret=SECRET, audit_log_path=tmp_path / "audit.log")
    server = serve_api(app, port=0, ssl_certfile=str(pki / "server.pem"),
                       ssl_keyfile=str(pki / "server.key"), ssl_client_ca=str(pki / "ca.pem"))
    url = f"https://127.0.0.1:{server.port}/performance"
    try:
        trusted = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        trusted.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
        r = httpx.get(url, headers=bearer(token("read")), verify=trusted, timeout=5)
        assert r.json() == {"snapshot_bar_ms": BAR_MS, "summary": SUMMARY}
        anonymous = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.get(url, headers=bearer(token("read")), verify=anonymous, timeout=5)
    finally:
        server.close()
    with pytest.raises(ValueError, match="server certificate"):
        serve_api(app, port=0, ssl_client_ca=str(pki / "ca.pem"))
