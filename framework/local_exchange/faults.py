"""Fault injection for the local exchange, switchable per test.

Request faults apply to the next ``count`` requests whose path starts with ``path`` (and whose
method is ``method``, when given); ``count=None`` means until :meth:`Faults.clear`. Control
endpoints (``/_tradpal/...``) are never affected. Market faults (partial fills, candle gaps)
stay on until cleared.

Over HTTP (with the control token, see :mod:`.server`): ``POST /_tradpal/faults`` with a JSON
body such as ``{"kind": "http_error", "status": 503, "count": 2}`` (the keyword arguments of the
method of the same name) and ``DELETE /_tradpal/faults`` to clear. Arguments are checked when a
fault is added, so a bad one is refused at once instead of garbling a later answer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .checks import SettingError, number, one_of

REQUEST_FAULTS = ("latency", "http_error", "rate_limit", "drop_connection", "lose_response")
HTTP_METHODS = ("GET", "POST", "DELETE", "PUT")
MAX_LATENCY_S = 3600.0


@dataclass
class FaultRule:
    kind: str
    count: int | None
    path: str | None = None
    method: str | None = None
    seconds: float = 0.0  # latency
    status: int = 503  # http_error
    retry_after: float | None = None  # rate_limit / http_error: Retry-After header, seconds

    def matches(self, method: str, path: str) -> bool:
        return (self.path is None or path.startswith(self.path)) and (
            self.method is None or self.method.upper() == method)


@dataclass
class FaultDecision:
    """What the server does to one request: wait, then maybe answer with an error or drop."""

    delay_s: float = 0.0
    action: FaultRule | None = None  # http_error / rate_limit / drop_connection / lose_response


class Faults:
    """The switchboard. Thread-safe; every method returns ``self`` so calls can be chained."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self.partial_fill_fraction: float | None = None
        self.candle_gaps: list[tuple[int, int, str | None]] = []

    def _add(self, rule: FaultRule) -> Faults:
        # checked here, not when a request meets the rule: a bad value would garble that answer
        if rule.count is not None:
            number(rule.count, "count", low=1, integer=True)
        if rule.path is not None and not (isinstance(rule.path, str) and rule.path.startswith("/")):
            raise SettingError("path", "None or a path starting with '/'", rule.path)
        if rule.method is not None:
            rule.method = one_of(rule.method.upper() if isinstance(rule.method, str) else rule.method,
                                 "method", HTTP_METHODS)
        if rule.retry_after is not None:
            number(rule.retry_after, "retry_after", low=0)
        with self._lock:
            self._rules.append(rule)
        return self

    def latency(self, seconds: float, *, count: int | None = None, path: str | None = None,
                method: str | None = None) -> Faults:
        """Delay matching requests by ``seconds`` before answering."""
        return self._add(FaultRule("latency", count, path, method,
                                   seconds=number(seconds, "seconds", low=0, high=MAX_LATENCY_S)))

    def http_error(self, status: int = 503, *, count: int | None = 1, path: str | None = None,
                   method: str | None = None, retry_after: float | None = None) -> Faults:
        """Answer with HTTP ``status`` (400 to 599; a 5xx answers with a plain-text body, like a
        proxy)."""
        status = number(status, "status", low=400, high=599, integer=True)
        return self._add(FaultRule("http_error", count, path, method, status=status,
                                   retry_after=retry_after))

    def rate_limit(self, *, retry_after: float = 1.0, count: int | None = 1,
                   path: str | None = None, method: str | None = None) -> Faults:
        """Answer HTTP 429 with ``Retry-After`` (seconds) and Binance's -1003 body."""
        return self._add(FaultRule("rate_limit", count, path, method, status=429,
                                   retry_after=retry_after))

    def drop_connection(self, *, count: int | None = 1, path: str | None = None,
                        method: str | None = None) -> Faults:
        """Close the connection without handling the request or answering."""
        return self._add(FaultRule("drop_connection", count, path, method))

    def lose_response(self, *, count: int | None = 1, path: str | None = "/api/v3/order",
                      method: str | None = "POST") -> Faults:
        """Handle the request (e.g. place the order), then close the connection unanswered."""
        return self._add(FaultRule("lose_response", count, path, method))

    def partial_fills(self, fraction: float | None = 0.5) -> Faults:
        """Fill at most ``fraction`` of an order's quantity per match (None: off). Market
        orders fill that share and expire, as on Binance when the book runs dry."""
        if fraction is not None:
            fraction = number(fraction, "fraction", low=0, high=1, low_open=True, high_open=True)
        self.partial_fill_fraction = fraction
        return self

    def candle_gap(self, start_ms: int, end_ms: int, *, symbol: str | None = None) -> Faults:
        """Leave out candles opened in ``[start_ms, end_ms)`` from klines (all symbols, or one
        market id / unified symbol)."""
        start_ms = number(start_ms, "start_ms", integer=True)
        end_ms = number(end_ms, "end_ms", low=start_ms + 1, integer=True)
        if symbol is not None and not isinstance(symbol, str):
            raise SettingError("symbol", "None or a symbol such as 'BTC/USDT'", symbol)
        sym = symbol.replace("/", "") if symbol else None
        with self._lock:
            self.candle_gaps.append((start_ms, end_ms, sym))
        return self

    def clear(self) -> Faults:
        """Switch every fault off."""
        with self._lock:
            self._rules.clear()
            self.candle_gaps.clear()
            self.partial_fill_fraction = None
        return self

    def configure(self, spec: dict) -> Faults:
        """Add a fault from a JSON-like dict ``{"kind": ..., **kwargs}`` (the HTTP control API)."""
        if not isinstance(spec, dict):
            raise SettingError("fault", 'a JSON object such as {"kind": "http_error", "status": 503}', spec)
        spec = dict(spec)
        kind = spec.pop("kind", None)
        methods = {"latency": self.latency, "http_error": self.http_error,
                   "rate_limit": self.rate_limit, "drop_connection": self.drop_connection,
                   "lose_response": self.lose_response, "partial_fills": self.partial_fills,
                   "candle_gap": self.candle_gap}
        if kind not in methods:
            raise ValueError(f"unknown fault kind {kind!r}; use one of {sorted(methods)}")
        return methods[kind](**spec)

    def decide(self, method: str, path: str) -> FaultDecision:
        """Consume the rules that apply to this request."""
        decision = FaultDecision()
        with self._lock:
            for rule in list(self._rules):
                if not rule.matches(method, path):
                    continue
                if rule.kind == "latency":
                    decision.delay_s += rule.seconds
                elif decision.action is None:
                    decision.action = rule
                else:
                    continue
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count == 0:
                        self._rules.remove(rule)
        return decision

    def hides(self, market_id: str, open_ms: int) -> bool:
        """True when a candle gap fault hides this candle."""
        return any(a <= open_ms < b and (s is None or s == market_id)
                   for a, b, s in self.candle_gaps)

    def describe(self) -> dict:
        with self._lock:
            return {"rules": [r.__dict__.copy() for r in self._rules],
                    "partial_fill_fraction": self.partial_fill_fraction,
                    "candle_gaps": list(self.candle_gaps)}
