"""Exchange access shared by the downloader and the brokers: creating a ccxt exchange, reading
credentials, and retrying requests.

- :func:`create_exchange` builds a ccxt exchange with its rate limiter on, optionally pointed at
  another base URL (:func:`point_exchange_at`, e.g. the local exchange) and with credentials.
- :func:`load_credentials` reads API keys from a file (``--credentials-file``,
  ``TRADPAL_CREDENTIALS_FILE``: JSON or ``key=value``, private and outside any git work tree)
  or the environment (``TRADPAL_<ID>_API_KEY`` / ``TRADPAL_<ID>_SECRET``, ``TRADPAL_API_KEY`` /
  ``TRADPAL_API_SECRET``). The result never shows its values in a repr or an error;
  :class:`RedactingFilter` masks them in log records.
- :class:`RetryPolicy` and :func:`call_with_retries`: ccxt's ``NetworkError`` family
  (``RequestTimeout``, ``RateLimitExceeded``, ``DDoSProtection``, ``ExchangeNotAvailable``, ...)
  is retried with exponential backoff, optionally jittered, and at least as long as the
  server's ``Retry-After``; a ``Retry-After`` longer than the policy's ``max_delay_s`` ends the
  call at once. Other ccxt errors (bad symbol, authentication, a rejected order) are raised as
  they are: retrying cannot fix them.
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import random
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import ccxt

T = TypeVar("T")
RETRYABLE = (ccxt.NetworkError,)  # RequestTimeout, RateLimitExceeded, ExchangeNotAvailable, ...
JITTERS = ("none", "full", "decorrelated")
REPO_DIR = Path(__file__).resolve().parent.parent


class ExchangeAccessError(RuntimeError):
    """A request to an exchange failed for good: retries exhausted, or the server asked for a
    longer wait than the retry policy allows. Callers pass a subclass to
    :func:`call_with_retries` (``DownloadError``, ``BrokerError``) to say who failed."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: wait ``base_delay_s * factor**attempt`` (capped at ``max_delay_s``)
    after each failure, ``max_retries`` times, then give up. Delays in seconds.

    ``jitter`` spreads the waits of many clients so that they do not retry in step:
    ``"none"`` (the plain exponential delays), ``"full"`` (uniform in ``[0, delay]``) or
    ``"decorrelated"`` (uniform in ``[base_delay_s, previous wait * factor]``, capped).
    """

    max_retries: int = 5
    base_delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 60.0
    jitter: Literal["none", "full", "decorrelated"] = "none"

    def __post_init__(self) -> None:
        if not (isinstance(self.max_retries, numbers.Integral) and self.max_retries >= 0):
            raise ValueError(f"RetryPolicy: max_retries must be a whole number >= 0, got "
                             f"{self.max_retries!r} (--retries on the command line)")
        for name in ("base_delay_s", "factor", "max_delay_s"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and value >= 0 and value < float("inf")):
                flag = " (--max-delay on the command line)" if name == "max_delay_s" else ""
                raise ValueError(f"RetryPolicy: {name} must be a finite number >= 0, "
                                 f"got {value!r}{flag}")
        if self.jitter not in JITTERS:
            raise ValueError(f"RetryPolicy: jitter must be one of {', '.join(map(repr, JITTERS))}, "
                             f"got {self.jitter!r}")

    def delay(self, attempt: int) -> float:
        """The un-jittered wait after failure number ``attempt`` (0-based)."""
        return min(self.max_delay_s, self.base_delay_s * self.factor**attempt)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The successive waits, jittered with ``rng`` (default: a fresh ``random.Random``;
        pass a seeded one in tests). Endless: the caller counts the retries."""
        rng = rng or random.Random()
        previous = self.base_delay_s
        attempt = 0
        while True:
            if self.jitter == "full":
                wait = rng.uniform(0.0, self.delay(attempt))
            elif self.jitter == "decorrelated":
                high = max(self.base_delay_s, previous * self.factor)
                wait = min(self.max_delay_s, rng.uniform(self.base_delay_s, high))
            else:
                wait = self.delay(attempt)
            previous = wait
            attempt += 1
            yield wait


