"""What the live runner and a broker exchange: order requests out, order updates and fills in.

The core's step emits orders as records (``framework.enums``); the runner turns each one to send
into an :class:`OrderRequest`. A broker (paper or ccxt) answers with :class:`OrderUpdate` (status
changes as the exchange reports them) and :class:`BrokerFill` (executions, with the exchange's
price, quantity and fee), which the runner books through the core's one booking path.

Plain frozen dataclasses: they are persisted by the state store and published as events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop", "stop_limit", "take_profit"]
OrderStatus = Literal[
    "created", "submitted", "partially_filled", "filled", "cancelled", "expired", "rejected", "lost"
]
FINAL_STATUSES: frozenset[str] = frozenset({"filled", "cancelled", "expired", "rejected", "lost"})


@dataclass(frozen=True)
class OrderRequest:
    """One order to place. ``client_order_id`` is deterministic (the same run regenerates the
    same ids after a restart), so an exchange can be asked about it by that id."""

    client_order_id: str
    symbol: str  # ccxt unified symbol, "BTC/USDT"
    side: Side
    type: OrderType
    qty: float | None  # base quantity; None for a market order sized by ``cost``
    price: float | None = None  # limit price (limit, stop_limit)
    trigger: float | None = None  # trigger price (stop, stop_limit, take_profit)
    cost: float | None = None  # quote amount of a market order sized by notional
    reduce_only: bool = False  # exits: may only reduce the position
    # the price the order was decided at (the bar's close): lets a broker check a market
    # order's notional against the exchange's minimum before sending it
    ref_price: float | None = None


@dataclass(frozen=True)
class OrderUpdate:
    """An order's state as the broker last saw it."""

    client_order_id: str
    status: OrderStatus
    filled_qty: float = 0.0
    exchange_order_id: str | None = None
    reason: str | None = None  # why rejected / lost, in the exchange's words


@dataclass(frozen=True)
class BrokerFill:
    """One execution. ``trade_id`` is unique per exchange and symbol: fills are booked once."""

    trade_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: float
    price: float
    fee: float
    fee_currency: str  # "USDT", "BTC", ...
    timestamp_ms: int


class Broker(Protocol):
    """What the runner needs from a broker."""

    def submit(self, order: OrderRequest) -> OrderUpdate:
        """Place ``order`` once: never twice, whatever the network does."""
        ...

    def cancel(self, client_order_id: str, symbol: str) -> OrderUpdate: ...

    def fills_since(self, symbol: str, since_ms: int | None) -> list[BrokerFill]:
        """Executions of this account on ``symbol`` from ``since_ms`` on, oldest first."""
        ...

    def open_orders(self, symbol: str | None = None) -> list[OrderUpdate]: ...
