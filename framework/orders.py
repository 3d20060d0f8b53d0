"""The order model, on the Python side: ids, the status state machine, readable tables.

The step (``framework.sim_nb``) reports every order's changes as ``event_dt`` records and every
execution as a ``fill_dt`` record. This module names them for people and brokers:

- **Client order ids** are deterministic: ``<strategy>.<run>.<column>.<sequence>``, such as
  ``smacross.paper1.0.17``. The sequence is the cash group's order counter, part of the saved
  state, so a restarted runner regenerates the same ids and can ask the exchange about them.
- **Status** moves through one state machine (``TRANSITIONS``)::

      created ──► submitted ──► partially_filled ──► filled
         │            │               │
         │            ├──► cancelled ◄┤
         │            ├──► expired ◄──┤
         └────────────┴──► rejected   └──► (more partial fills)

  The step creates orders; a broker submits them. The paper matcher (backtest, paper trading)
  settles an order in the step after its creation, so there an order goes from ``created``
  straight to ``filled``, ``expired``, ``cancelled`` or ``rejected``. ``rejected`` and
  ``cancelled`` carry a reason (``framework.enums.REJECT_NAMES``).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from framework import enums

#: allowed status changes; a status not in the keys is final
TRANSITIONS: dict[str, frozenset[str]] = {
    "created": frozenset({"submitted", "partially_filled", "filled", "cancelled", "expired", "rejected"}),
    "submitted": frozenset({"partially_filled", "filled", "cancelled", "expired", "rejected"}),
    "partially_filled": frozenset({"partially_filled", "filled", "cancelled", "expired"}),
}
FINAL = frozenset({"filled", "cancelled", "expired", "rejected"})

_ID_PART = re.compile(r"[^A-Za-z0-9_-]")


def strategy_tag(strategy: object) -> str:
    """The strategy's part of a client order id: its class name, lower case, letters and digits
    only, at most 12 characters."""
    name = type(strategy).__name__ if not isinstance(strategy, type) else strategy.__name__
    return _ID_PART.sub("", name).lower()[:12] or "strategy"


def check_run_id(run_id: str) -> str:
    """``run_id`` if it can be part of a client order id (1 to 12 of ``A-Z a-z 0-9 _ -``; an
    exchange limits ids to 36 characters), else ``ValueError`` naming the keyword."""
    if not isinstance(run_id, str) or not 1 <= len(run_id) <= 12 or _ID_PART.search(run_id):
        raise ValueError(
            f"run_id must be 1 to 12 letters, digits, '_' or '-' (it is part of every client "
            f"order id), got {run_id!r}"
        )
    return run_id


def client_order_id(tag: str, run_id: str, col: int, seq: int) -> str:
    """``<tag>.<run_id>.<col>.<seq>``: the id an order is placed with on an exchange."""
    return f"{tag}.{run_id}.{int(col)}.{int(seq)}"


def check_transitions(events: np.ndarray) -> list[str]:
    """Every order's status changes in ``events`` that the state machine does not allow (an
    empty list when all follow it). Orders are told apart by (column, order id)."""
    last: dict[tuple[int, int], str] = {}
    problems = []
    for e in events[events["kind"] == enums.EVENT_ORDER]:
        key = (int(e["col"]), int(e["order_id"]))
        status = enums.STATUS_NAMES[e["status"]]
        before = last.get(key)
        if before is None:
            if status not in ("created", "rejected"):
                problems.append(f"order {key} starts as {status}")
        elif status not in TRANSITIONS.get(before, ()):
            problems.append(f"order {key}: {before} -> {status}")
        last[key] = status
    return problems


def final_orders(events: np.ndarray) -> np.ndarray:
    """The last record of every order in ``events`` (its final status, or its status now for
    an order still working), in the order the orders were created."""
    orders = events[events["kind"] == enums.EVENT_ORDER]
    if len(orders) == 0:
        return orders
    key = orders["col"] * (1 << 40) + orders["order_id"]
    # the last occurrence of each key, then sorted by first appearance
    _, last_rev = np.unique(key[::-1], return_index=True)
    last = len(key) - 1 - last_rev
    _, first = np.unique(key, return_index=True)
    return orders[last[np.argsort(first)]]


def _names(table: tuple[str, ...], codes: np.ndarray) -> np.ndarray:
    return np.array(table, dtype=object)[codes]


def orders_frame(events: np.ndarray, index: pd.DatetimeIndex, columns: list[str], tag: str,
                 run_id: str) -> pd.DataFrame:
    """Every order with its final status: one row per order, in creation order."""
    o = final_orders(events)
    return pd.DataFrame(
        {
            "client_order_id": [client_order_id(tag, run_id, c, i) for c, i in zip(o["col"], o["order_id"], strict=True)],
            "created": index[o["created_bar"]],
            "updated": index[o["bar"]],
            "instrument": _names(tuple(columns), o["col"]),
            "side": np.where(o["side"] > 0, "buy", "sell"),
            "order_type": _names(enums.ORDER_TYPE_NAMES, o["order_type"]),
            "qty": o["qty"],
            "notional": o["notional"],
            "price": o["price"],
            "trigger": o["trigger"],
            "status": _names(enums.STATUS_NAMES, o["status"]),
            "reason": _names(enums.REASON_NAMES, o["reason"]),
            "reject_reason": _names(enums.REJECT_NAMES, o["reject"]),
            "filled_qty": o["filled_qty"],
            "avg_price": o["avg_price"],
        }
    )


def events_frame(events: np.ndarray, index: pd.DatetimeIndex, columns: list[str]) -> pd.DataFrame:
    """Every event of the run (orders' status changes, stops moving, risk limits firing)."""
    col = events["col"]
    return pd.DataFrame(
        {
            "time": index[events["bar"]],
            "event": _names(enums.EVENT_NAMES, events["kind"]),
            "instrument": np.where(col >= 0, np.array(columns, dtype=object)[np.maximum(col, 0)], None),
            "order_id": events["order_id"],
            "side": np.where(events["side"] > 0, "buy", np.where(events["side"] < 0, "sell", "")),
            "order_type": _names(enums.ORDER_TYPE_NAMES, events["order_type"]),
            "status": _names(enums.STATUS_NAMES, events["status"]),
            "reason": _names(enums.REASON_NAMES, events["reason"]),
            "reject_reason": _names(enums.REJECT_NAMES, events["reject"]),
            "qty": events["qty"],
            "price": events["price"],
            "trigger": events["trigger"],
            "filled_qty": events["filled_qty"],
            "avg_price": events["avg_price"],
        }
    )


def fills_frame(fills: np.ndarray, index: pd.DatetimeIndex, columns: list[str], tag: str,
                run_id: str) -> pd.DataFrame:
    """Every fill: time, instrument, side, quantity, price, fee and its currency, the order."""
    return pd.DataFrame(
        {
            "time": index[fills["bar"]],
            "instrument": _names(tuple(columns), fills["col"]),
            "side": np.where(fills["side"] > 0, "buy", "sell"),
            "qty": fills["qty"],
            "price": fills["price"],
            "fee": fills["fees"],
            "fee_currency": np.where(fills["fee_ccy"] == enums.FEE_BASE, "base", "quote"),
            "order_type": _names(enums.ORDER_TYPE_NAMES, fills["order_type"]),
            "reason": _names(enums.REASON_NAMES, fills["reason"]),
            "order_id": fills["order_id"],
            "client_order_id": [client_order_id(tag, run_id, c, i) for c, i in zip(fills["col"], fills["order_id"], strict=True)],
        }
    )
