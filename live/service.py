"""The services around a live runner: event bus, Prometheus metrics and the control API.

    services = RunnerServices(runner, ServiceOptions(redis_url=..., metrics_port=9108, api_port=8780))
    services.start()            # starts the runner; session_started, bus, endpoints
    runner.run(max_bars=100)
    services.stop("done")       # session_stopped, outbox flushed if Redis answers, endpoints closed

One place builds them from the command line options (:func:`add_service_options`,
:meth:`ServiceOptions.from_args`), so ``tradpal paper`` and ``tradpal live`` wire them alike.

- **Bus.** Every batch of events the runner commits (``LiveRunner.on_commit``) is converted to
  typed events (:class:`live.events.RunnerEvents`) and published in one call, after the commit
  (the runner's orders are ready before the bus is touched). After each bar the service adds the
  position events of the symbols that filled and a :class:`~live.events.PerformanceSnapshot`
  (equity, drawdown from the core's peak equity, and the session's streaming statistics of
  ``framework.metrics_nb`` over the live bars this process stepped); every ``heartbeat_s`` a
  :class:`~live.events.Heartbeat` (``LiveRunner.on_poll``), which also flushes the outbox.
  :class:`~live.bus.InProcessBus` by default (:attr:`RunnerServices.bus`, subscribe to it);
  with ``redis_url`` a :class:`~live.bus.RedisStreamsBus` on the stream of the run id, its
  outbox in the runner's state file: while Redis is away the runner trades on and the events
  wait there, in order.
- **Metrics** (``metrics_port``): :class:`~live.metrics.RunnerMetrics` served on 127.0.0.1,
  updated per bar and per event.
- **API** (``api_port``, ``api_host``): :func:`live.api.create_app` over the runner's state
  directory, in this process; it needs a strong secret (``TRADPAL_API_SECRET`` or
  ``TRADPAL_API_SECRET_FILE``), checked by :class:`ServiceOptions` before anything starts.
  Control requests reach the runner through its store, between bars.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework import enums
from framework import metrics_nb as stats_nb
from live import events as ev

if TYPE_CHECKING:  # the bus (redis) and the feed (ccxt) load when a runner starts, not with the CLI
    from live.bus import InProcessBus, RedisStreamsBus
    from live.feed import BarBatch

log = logging.getLogger("tradpal.live.service")


def add_service_options(parser: argparse.ArgumentParser) -> None:
    """The options of :class:`ServiceOptions` (``--redis-url``, ``--metrics-port``,
    ``--api-port``, ``--api-host``, ``--api-audit-log``, ``--heartbeat``)."""
    g = parser.add_argument_group("events, metrics and control API")
    g.add_argument("--redis-url", metavar="URL",
                   help="publish events to Redis Streams (redis://host:port/db); default: in process only")
    g.add_argument("--metrics-port", type=int, metavar="N", help="serve Prometheus metrics on 127.0.0.1:N")
    g.add_argument("--api-port", type=int, metavar="N",
                   help="serve the control API on port N (needs $TRADPAL_API_SECRET or $TRADPAL_API_SECRET_FILE)")
    g.add_argument("--api-host", default="127.0.0.1", metavar="HOST",
                   help="the control API's bind address (default 127.0.0.1, this host only)")
    g.add_argument("--api-audit-log", metavar="FILE",
                   help="the control API's audit log (default audit.log in the --state directory)")
    g.add_argument("--heartbeat", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between heartbeat events (default 10)")


@dataclass(frozen=True)
class ServiceOptions:
    """What to run around a runner; checked when built (a bad port, a weak API secret raise
    ``ValueError`` naming the option). ``api_secret`` is loaded from the environment when
    ``api_port`` is given."""

    redis_url: str | None = None
    metrics_port: int | None = None
    api_port: int | None = None
    api_host: str = "127.0.0.1"
    api_audit_log: str | None = None
    heartbeat_s: float = 10.0
    api_secret: bytes | None = None

    def __post_init__(self) -> None:
        for option, port in (("--metrics-port", self.metrics_port), ("--api-port", self.api_port)):
            if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
                raise ValueError(f"{option} must be a TCP port 0..65535, got {port!r}")
        if not (isinstance(self.heartbeat_s, (int, float)) and 0 < self.heartbeat_s < math.inf):
            raise ValueError(f"--heartbeat must be a number of seconds > 0, got {self.heartbeat_s!r}")
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("--redis-url must look like redis://host:port/db (or rediss://, unix://)")
        if self.api_port is not None and self.api_secret is None:
            from live.auth import SecretError, load_secret

            try:
                object.__setattr__(self, "api_secret", load_secret())
            except SecretError as e:
                raise ValueError(f"--api-port: the control API does not start without a strong secret: {e}") from None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServiceOptions:
        """From the options of :func:`add_service_options`."""
        return cls(redis_url=args.redis_url, metrics_port=args.metrics_port, api_port=args.api_port,
                   api_host=args.api_host, api_audit_log=args.api_audit_log, heartbeat_s=args.heartbeat)

    def __repr__(self) -> str:  # never show the secret (nor a Redis password)
        return (f"ServiceOptions(redis={'yes' if self.redis_url else 'no'}, metrics_port={self.metrics_port}, "
                f"api={self.api_host}:{self.api_port})")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class RunnerServices:
    """Bus, metrics and API around ``runner`` (a :class:`live.runner.LiveRunner`, not started
    yet or started); see the module docstring. ``mode``: ``paper`` or ``live``, in the session
    events. ``bus``: an :class:`~live.bus.InProcessBus` already subscribed to (so its
    subscribers see the session start), instead of the one built from ``options``. Attributes
    once started: :attr:`bus`, :attr:`metrics` (None without a port), :attr:`metrics_server`,
    :attr:`api_server`; :attr:`published` counts the events handed to the bus."""

    def __init__(self, runner: Any, options: ServiceOptions | None = None, *, mode: str = "paper",
                 bus: InProcessBus | None = None) -> None:
        self.runner, self.options, self.mode = runner, options or ServiceOptions(), mode
        if bus is not None and self.options.redis_url:
            raise ValueError("give either a bus or --redis-url, not both")
        self._given_bus = bus
        self.bus: InProcessBus | RedisStreamsBus | None = None
        self.metrics = None
        self.metrics_server = None
        self.api_server = None
        self.session_id = ""
        self._convert = ev.RunnerEvents(runner.run_id)
        self._positions: dict[str, float] = {}
        self._stats = stats_nb.stats_init_nb(0.0)
        self._beat = 0
        self._next_beat = 0.0
        self._feed_counts: dict[tuple[str, str], int] = {}  # (errors | retries, label) -> counted so far
        self.published = 0

    # --- start / stop ---------------------------------------------------------------------------
    def start(self) -> RunnerServices:
        """Start the runner (its lock, then restore or warm up) with its events going to the bus
        behind a ``session_started``, then serve metrics and API. A runner refused its state
        directory (another runner holds it) publishes and serves nothing."""
        from live.bus import InProcessBus, Outbox, RedisStreamsBus

        r, o = self.runner, self.options
        if o.redis_url:
            self.bus = RedisStreamsBus(o.redis_url, r.run_id, outbox=Outbox.for_store(r.store))
        else:
            self.bus = self._given_bus or InProcessBus()
        if o.metrics_port is not None:
            from live.metrics import RunnerMetrics

            self.metrics = RunnerMetrics()
        r.on_commit.append(self._on_commit)
        r.on_poll.append(self._on_poll)
        try:
            if r.stepper is None:
                r.start()
            self._announce()
            if self.metrics is not None:
                from live.metrics import serve_metrics

                self.metrics.sync_from_store(r.store)
                self.metrics_server = serve_metrics(self.metrics, o.metrics_port)
                log.info("metrics on http://%s:%d/metrics", self.metrics_server.host, self.metrics_server.port)
            if o.api_port is not None:
                from live.api import create_app, serve_api

                audit = o.api_audit_log or Path(r.store.state_dir) / "audit.log"
                app = create_app(r.store.state_dir, secret=o.api_secret, audit_log_path=audit)
                self.api_server = serve_api(app, host=o.api_host, port=o.api_port)
                log.info("control API on http://%s:%d (docs at /docs)", self.api_server.host, self.api_server.port)
        except BaseException as exc:
            if self.session_id:
                self.stop(f"failed to start: {type(exc).__name__}")
            else:
                self._unhook()
                self.bus.close()
                self.bus = None
            raise
        self._positions = dict(zip(r.symbols, r.stepper.positions.tolist(), strict=True))
        self._next_beat = time.monotonic() + o.heartbeat_s
        return self

    def _announce(self) -> None:
        """Publish ``session_started`` once, before any other event of the session."""
        if not self.session_id:
            r, now = self.runner, _now_ms()
            self.session_id = f"{r.run_id}-{now}"
            self._publish([ev.SessionStarted(runner=r.run_id, ts_ms=now, session_id=self.session_id,
                                             strategy=repr(r.strategy), symbols=list(r.symbols), mode=self.mode)])

    def _unhook(self) -> None:
        r = self.runner
        for hooks, hook in ((r.on_commit, self._on_commit), (r.on_poll, self._on_poll)):
            if hook in hooks:
                hooks.remove(hook)

    def stop(self, reason: str = "") -> None:
        """Announce the end of the session, flush the outbox (if Redis answers), close the
        endpoints and the bus, unhook from the runner. Safe to call twice."""
        r = self.runner
        if self.bus is None:
            return
        self._unhook()
        self._publish([ev.SessionStopped(runner=r.run_id, ts_ms=_now_ms(), session_id=self.session_id,
                                         reason=reason)])
        self.bus.flush(now=True)  # the session's last chance: Redis may be back within its retry wait
        if self.metrics is not None:
            self.metrics.outbox_depth.set(self.bus.outbox_depth)
        self._close_endpoints()
        self.bus.close()
        self.bus = None

    def _close_endpoints(self) -> None:
        for server in (self.api_server, self.metrics_server):
            if server is not None:
                server.close()
        self.api_server = self.metrics_server = None

    def __enter__(self) -> RunnerServices:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(self.runner.stop_reason or ("error" if exc[0] else "finished"))

    # --- the runner's hooks ---------------------------------------------------------------------
    def _publish(self, events: list[ev.Event]) -> None:
        assert self.bus is not None
        self.bus.publish_many(events)
        self.published += len(events)
        if self.metrics is not None:
            self.metrics.on_events_published(len(events), self.bus.outbox_depth)

    def _on_commit(self, dicts: list[dict[str, Any]], batch: BarBatch | None) -> None:
        """A committed batch: its typed events, then (after a bar) positions and performance."""
        r, m = self.runner, self.metrics
        self._announce()
        ts = _now_ms()
        out = [e for d in dicts for e in self._convert(d, ts)]
        if m is not None:
            for e in out:
                if e.kind == "fill":
                    m.on_fill(e.symbol)
                elif e.kind == "order_rejected":
                    m.on_rejection(e.reject_reason)
            if any(d["kind"] == "order" for d in dicts):
                m.sync_orders(r.store)
            m.paused.set(int(r.paused))
        if batch is not None:
            out = [ev.Bar(runner=r.run_id, ts_ms=ts, symbol=sym, bar_ms=batch.open_ms, open=float(batch.open[j]),
                          high=float(batch.high[j]), low=float(batch.low[j]), close=float(batch.close[j]),
                          volume=float(batch.volume[j])) for j, sym in enumerate(r.symbols)] + out
            out += self._position_events(out, ts)
            out.append(self._performance(batch, ts))
            if m is not None:
                st = r.stepper
                now_s = ts / 1000
                m.observe_step(bar_ms=batch.open_ms, equity=st.equity, cash=st.cash,
                               positions=dict(zip(r.symbols, st.positions.tolist(), strict=True)), prices=dict(zip(r.symbols, batch.close.tolist(), strict=True)),
                               bar_to_order_s=r.bar_to_order_s,
                               feed_lag_s=dict.fromkeys(r.symbols, now_s - (batch.open_ms + r.tf_ms) / 1000),
                               halted=st.halted, daily_block=bool(st.g[enums.G_DAY_BLOCKED]))
        elif m is not None and r.stepper is not None:
            m.halted.set(int(r.stepper.halted))
        if out:
            self._publish(out)

    def _position_events(self, out: list[ev.Event], ts: int) -> list[ev.Event]:
        """Opened / changed / closed for each symbol a fill of this bar moved, after its last fill."""
        r = self.runner
        last_fill = {e.symbol: e.trade_id for e in out if e.kind == "fill"}
        if not last_fill:
            return []
        st = r.stepper
        now = dict(zip(r.symbols, st.positions.tolist(), strict=True))
        entry = dict(zip(r.symbols, st.entry_prices.tolist(), strict=True))
        pnl = dict(zip(r.symbols, st.realized_pnl.tolist(), strict=True))
        events: list[ev.Event] = []
        for symbol, trade_id in last_fill.items():
            before, qty = self._positions.get(symbol, 0.0), now[symbol]
            cls = ev.PositionOpened if before == 0.0 else ev.PositionClosed if qty == 0.0 else ev.PositionChanged
            avg = entry[symbol] if qty != 0.0 and math.isfinite(entry[symbol]) else None
            events.append(cls(runner=r.run_id, ts_ms=ts, symbol=symbol, trade_id=trade_id, qty=qty,
                              avg_price=avg, realized_pnl=pnl[symbol]))
        self._positions = now
        return events

    def _performance(self, batch: BarBatch, ts: int) -> ev.PerformanceSnapshot:
        """Equity, drawdown from the core's peak equity, and the session's streaming statistics."""
        r = self.runner
        st = r.stepper
        stats_nb.stats_update_nb(self._stats, st.equity, bool((st.positions != 0.0).any()))
        bars = self._stats[stats_nb.S_BARS]
        res = stats_nb.stats_finalize_nb(self._stats, r.ann_factor, max(bars - 1.0, 1.0) / r.ann_factor)
        stats = {name: (float(res[i]) if math.isfinite(res[i]) else None) for name, i in _STATS}
        peak = float(st.g[enums.G_PEAK_EQUITY])
        drawdown = st.equity / peak - 1.0 if peak > 0 else 0.0
        return ev.PerformanceSnapshot(runner=r.run_id, ts_ms=ts, bar_ms=batch.open_ms, equity=st.equity,
                                      cash=st.cash, drawdown=drawdown, stats={"bars": float(bars), **stats})

    def _on_poll(self) -> None:
        """Heartbeat every ``heartbeat_s``; drain what waits in the outbox."""
        now = time.monotonic()
        if now >= self._next_beat:
            self._next_beat = now + self.options.heartbeat_s
            self._beat += 1
            self._publish([ev.Heartbeat(runner=self.runner.run_id, ts_ms=_now_ms(), session_id=self.session_id,
                                        seq=self._beat)])
        if self.bus is not None and self.bus.outbox_depth:
            self.bus.flush(max_batches=1)
            if self.metrics is not None:
                self.metrics.outbox_depth.set(self.bus.outbox_depth)
        if self.metrics is not None:
            self._count_feed_errors()

    def _count_feed_errors(self) -> None:
        """The feed's failed polls (exchange errors) and stream reconnects (retries), as counted
        by the feed since it was opened, and the broker's network errors by kind and retries by
        operation (broker mode)."""
        stats = getattr(self.runner.feed, "stats", None)
        counts: dict[tuple[str, str], int] = {}
        if isinstance(stats, dict):
            counts[("errors", "feed_poll")] = int(stats.get("errors", 0))
            counts[("retries", "feed_reconnect")] = int(stats.get("reconnects", 0))
        broker = self.runner.broker
        for which in ("errors", "retries"):
            for label, n in dict(getattr(broker, which, None) or {}).items():
                counts[(which, str(label))] = int(n)
        for (which, label), n in counts.items():
            seen = self._feed_counts.get((which, label), 0)
            if n > seen:
                metric = self.metrics.exchange_errors if which == "errors" else self.metrics.retries
                metric.labels(label).inc(n - seen)
                self._feed_counts[(which, label)] = n


#: the session statistics in a performance snapshot (names as ``framework.metrics``)
_STATS = (("total_return", stats_nb.R_TOTAL_RETURN), ("ann_volatility", stats_nb.R_ANN_VOL),
          ("sharpe", stats_nb.R_SHARPE), ("sortino", stats_nb.R_SORTINO),
          ("max_drawdown", stats_nb.R_MAX_DD), ("exposure_time", stats_nb.R_EXPOSURE))

__all__ = ["RunnerServices", "ServiceOptions", "add_service_options"]