def retry_after_s(exchange: Any, error: Exception) -> float | None:
    """The server's Retry-After (seconds) when ``error`` came with a 429-style answer."""
    if exchange is None or not isinstance(error, (ccxt.DDoSProtection, ccxt.RateLimitExceeded)):
        return None
    headers = getattr(exchange, "last_response_headers", None) or {}
    value = headers.get("Retry-After") or headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))  # delay-seconds
    except ValueError:
        pass
    try:  # or an HTTP date (RFC 9110)
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def call_with_retries(
    fn: Callable[..., T],
    *args: Any,
    retry: RetryPolicy = RetryPolicy(),
    what: str = "request",
    exchange: Any = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    error: type[ExchangeAccessError] = ExchangeAccessError,
    on_error: Callable[[Exception], None] | None = None,
    **kwargs: Any,
) -> T:
    """Call ``fn(*args, **kwargs)``, retrying ccxt network errors with backoff.

    Args:
        what: a description for the error message ("fetch_ohlcv BTC/USDT 1h since ...").
        exchange: the ccxt exchange, to honour a ``Retry-After`` header.
        sleep: how to wait (inject a recorder in tests).
        rng: the random source of the policy's jitter.
        error: the exception class raised when giving up.
        on_error: called with every network error caught (each is followed by a retry, but the
            last), e.g. to count them.

    Raises:
        error: after ``retry.max_retries`` retries, naming ``what`` and the last error; or at
            once, without sleeping, when the server's ``Retry-After`` exceeds
            ``retry.max_delay_s``.
    """
    delays = retry.delays(rng)
    for attempt in range(retry.max_retries + 1):
        try:
            return fn(*args, **kwargs)
        except RETRYABLE as e:
            if on_error is not None:
                on_error(e)
            if attempt == retry.max_retries:
                raise error(
                    f"{what} failed {attempt + 1} times in a row; last error: "
                    f"{type(e).__name__}: {e}. Check the exchange URL and your connection, or "
                    "allow more attempts with RetryPolicy(max_retries=...) "
                    "(--retries on the command line)."
                ) from e
            wait = next(delays)
            server_wait = retry_after_s(exchange, e)
            if server_wait is not None and server_wait > retry.max_delay_s:
                raise error(
                    f"{what}: the exchange is rate limiting ({type(e).__name__}) and asks to wait "
                    f"{_duration(server_wait)} (Retry-After) before the next request, longer than "
                    f"the retry policy allows (max_delay_s={retry.max_delay_s:g} s). Try again "
                    f"after that wait, or allow longer waits with RetryPolicy(max_delay_s=...) "
                    f"(--max-delay on the command line)."
                ) from e
            sleep(max(wait, server_wait) if server_wait is not None else wait)
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    """``3600`` -> ``"3600 s (1 h 0 min)"``: seconds, and hours/minutes when that helps."""
    text = f"{seconds:g} s"
    if seconds >= 120:
        h, m = divmod(round(seconds) // 60, 60)
        text += f" ({h} h {m} min)" if h else f" ({m} min)"
    return text


# --- exchanges -------------------------------------------------------------------------------

def point_exchange_at(exchange: ccxt.Exchange, base_url: str) -> ccxt.Exchange:
    """Send every API request of a ccxt exchange to ``base_url`` (scheme and host), keeping
    each endpoint's path: ``https://api.binance.com/api/v3`` becomes ``{base_url}/api/v3``."""
    base = urlsplit(base_url)
    if not base.scheme or not base.netloc:
        raise ValueError(f"exchange URL {base_url!r} must look like http://127.0.0.1:8765")

    def rewrite(url: Any) -> Any:
        if isinstance(url, str):
            parts = urlsplit(url)
            return parts._replace(scheme=base.scheme, netloc=base.netloc).geturl()
        if isinstance(url, dict):
            return {k: rewrite(v) for k, v in url.items()}
        return url

    exchange.urls["api"] = rewrite(exchange.urls["api"])
    return exchange


class Credentials(dict):
    """API credentials ``{"apiKey", "secret"[, "password"]}``: a dict whose repr and str name
    the fields but never their values, so that logging or an error message cannot leak them.
    ``source`` says where they were read (a variable's or file's name, never a value)."""

    source: str = ""

    def __repr__(self) -> str:
        return f"Credentials({', '.join(f'{k}=***' for k in self)})"

    __str__ = __repr__

    def redact(self, text: str) -> str:
        """``text`` with every credential value replaced by ``***`` (for errors and logs that
        may quote a request or an exchange's answer)."""
        for value in sorted((v for v in self.values() if isinstance(v, str) and v), key=len, reverse=True):
            text = text.replace(value, "***")
        return text


class RedactingFilter(logging.Filter):
    """A logging filter that masks the values of ``credentials`` in every record it passes
    (install it on the handlers of a process that holds live credentials)."""

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self.credentials = credentials

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self.credentials.redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_FILE_KEYS = {"apiKey": "apiKey", "api_key": "apiKey", "secret": "secret", "api_secret": "secret",
              "password": "password"}
_FILE_FORMS = ('JSON {"apiKey": ..., "secret": ...} or {"<exchange id>": {"apiKey": ..., '
               '"secret": ...}}, or lines api_key=... and api_secret=...')


def _git_work_tree(path: Path) -> Path | None:
    """The git work tree ``path`` lies in (the nearest parent with a ``.git``), or None."""
    for parent in path.parents:
        if (parent / ".git").exists():
            return parent
    return None


def check_secret_file(path: str | Path, name: str) -> Path:
    """The resolved ``path`` of a file of secrets, once it is known to lie outside the
    repository and any git work tree (a secret there is one ``git add`` from being committed)
    and to be readable by its owner only (no group or other permission bits: ``chmod 600``).
    ``name`` is how errors call it (``--credentials-file``)."""
    resolved = Path(path).expanduser().resolve()
    tree = REPO_DIR if resolved == REPO_DIR or REPO_DIR in resolved.parents else _git_work_tree(resolved)
    if tree is not None:
        raise ValueError(f"{name} {path} is inside the repository or git work tree {tree}; keep "
                         "secrets outside it (e.g. ~/.config/tradpal/credentials.json, mode 600)")
    try:
        mode = stat.S_IMODE(resolved.stat().st_mode)
    except OSError as e:
        raise ValueError(f"{name} {path} cannot be read: {e.strerror}") from None
    if os.name == "posix" and mode & 0o077:
        raise ValueError(f"{name} {path} can be read or changed by other users (mode {mode:04o}); "
                         f"make it private first: chmod 600 {path}")
    return resolved


def _read_credentials_file(path: str, name: str, exchange_id: str) -> Credentials:
    """Credentials from a JSON or ``key=value`` file; errors name the file and the line or
    key, never a value read from it."""
    resolved = check_secret_file(path, name)
    try:
        text = resolved.read_text()
    except OSError as e:
        raise ValueError(f"{name} {path} cannot be read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{name} {path} is not text; expected {_FILE_FORMS}") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:  # the decoder's message may quote the file: say where, not what
            raise ValueError(f"{name} {path} is not valid JSON; expected {_FILE_FORMS}") from None
        if isinstance(data, dict) and exchange_id in data:
            data = data[exchange_id]
        elif isinstance(data, dict) and not set(data) & set(_FILE_KEYS):
            return Credentials()  # keys of other exchanges only
        if not isinstance(data, dict):
            raise ValueError(f"{name} {path}: expected {_FILE_FORMS}")
        pairs = [(key, value, f"key {i + 1}") for i, (key, value) in enumerate(data.items())]
    else:
        pairs = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"{name} {path}: line {number} is not key=value; expected {_FILE_FORMS}")
            pairs.append((key.strip(), value.strip().strip("'\""), f"line {number}"))
    creds = Credentials()
    for key, value, where in pairs:  # an error names the place, not the text: it may be a secret
        field = _FILE_KEYS.get(key)
        if field is None or not isinstance(value, str):
            raise ValueError(f"{name} {path}: {where} has an unknown key or a value that is not "
                             f"text; the keys are {', '.join(_FILE_KEYS)}")
        creds[field] = value
    creds.source = f"{name} {path}"
    return creds


