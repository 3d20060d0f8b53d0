"""API-key and HMAC-SHA256 signature checks, as Binance does them for SIGNED endpoints.

The signed payload is the query string followed by the request body, without the
``signature`` parameter, exactly as sent (no re-encoding). The timestamp is checked against the
*wall* clock (not the replay clock), since that is what a client's ``timestamp`` is.
Secrets are never logged. Key files are kept private (mode 0600) and never overwritten.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import time
from pathlib import Path

from .engine import ApiError, request_param

DEFAULT_RECV_WINDOW_MS = 5_000
MAX_RECV_WINDOW_MS = 60_000
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
    if not params.get("timestamp"):
        raise ApiError(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
    expected = hmac.new(secret.encode(), (query + body).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise ApiError(400, -1022, "Signature for this request is not valid.")
    ts = request_param(params, "timestamp", int)
    recv_window = request_param(params, "recvWindow", int, DEFAULT_RECV_WINDOW_MS)
    if recv_window > MAX_RECV_WINDOW_MS:
        raise ApiError(400, -1131, f"recvWindow must be less than {MAX_RECV_WINDOW_MS}")
    now = int(time.time() * 1000)
    if ts > now + MAX_AHEAD_MS:
        raise ApiError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    if now - ts > recv_window:
        raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
    return key


def load_api_keys(path: str | Path | None = None) -> dict[str, str]:
    """API keys the server accepts, ``{api_key: secret}``: from a JSON file (``{"KEY": "SECRET"}``,
    made private with :func:`make_private` first) and/or the environment variables
    ``TRADPAL_LOCAL_API_KEY`` / ``TRADPAL_LOCAL_SECRET``."""
    keys: dict[str, str] = {}
    if path is not None:
        make_private(path)
        keys.update(_read_keys(Path(path)))
    env_key, env_secret = os.environ.get("TRADPAL_LOCAL_API_KEY"), os.environ.get("TRADPAL_LOCAL_SECRET")
    if env_key and env_secret:
        keys[env_key] = env_secret
    return keys


def _read_keys(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or not data or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in data.items()):
        raise ValueError(f"{path}: expected a JSON object {{\"API_KEY\": \"SECRET\", ...}}")
    return data


def make_private(path: str | Path) -> int:
    """Make a key file readable by its owner only (mode 0600); return its previous mode."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        try:
            os.chmod(path, 0o600)
        except OSError as e:
            raise ValueError(f"{path} is readable by others (mode {mode:04o}) and cannot be made "
                             f"private (0600): {e.strerror}") from None
    return mode


def load_or_create_api_keys(path: str | Path) -> dict[str, str]:
    """The key pair saved in ``path`` (made private, mode 0600), or a new random pair written
    there with mode 0600 when the file does not exist. An existing file is never overwritten,
    so saved keys keep working across restarts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = {secrets.token_hex(16): secrets.token_hex(32)}
    try:  # O_EXCL: create, never truncate an existing file
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        make_private(path)
        return _read_keys(path)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        json.dump(keys, fh)
    return keys
