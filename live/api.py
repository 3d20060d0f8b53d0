"""The control API: watch and steer a runner through its state store over HTTP (FastAPI).

``create_app(state_dir, secret=..., audit_log_path=...)`` reads the runner's
:class:`~live.store.StateStore` and posts control requests into it, so it works in the runner's
process (``--api-port N``) or beside it. Each request opens its own read connection (the
store is single-threaded; SQLite's WAL lets readers run beside the runner).

Endpoints (roles in :mod:`live.auth`; OpenAPI schema at ``/openapi.json``):

- read: ``GET /status``, ``/positions``, ``/orders``, ``/fills``, ``/performance``;
- trade: ``POST /emergency-stop``, ``/pause``, ``/resume``, ``/orders/{id}/approve``,
  ``/orders/{id}/reject``;
- admin: ``POST /reset``.

A control POST answers 202 with the id of the request the runner will handle between bars
(``GET /status`` lists pending ones). Every control call that reaches a role check is written
to the hash-chained audit log (:mod:`live.audit`) with the token's subject and the outcome,
refusals for a too-low role included. Authentication failures answer 401/403 with an empty body.
:func:`serve_api` runs the app with uvicorn in a thread, on 127.0.0.1 unless told otherwise.
"""

# no `from __future__ import annotations`: FastAPI reads the route signatures, whose
# dependencies are closures of create_app
import os
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from live.audit import AuditLog
from live.auth import AuthError, Principal, authorize, check_secret, load_secret
from live.store import ORDER_STATUSES, StateStore, _order_json

OrderFilter = Literal["open", *sorted(ORDER_STATUSES)]  # type: ignore[valid-type]
_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,64}$"  # client order ids are short, printable tokens


class ControlBody(BaseModel):
    """Optional free text kept with the request and in the audit log."""

    reason: str | None = Field(default=None, max_length=200)


class Accepted(BaseModel):
    """A control request posted for the runner to handle."""

    request_id: int
    kind: str


class Position(BaseModel):
    """A symbol's net position from the booked fills (average-cost method)."""

    symbol: str
    qty: float
    avg_price: float | None
    realized_pnl: float
    fees_quote: float
    fills: int


def positions_from_fills(fills: list[Any]) -> list[Position]:
    """Net position per symbol: signed quantity (fees charged in the base asset reduce it),
    the average entry price of what is open, realised P&L and fees paid in the quote asset."""
    acc: dict[str, dict[str, float]] = defaultdict(lambda: {"qty": 0.0, "avg": 0.0, "pnl": 0.0,
                                                            "fees": 0.0, "n": 0})
    for f in fills:
        base, _, quote = f.symbol.partition("/")
        a = acc[f.symbol]
        signed = f.qty if f.side == "buy" else -f.qty
        qty = a["qty"]
        if qty == 0 or (qty > 0) == (signed > 0):  # opening or adding: new average
            a["avg"] = (a["avg"] * abs(qty) + f.price * abs(signed)) / (abs(qty) + abs(signed))
        else:  # reducing, maybe through zero
            closed = min(abs(signed), abs(qty))
            a["pnl"] += closed * (f.price - a["avg"]) * (1 if qty > 0 else -1)
            if abs(signed) > abs(qty):
                a["avg"] = f.price
        a["qty"] = qty + signed
        if f.fee_currency == base:
            a["qty"] -= f.fee  # the exchange kept part of what was bought (or sold more)
        elif f.fee_currency == quote.split(":")[0]:
            a["fees"] += f.fee
        a["n"] += 1
    return [Position(symbol=s, qty=a["qty"], avg_price=a["avg"] if a["qty"] else None,
                     realized_pnl=a["pnl"], fees_quote=a["fees"], fills=int(a["n"]))
            for s, a in sorted(acc.items())]


