"""API-key and HMAC-SHA256 signature checks, as Binance does them for SIGNED endpoints.

The signed payload is the query string followed by the request body, without the
``signature`` parameter, exactly as sent (no re-encoding). The timestamp is checked against the
*wall* clock (not the replay clock), since that is what a client's ``timestamp`` is.
Secrets are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

from .engine import ApiError

DEFAULT_RECV_WINDOW_MS = 5_000
MAX_AHEAD_MS = 1_000


def _strip_signature(raw: str) -> tuple[str, str | None]:
    kept, sig = [], None
    for part in raw.split("&") if raw else []:
        if part.startswith("signature="):
            sig = part[len("signature="):]
        else:
            kept.append(part)
    return "&".join(kept), sig


def check_signed(api_keys: dict[str, str], headers, raw_query: str, raw_body: str,
                 params: dict[str, str]) -> str:
    """Return the API key of a correctly signed request, or raise :class:`ApiError`."""
    key = headers.get("X-MBX-APIKEY")
    if not key:
        raise ApiError(401, -2014, "API-key format invalid.")
    secret = api_keys.get(key)
    if secret is None:
        raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
    query, sig_q = _strip_signature(raw_query)
    body, sig_b = _strip_signature(raw_body)
    signature = sig_q or sig_b
    if not signature:
        raise ApiError(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
    if "timestamp" not in params:
        raise ApiError(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
    expected = hmac.new(secret.encode(), (query + body).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise ApiError(400, -1022, "Signature for this request is not valid.")
    try:
        ts = int(params["timestamp"])
        recv_window = int(params.get("recvWindow", DEFAULT_RECV_WINDOW_MS))
    except ValueError:
        raise ApiError(400, -1100, "Illegal characters found in parameter 'timestamp'.") from None
    now = int(time.time() * 1000)
    if ts > now + MAX_AHEAD_MS:
        raise ApiError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    if now - ts > min(recv_window, 60_000):
        raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
    return key


def load_api_keys(path: str | Path | None = None) -> dict[str, str]:
    """API keys the server accepts, ``{api_key: secret}``: from a JSON file (``{"KEY": "SECRET"}``)
    and/or the environment variables ``TRADPAL_LOCAL_API_KEY`` / ``TRADPAL_LOCAL_SECRET``."""
    keys: dict[str, str] = {}
    if path is not None:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError(f"{path}: expected a JSON object {{\"API_KEY\": \"SECRET\", ...}}")
        keys.update(data)
    env_key, env_secret = os.environ.get("TRADPAL_LOCAL_API_KEY"), os.environ.get("TRADPAL_LOCAL_SECRET")
    if env_key and env_secret:
        keys[env_key] = env_secret
    return keys


def generate_api_keys(path: Path) -> dict[str, str]:
    """Make a random key pair and write it to ``path`` (mode 0600); return it."""
    keys = {secrets.token_hex(16): secrets.token_hex(32)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(keys, fh)
    return keys