def load_credentials(exchange_id: str, path: str | None = None) -> Credentials:
    """API credentials for ``exchange_id``, from the first of:

    1. the file ``path`` (``--credentials-file``), JSON (``{"apiKey": ..., "secret": ...}``, or
       several exchanges ``{"binance": {...}}``) or ``key=value`` lines (``api_key``,
       ``api_secret``, ``password``);
    2. the environment: ``TRADPAL_<ID>_API_KEY`` with ``TRADPAL_<ID>_SECRET`` (or
       ``TRADPAL_<ID>_API_SECRET``), then ``TRADPAL_API_KEY`` with ``TRADPAL_API_SECRET``;
    3. the file named by ``TRADPAL_CREDENTIALS_FILE``.

    A file must lie outside the repository and any git work tree and be private (mode 600):
    see :func:`check_secret_file`. Returns an empty :class:`Credentials` when none are
    configured. Errors name the variable or file, never a value read from it."""
    if path is not None:
        return _read_credentials_file(path, "--credentials-file", exchange_id)
    prefix = f"TRADPAL_{exchange_id.upper()}_"
    for key_var, secret_vars in ((prefix + "API_KEY", (prefix + "SECRET", prefix + "API_SECRET")),
                                 ("TRADPAL_API_KEY", ("TRADPAL_API_SECRET",))):
        key = os.environ.get(key_var)
        secret_var = next((v for v in secret_vars if os.environ.get(v)), None)
        if key and secret_var:
            creds = Credentials(apiKey=key, secret=os.environ[secret_var])
            creds.source = f"environment {key_var} / {secret_var}"
            return creds
    file_path = os.environ.get("TRADPAL_CREDENTIALS_FILE")
    if not file_path:
        return Credentials()
    return _read_credentials_file(file_path, "TRADPAL_CREDENTIALS_FILE", exchange_id)


