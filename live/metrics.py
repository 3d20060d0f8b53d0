"""Prometheus metrics of a live runner (``--metrics-port``).

:class:`RunnerMetrics` owns its own ``prometheus_client`` registry (several runners or tests in
one process do not collide). The runner calls :meth:`RunnerMetrics.observe_step` once per bar
and the ``on_*`` methods as things happen; :meth:`RunnerMetrics.sync_from_store` refreshes the
gauges that the state store knows (orders by status, halted), so a restarted runner, or a
process that only watches a state directory, exports the same numbers.
:func:`serve_metrics` serves ``/metrics`` on 127.0.0.1 unless told otherwise.

Every name starts with ``tradpal_``; ``live/grafana/tradpal.json`` plots them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server

from live.store import ORDER_STATUSES, StateStore

#: Bar close to order sent, seconds: a runner is expected well under a second.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RunnerMetrics:
    """The runner's metrics in a registry of their own (:attr:`registry`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.equity = Gauge("tradpal_equity", "Account equity in quote currency", registry=r)
        self.cash = Gauge("tradpal_cash", "Free cash in quote currency", registry=r)
        self.position = Gauge("tradpal_position", "Position in base units (negative: short)",
                              ["symbol"], registry=r)
        self.exposure = Gauge("tradpal_exposure", "Position value in quote currency (signed)",
                              ["symbol"], registry=r)
        self.orders = Gauge("tradpal_orders", "Orders in the state store by status", ["status"], registry=r)
        self.fills = Counter("tradpal_fills", "Fills booked", ["symbol"], registry=r)
        self.rejections = Counter("tradpal_order_rejections", "Orders rejected, by reason",
                                  ["reason"], registry=r)
        self.bar_to_order = Histogram("tradpal_bar_to_order_seconds",
                                      "Time from a bar's close arriving to its orders being sent",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.feed_lag = Gauge("tradpal_feed_lag_seconds",
                              "Wall time minus the close time of the last bar received", ["symbol"],
                              registry=r)
        self.last_bar = Gauge("tradpal_last_bar_timestamp_seconds", "Open time of the last bar stepped",
                              registry=r)
        self.bars = Counter("tradpal_bars", "Bars stepped", registry=r)
        self.exchange_errors = Counter("tradpal_exchange_errors", "Exchange errors, by kind",
                                       ["kind"], registry=r)
        self.retries = Counter("tradpal_retries", "Requests retried, by operation", ["operation"],
                               registry=r)
        self.halted = Gauge("tradpal_halted", "1 while trading is halted (risk limit or emergency stop)",
                            registry=r)
        self.daily_block = Gauge("tradpal_daily_block", "1 while the daily loss limit blocks new entries",
                                 registry=r)
        self.paused = Gauge("tradpal_paused", "1 while paused through the control API", registry=r)
        self.events_published = Counter("tradpal_events_published", "Events published on the bus",
                                        registry=r)
        self.outbox_depth = Gauge("tradpal_outbox_depth", "Events waiting in the outbox", registry=r)

    def observe_step(self, *, bar_ms: int, equity: float, cash: float,
                     positions: Mapping[str, float], prices: Mapping[str, float],
                     bar_to_order_s: float | None = None, feed_lag_s: Mapping[str, float] | None = None,
                     halted: bool = False, daily_block: bool = False) -> None:
        """Record one stepped bar: account, per-symbol position and exposure (position x price,
        for every symbol in ``positions``), latency of the orders it produced (None if none),
        feed lag per symbol and the risk state."""
        missing = sorted(set(positions) - set(prices))
        if missing:
            raise ValueError(f"prices is missing {', '.join(missing)}: exposure needs a price per position")
        self.bars.inc()
        self.last_bar.set(bar_ms / 1000.0)
        self.equity.set(equity)
        self.cash.set(cash)
        for symbol, qty in positions.items():
            self.position.labels(symbol).set(qty)
            self.exposure.labels(symbol).set(qty * prices[symbol])
        if bar_to_order_s is not None:
            self.bar_to_order.observe(bar_to_order_s)
        for symbol, lag in (feed_lag_s or {}).items():
            self.feed_lag.labels(symbol).set(lag)
        self.halted.set(int(bool(halted)))
        self.daily_block.set(int(bool(daily_block)))

    def on_fill(self, symbol: str) -> None:
        self.fills.labels(symbol).inc()

    def on_rejection(self, reason: str) -> None:
        self.rejections.labels(reason or "unknown").inc()

    def on_exchange_error(self, kind: str) -> None:
        self.exchange_errors.labels(kind).inc()

    def on_retry(self, operation: str) -> None:
        self.retries.labels(operation).inc()

    def on_events_published(self, n: int = 1, outbox_depth: int | None = None) -> None:
        self.events_published.inc(n)
        if outbox_depth is not None:
            self.outbox_depth.set(outbox_depth)

    def sync_orders(self, store: StateStore) -> None:
        """Set the orders-by-status gauge (every status, zeros included) from the state store."""
        counts = dict(store.connection.execute("SELECT status, COUNT(*) FROM orders GROUP BY status"))
        for status in sorted(ORDER_STATUSES):
            self.orders.labels(status).set(counts.get(status, 0))

    def sync_from_store(self, store: StateStore) -> None:
        """Set the orders-by-status gauge and the halted and paused flags from the state store."""
        self.sync_orders(store)
        flags = store.flags()
        self.halted.set(int(bool(flags.get("halted", False))))
        self.paused.set(int(bool(flags.get("paused", False))))

    def exposition(self) -> bytes:
        """The text Prometheus scrapes."""
        return generate_latest(self.registry)

    def metric_names(self) -> set[str]:
        """Every series name this registry can export (``_total`` of counters, ``_bucket`` /
        ``_sum`` / ``_count`` of histograms), observed yet or not."""
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
        return {family.name + s for family in self.registry.collect()
                for s in suffixes.get(family.type, ("",))}


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(metrics: RunnerMetrics, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``metrics`` at ``http://host:port/metrics`` in a daemon thread (port 0: a free port)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"--metrics-port must be a TCP port 0..65535, got {port!r}")
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return MetricsServer(host, server.server_address[1], server, thread)