class _Unauthorized(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def create_app(store_or_state_dir: StateStore | str | os.PathLike[str], *, secret: bytes | None = None,
               audit_log_path: str | os.PathLike[str],
               title: str = "TradPal control API") -> FastAPI:
    """The API over the state directory of ``store_or_state_dir`` (a store is used for its
    directory only; the API opens its own connections). ``secret``: the JWT secret (default
    :func:`~live.auth.load_secret` from the environment); a missing or weak secret raises
    :class:`~live.auth.SecretError` here, before anything is served."""
    secret = load_secret() if secret is None else check_secret(secret)
    state_dir = Path(store_or_state_dir.state_dir if isinstance(store_or_state_dir, StateStore)
                     else store_or_state_dir)
    StateStore(state_dir, create=False).close()  # refuse a directory without a store now
    audit = AuditLog(audit_log_path)
    app = FastAPI(title=title, version="1", description=__doc__.split("\n\n")[0], responses={
        401: {"description": "No valid access token (empty body)"},
        403: {"description": "The token's role is too low (empty body)"}})

    @app.exception_handler(_Unauthorized)
    async def _unauthorized(request: Request, exc: _Unauthorized) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return Response(status_code=exc.status, headers=headers)

    # declares the scheme in the OpenAPI schema; failures are answered by `check`, bare
    bearer = HTTPBearer(auto_error=False, description="an access token from `tradpal api token`")

    @contextmanager
    def open_store() -> Iterator[StateStore]:
        store = StateStore(state_dir, create=False)
        try:
            yield store
        finally:
            store.close()

    def role(required: str, action: str | None = None) -> Callable[..., Principal]:
        """A dependency: the caller's principal if its token has ``required`` (audited for
        control ``action``s when the token is valid but its role too low)."""
        def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
                  ) -> Principal:
            authorization = None if credentials is None else f"Bearer {credentials.credentials}"
            try:
                return authorize(secret, authorization, required)
            except AuthError as exc:
                if exc.status == 403 and action is not None:
                    # the token is valid (else 401): its subject is known
                    who = _subject(secret, authorization)
                    audit.append(who, action, {}, "forbidden")
                raise _Unauthorized(exc.status) from None
        return check

    reader = Depends(role("read"))

    def post(kind: str, who: Principal, args: dict[str, Any]) -> Accepted:
        with open_store() as store:
            request_id = store.request(kind, by=who.subject, **args)
        audit.append(who.subject, kind, args, {"request_id": request_id})
        return Accepted(request_id=request_id, kind=kind)

    @app.get("/status", dependencies=[reader], summary="Runner state, cursor, open orders, pending requests")
    def get_status() -> dict[str, Any]:
        with open_store() as store:
            status = store.status()
        status.pop("state_file")  # a server path says nothing a client needs
        return status

    @app.get("/positions", dependencies=[reader], summary="Net position per symbol from the fills")
    def get_positions() -> list[Position]:
        with open_store() as store:
            return positions_from_fills(store.fills())

    @app.get("/orders", dependencies=[reader], summary="Orders, oldest first")
    def get_orders(status: OrderFilter | None = None,
                   symbol: Annotated[str | None, Query(max_length=64)] = None) -> list[dict[str, Any]]:
        with open_store() as store:
            return [_order_json(o) for o in store.orders(status, symbol)]

    @app.get("/fills", dependencies=[reader], summary="Fills, in booking order")
    def get_fills(symbol: Annotated[str | None, Query(max_length=64)] = None) -> list[dict[str, Any]]:
        with open_store() as store:
            return [asdict(f) for f in store.fills(symbol)]

    @app.get("/performance", dependencies=[reader], summary="The latest snapshot's summary (equity, ...)")
    def get_performance() -> dict[str, Any]:
        with open_store() as store:
            status = store.status()
        return {"snapshot_bar_ms": status["snapshot_bar_ms"], "summary": status["summary"]}

    def control(kind: str, required: str) -> Callable[..., Accepted]:
        def act(who: Annotated[Principal, Depends(role(required, kind))],
                body: ControlBody | None = None) -> Accepted:
            return post(kind, who, _reason(body))
        return act

    def order_decision(kind: str) -> Callable[..., Accepted]:
        def decide(client_order_id: Annotated[str, PathParam(pattern=_ID_PATTERN)],
                   who: Annotated[Principal, Depends(role("trade", kind))],
                   body: ControlBody | None = None) -> Accepted:
            args = {"client_order_id": client_order_id, **_reason(body)}
            with open_store() as store:
                known = store.order(client_order_id) is not None
            if not known:
                audit.append(who.subject, kind, args, "unknown order")
                raise HTTPException(404, "unknown client_order_id")
            return post(kind, who, args)
        return decide

    for path, kind, endpoint, summary in (
        ("/emergency-stop", "emergency_stop", control("emergency_stop", "trade"),
         "Cancel all orders, flatten and halt"),
        ("/pause", "pause", control("pause", "trade"), "Stop opening positions until resumed"),
        ("/resume", "resume", control("resume", "trade"), "Resume after a pause"),
        ("/orders/{client_order_id}/approve", "approve_order", order_decision("approve_order"),
         "Approve an order waiting for approval"),
        ("/orders/{client_order_id}/reject", "reject_order", order_decision("reject_order"),
         "Reject an order waiting for approval"),
        ("/reset", "reset", control("reset", "admin"), "Clear the halt (admin)"),
    ):
        not_found = {404: {"description": "Unknown client_order_id"}} if "{" in path else None
        app.post(path, status_code=202, response_model=Accepted, name=kind, summary=summary,
                 responses=not_found)(endpoint)

    return app


def _reason(body: ControlBody | None) -> dict[str, Any]:
    return {} if body is None or body.reason is None else {"reason": body.reason}


def _subject(secret: bytes, authorization: str | None) -> str:
    """The subject of a valid access token (any role); only called after its role was checked."""
    return authorize(secret, authorization, "read").subject


@dataclass
class ApiServer:
    """A running API; :meth:`close` stops it."""

    host: str
    port: int
    _server: uvicorn.Server
    _thread: threading.Thread

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def serve_api(app: FastAPI, host: str = "127.0.0.1", port: int = 0, *,
              ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
              ssl_client_ca: str | None = None, start_timeout_s: float = 10.0) -> ApiServer:
    """Serve ``app`` with uvicorn in a daemon thread (port 0: a free port) and return once it
    listens. TLS with ``ssl_certfile``/``ssl_keyfile``; adding ``ssl_client_ca`` requires
    client certificates signed by that CA (mutual TLS)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"--api-port must be a TCP port 0..65535, got {port!r}")
    if ssl_client_ca and not ssl_certfile:
        raise ValueError("client certificates (ssl_client_ca) need a server certificate (ssl_certfile)")
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                            ssl_ca_certs=ssl_client_ca,
                            ssl_cert_reqs=ssl.CERT_REQUIRED if ssl_client_ca else ssl.CERT_NONE)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="tradpal-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise OSError(f"the control API did not start on {host}:{port}")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return ApiServer(host, bound, server, thread)
