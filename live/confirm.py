"""Confirmations of live trading: the typed confirmation before a live run starts, the live
defaults it shows, and :class:`OrderGate`, which holds every order until it is approved
(``--confirm-orders``).

**Starting live** (``tradpal live``): :func:`check_live_flags` refuses a run without ``--live``
and ``--yes`` without ``TRADPAL_LIVE_CONFIRM=1`` before anything is sent to an exchange;
:func:`confirm_live` shows what will be traded and asks for the typed phrase ``LIVE <exchange>``.

**Live defaults**: :data:`LIVE_SETTING_DEFAULTS` (a daily loss limit, enforced in the core's
step) under the strategy's ``sim_defaults`` and ``--set``; :data:`DEFAULT_MAX_ORDER_NOTIONAL`,
the per-order cap that :class:`live.ccxt_broker.CcxtBroker` enforces before sending an order.
Paper runs keep the backtest's defaults.
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Literal

from live.broker import OrderRequest
from live.store import ControlRequest

#: settings a live run starts with unless the strategy's ``sim_defaults`` or ``--set`` say
#: otherwise: flatten and stop entering for the rest of the UTC day after a 5 % loss
LIVE_SETTING_DEFAULTS: dict[str, float] = {"daily_loss": 0.05}
#: ``--max-order-notional`` of a live run: an order worth more (quote currency) is not sent
DEFAULT_MAX_ORDER_NOTIONAL = 1_000.0
#: ``--approval-timeout``: seconds an order waits for approval before it expires
DEFAULT_APPROVAL_TIMEOUT_S = 60.0
#: the environment variable that lets ``--yes`` replace the typed confirmation
LIVE_CONFIRM_ENV = "TRADPAL_LIVE_CONFIRM"

Decision = Literal["approved", "rejected", "pending", "expired"]
#: control requests an :class:`OrderGate` takes (posted by ``tradpal runner approve|reject`` and
#: the control API's ``POST /orders/{client_order_id}/approve|reject``)
GATE_REQUEST_KINDS: frozenset[str] = frozenset({"approve_order", "reject_order"})


# --- starting a live run ---------------------------------------------------------------------

def check_live_flags(live: bool, yes: bool, env: Mapping[str, str] | None = None) -> None:
    """Refuse (``ValueError``, one line in the options' words) a live run without ``--live``,
    or with ``--yes`` unless ``TRADPAL_LIVE_CONFIRM=1`` is set. Call it before any request."""
    env = os.environ if env is None else env
    if not live:
        raise ValueError("tradpal live sends real orders: add --live to mean it (or paper-trade "
                         "with `tradpal paper`, the default everywhere); nothing was sent")
    if yes and env.get(LIVE_CONFIRM_ENV) != "1":
        raise ValueError(f"--yes skips the typed confirmation only with {LIVE_CONFIRM_ENV}=1 in the "
                         "environment (for unattended runs); nothing was sent")


def confirmation_phrase(exchange_id: str) -> str:
    """What the user types to start a live run on ``exchange_id``."""
    return f"LIVE {exchange_id}"


def confirm_live(summary: str, exchange_id: str, *, yes: bool, stdin: IO[str] | None = None,
                 out: IO[str] | None = None) -> None:
    """Show ``summary`` (what will be traded, the account, the caps) on ``out`` and read the
    typed confirmation from ``stdin``; raise ``ValueError`` unless it is
    :func:`confirmation_phrase` exactly. ``yes`` (already checked by :func:`check_live_flags`)
    shows the summary and skips the question."""
    stdin = sys.stdin if stdin is None else stdin
    out = sys.stderr if out is None else out
    phrase = confirmation_phrase(exchange_id)
    out.write(summary.rstrip("\n") + "\n")
    if yes:
        out.write(f"--yes with {LIVE_CONFIRM_ENV}=1: starting without the typed confirmation\n")
        out.flush()
        return
    out.write(f"Type {phrase!r} to start live trading (anything else cancels): ")
    out.flush()
    answer = stdin.readline()
    if not stdin.isatty():  # typed input was not echoed: end the prompt's line
        out.write("\n")
    if not answer:
        raise ValueError(f"no confirmation (end of input): type {phrase!r}, or use --yes with "
                         f"{LIVE_CONFIRM_ENV}=1 for an unattended run; nothing was sent")
    if answer.strip() != phrase:
        raise ValueError(f"the confirmation typed is not {phrase!r}: live run cancelled; nothing was sent")


# --- approving orders ------------------------------------------------------------------------

Ask = Callable[[str, float], "str | None"]


def terminal_ask(stdin: IO[str] | None = None, out: IO[str] | None = None) -> Ask:
    """An ``ask(question, timeout_s)`` for :class:`OrderGate` on a terminal: writes the question,
    returns the line typed within ``timeout_s`` (None if none was)."""
    stdin = sys.stdin if stdin is None else stdin
    out = sys.stderr if out is None else out

    def ask(question: str, timeout_s: float) -> str | None:
        out.write(question)
        out.flush()
        ready, _, _ = select.select([stdin], [], [], max(0.0, timeout_s))
        if not ready:
            out.write("\n")
            return None
        return stdin.readline()

    return ask


@dataclass(frozen=True)
class _Decision:
    decision: Decision
    at_s: float  # when it was made (epoch seconds)
    why: str


class OrderGate:
    """Holds each order until it is approved, rejected, or expires (``--confirm-orders``).

    The contract with the runner (its single thread makes every call; nothing here is
    thread-safe, nothing needs to be):

    - Before an order goes to the broker the runner calls ``decide(order, created_s, now_s)``
      (times in epoch seconds: ``created_s`` when the step created the order, so a restarted
      runner passes the stored creation time and the expiry does not restart). It sends the
      order on ``"approved"``; on ``"rejected"`` / ``"expired"`` it records the order with that
      status (``rejected`` / ``expired``) and :meth:`reason` as the reason; on ``"pending"`` it
      keeps the order and calls ``decide`` again on its next turn (each poll). A final answer
      is repeated for the same order on every later call.
    - The runner's ``handle_requests`` hands every control request to :meth:`on_request`
      first: for the kinds in :data:`GATE_REQUEST_KINDS` (``approve_order`` / ``reject_order``
      with argument ``client_order_id`` and an optional ``reason``, as the control API and
      ``tradpal runner approve|reject`` post them) it returns the result to store with
      ``store.mark_handled(req.id, result)``; for any other kind it returns None and the runner
      handles the request itself.

    A decision may arrive before ``decide`` has seen the order (a request posted while the
    runner was down is handled on start, before the waiting orders are looked at again): it is
    kept and applied then. A decision made (posted) after the order's deadline
    ``created_s + timeout_s`` does not count: the order has expired.

    With ``ask`` (``--confirm-orders=prompt``: :func:`terminal_ask`), ``decide`` also asks on
    the terminal, ``y``/``yes`` approving and ``n``/``no`` rejecting, and waits at most until the
    order's deadline -- the runner's thread waits with it, so prompt mode suits slow bars.
    Approvals by request work in both modes.
    """

    def __init__(self, timeout_s: float = DEFAULT_APPROVAL_TIMEOUT_S, *, ask: Ask | None = None) -> None:
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < float("inf"):
            raise ValueError(f"approval timeout must be a number of seconds > 0, got {timeout_s!r} "
                             "(--approval-timeout)")
        self.timeout_s = float(timeout_s)
        self.ask = ask
        self._final: dict[str, _Decision] = {}  # client order id -> the decision given to the runner
        self._posted: dict[str, _Decision] = {}  # decisions by request, not yet applied

    def decide(self, order: OrderRequest, created_s: float, now_s: float) -> Decision:
        """``"approved"``, ``"rejected"``, ``"expired"`` or ``"pending"`` for ``order`` now."""
        cid = order.client_order_id
        if cid in self._final:
            return self._final[cid].decision
        deadline = created_s + self.timeout_s
        posted = self._posted.pop(cid, None)
        if posted is not None and posted.at_s <= deadline:
            return self._settle(cid, posted)
        if now_s >= deadline or posted is not None:
            return self._settle(cid, _Decision("expired", now_s, f"not approved within {self.timeout_s:g} s "
                                                                  "(--approval-timeout)"))
        if self.ask is None:
            return "pending"
        answer = self.ask(_question(order, deadline - now_s), deadline - now_s)
        word = (answer or "").strip().lower()
        if word in ("y", "yes"):
            return self._settle(cid, _Decision("approved", now_s, "approved at the prompt"))
        if word in ("n", "no"):
            return self._settle(cid, _Decision("rejected", now_s, "rejected at the prompt"))
        return "pending"  # no (clear) answer yet: asked again on the next turn until the deadline

    def on_request(self, req: ControlRequest) -> dict | None:
        """The result of an ``approve_order`` / ``reject_order`` request (for
        ``store.mark_handled``), or None for a request of another kind."""
        if req.kind not in GATE_REQUEST_KINDS:
            return None
        cid = req.args.get("client_order_id")
        if not isinstance(cid, str) or not cid:
            return {"ok": False, "error": f"{req.kind} needs the argument client_order_id"}
        decision: Decision = "approved" if req.kind == "approve_order" else "rejected"
        if cid in self._final:
            done = self._final[cid]
            return {"ok": False, "client_order_id": cid,
                    "error": f"order {cid} was already {done.decision} ({done.why})"}
        who = str(req.args.get("by") or f"request {req.id}")
        why = f"{decision} by {who}" + (f": {req.args['reason']}" if req.args.get("reason") else "")
        self._posted[cid] = _Decision(decision, req.created_ms / 1000.0, why)
        return {"ok": True, "client_order_id": cid, "decision": decision}

    def reason(self, client_order_id: str) -> str | None:
        """Why the order was approved, rejected or expired (None while undecided)."""
        done = self._final.get(client_order_id)
        return None if done is None else done.why

    def _settle(self, cid: str, decision: _Decision) -> Decision:
        self._final[cid] = decision
        return decision.decision


def _question(order: OrderRequest, remaining_s: float) -> str:
    size = f"{order.qty:g}" if order.qty is not None else f"cost {order.cost:g}"
    price = next((f" at {p:g}" for p in (order.price, order.trigger) if p is not None), "")
    worth = ""
    if order.qty is not None and (order.price or order.trigger or order.ref_price):
        worth = f" (~{order.qty * (order.price or order.trigger or order.ref_price):,.2f} quote)"
    return (f"approve {order.side} {size} {order.symbol} {order.type}{price}{worth}, "
            f"{order.client_order_id}? [y/n] ({remaining_s:.0f} s left) ")


__all__ = ["DEFAULT_APPROVAL_TIMEOUT_S", "DEFAULT_MAX_ORDER_NOTIONAL", "GATE_REQUEST_KINDS",
           "LIVE_CONFIRM_ENV", "LIVE_SETTING_DEFAULTS", "Decision", "OrderGate", "check_live_flags",
           "confirm_live", "confirmation_phrase", "terminal_ask"]