def create_exchange(
    exchange_id: str,
    *,
    url: str | None = None,
    credentials: bool | dict[str, str] = False,
    timeout_ms: int | None = None,
    config: dict | None = None,
) -> ccxt.Exchange:
    """A ccxt exchange with its rate limiter on.

    Args:
        exchange_id: a ccxt id such as ``"binance"``.
        url: send all API requests to this base URL (e.g. the local exchange).
        credentials: True to read them with :func:`load_credentials`, or a dict
            ``{"apiKey", "secret"}``; public data needs none.
        timeout_ms: per-request timeout in milliseconds (ccxt's default is 10 000).
        config: more ccxt options.
    """
    if exchange_id not in ccxt.exchanges:
        raise ValueError(f"unknown ccxt exchange {exchange_id!r}; see ccxt.exchanges for the ids")
    cfg: dict[str, Any] = {"enableRateLimit": True, **(config or {})}
    if timeout_ms is not None:
        cfg["timeout"] = int(timeout_ms)
    if credentials is True:
        cfg.update(load_credentials(exchange_id))
    elif isinstance(credentials, dict):
        cfg.update(credentials)
    exchange = getattr(ccxt, exchange_id)(cfg)
    if url:
        point_exchange_at(exchange, url)
    return exchange


__all__ = ["RETRYABLE", "Credentials", "ExchangeAccessError", "RedactingFilter", "RetryPolicy",
           "call_with_retries", "check_secret_file", "create_exchange", "load_credentials",
           "point_exchange_at", "retry_after_s"]
