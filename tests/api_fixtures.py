"""A state store filled by hand for the control API and metrics tests, with the numbers the
tests expect worked out here."""

from __future__ import annotations

from pathlib import Path

from live.broker import BrokerFill, OrderRequest, OrderUpdate
from live.store import StateStore

BAR_MS = 1_700_000_000_000
SUMMARY = {"equity": 10123.5, "cash": 1000.25, "drawdown": 0.01}
ORDERS = [
    OrderRequest("o1", "BTC/USDT", "buy", "market", 0.5),
    OrderRequest("o2", "BTC/USDT", "sell", "limit", 0.4, price=31000.0),
    OrderRequest("o3", "ETH/USDT", "buy", "limit", 2.0, price=2000.0),
]
FILLS = [
    BrokerFill("t1", "o1", "BTC/USDT", "buy", 0.3, 30000.0, 9.0, "USDT", 1000),
    BrokerFill("t2", "o1", "BTC/USDT", "buy", 0.2, 30500.0, 0.0002, "BTC", 2000),
    BrokerFill("t3", "o2", "BTC/USDT", "sell", 0.2, 31000.0, 6.2, "USDT", 3000),
]
# average cost after t1, t2: (0.3 * 30000 + 0.2 * 30500) / 0.5 = 30200; t3 realises
# 0.2 * (31000 - 30200) = 160; the 0.0002 BTC fee came out of the position
BTC_POSITION = {"symbol": "BTC/USDT", "qty": 0.5 - 0.0002 - 0.2, "avg_price": 30200.0,
                "realized_pnl": 160.0, "fees_quote": 15.2, "fills": 3}
# o1 filled, o2 partially filled (0.2 of 0.4), o3 rejected
STATUS_COUNTS = {"filled": 1, "partially_filled": 1, "rejected": 1}


def fill_store(state_dir: Path) -> None:
    """Orders, fills, a bar with a summary and a halt flag, as a runner would leave them."""
    with StateStore(state_dir) as store:
        for order in ORDERS:
            store.record_order(order, bar_ms=BAR_MS)
        store.record_fill(FILLS[0], BAR_MS, order=OrderUpdate("o1", "partially_filled", 0.3, "x1"))
        store.record_fill(FILLS[1], BAR_MS, order=OrderUpdate("o1", "filled", 0.5, "x1"))
        store.record_fill(FILLS[2], BAR_MS, order=OrderUpdate("o2", "partially_filled", 0.2, "x2"))
        store.update_order(OrderUpdate("o3", "rejected", 0.0, None, "min_notional"))
        store.commit_bar({"BTC/USDT": BAR_MS, "ETH/USDT": BAR_MS}, b"core-state", summary=SUMMARY,
                         flags={"halted": True, "halt_reason": "daily loss"})
