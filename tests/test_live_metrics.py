"""The runner's Prometheus metrics (live/metrics.py) and the Grafana dashboard that plots them.

(``tests/test_metrics.py`` is the backtest's performance statistics.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from live.metrics import RunnerMetrics, serve_metrics
from live.store import ORDER_STATUSES, StateStore
from tests.api_fixtures import STATUS_COUNTS, fill_store

DASHBOARD = Path(__file__).resolve().parents[1] / "live" / "grafana" / "tradpal.json"


def samples(metrics: RunnerMetrics) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, parsed back from the exposition text."""
    text = metrics.exposition().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_observe_step_exports_account_positions_latency_and_risk():
    m = RunnerMetrics()
    m.observe_step(bar_ms=1_700_000_000_000, equity=10_500.0, cash=4_000.0,
                   positions={"BTC/USDT": 0.2, "ETH/USDT": -1.5}, prices={"BTC/USDT": 30_000.0,
                                                                        "ETH/USDT": 2_000.0},
                   bar_to_order_s=0.004, feed_lag_s={"BTC/USDT": 1.5}, halted=True)
    m.observe_step(bar_ms=1_700_000_060_000, equity=10_400.0, cash=4_000.0,
                   positions={"BTC/USDT": 0.2}, prices={"BTC/USDT": 29_500.0}, bar_to_order_s=0.3)
    s = samples(m)
    assert s[("tradpal_equity", ())] == 10_400.0 and s[("tradpal_cash", ())] == 4_000.0
    assert s[("tradpal_position", (("symbol", "BTC/USDT"),))] == 0.2
    assert s[("tradpal_exposure", (("symbol", "BTC/USDT"),))] == pytest.approx(0.2 * 29_500.0)
    assert s[("tradpal_exposure", (("symbol", "ETH/USDT"),))] == -1.5 * 2_000.0
    assert s[("tradpal_bars_total", ())] == 2
    assert s[("tradpal_last_bar_timestamp_seconds", ())] == 1_700_000_060.0
    assert s[("tradpal_bar_to_order_seconds_count", ())] == 2
    assert s[("tradpal_bar_to_order_seconds_sum", ())] == pytest.approx(0.304)
    # 0.004 falls in le=0.005 and up; 0.3 only from le=0.5 on
    assert s[("tradpal_bar_to_order_seconds_bucket", (("le", "0.005"),))] == 1
    assert s[("tradpal_bar_to_order_seconds_bucket", (("le", "0.25"),))] == 1
    assert s[("tradpal_bar_to_order_seconds_bucket", (("le", "0.5"),))] == 2
    assert s[("tradpal_feed_lag_seconds", (("symbol", "BTC/USDT"),))] == 1.5
    assert s[("tradpal_halted", ())] == 0  # the second bar cleared it
    assert s[("tradpal_daily_block", ())] == 0


def test_event_counters():
    m = RunnerMetrics()
    for symbol in ("BTC/USDT", "BTC/USDT", "ETH/USDT"):
        m.on_fill(symbol)
    m.on_rejection("min_notional")
    m.on_rejection("")
    m.on_exchange_error("NetworkError")
    m.on_retry("create_order")
    m.on_retry("create_order")
    m.on_events_published(5, outbox_depth=3)
    m.on_events_published()
    s = samples(m)
    assert s[("tradpal_fills_total", (("symbol", "BTC/USDT"),))] == 2
    assert s[("tradpal_fills_total", (("symbol", "ETH/USDT"),))] == 1
    assert s[("tradpal_order_rejections_total", (("reason", "min_notional"),))] == 1
    assert s[("tradpal_order_rejections_total", (("reason", "unknown"),))] == 1
    assert s[("tradpal_exchange_errors_total", (("kind", "NetworkError"),))] == 1
    assert s[("tradpal_retries_total", (("operation", "create_order"),))] == 2
    assert s[("tradpal_events_published_total", ())] == 6
    assert s[("tradpal_outbox_depth", ())] == 3


def test_sync_from_store_counts_orders_by_status(tmp_path):
    fill_store(tmp_path / "state")
    m = RunnerMetrics()
    with StateStore(tmp_path / "state", create=False) as store:
        m.sync_from_store(store)
    s = samples(m)
    for status in ORDER_STATUSES:
        assert s[("tradpal_orders", (("status", status),))] == STATUS_COUNTS.get(status, 0), status
    assert s[("tradpal_halted", ())] == 1  # the store's halted flag
    assert s[("tradpal_paused", ())] == 0


def test_a_position_without_a_price_is_refused():
    with pytest.raises(ValueError, match="prices is missing ETH/USDT"):
        RunnerMetrics().observe_step(bar_ms=0, equity=1.0, cash=1.0, positions={"ETH/USDT": 1.0},
                                     prices={})


def test_two_instances_do_not_collide():
    a, b = RunnerMetrics(), RunnerMetrics()
    a.on_fill("X/Y")
    assert ("tradpal_fills_total", (("symbol", "X/Y"),)) not in samples(b)


def test_the_dashboard_queries_only_exported_metrics_and_plots_them_all():
    dashboard = json.loads(DASHBOARD.read_text())
    exported = RunnerMetrics().metric_names()
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\btradpal_[a-z_]+\b", target["expr"]))
            assert names, (panel["title"], target["expr"])
            assert names <= exported, (panel["title"], names - exported)
            used |= names
    # and every metric has a panel (a histogram through any of its series)
    def family(name: str) -> str:
        return re.sub(r"_(total|bucket|sum|count)$", "", name)

    assert {family(n) for n in used} == {family(n) for n in exported}


def test_serve_metrics_on_a_free_port(tmp_path):
    m = RunnerMetrics()
    m.on_fill("BTC/USDT")
    server = serve_metrics(m, 0)
    try:
        assert server.host == "127.0.0.1"
        body = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text
        assert 'tradpal_fills_total{symbol="BTC/USDT"} 1.0' in body
    finally:
        server.close()
    with pytest.raises(ValueError, match="--metrics-port"):
        serve_metrics(m, -1)
