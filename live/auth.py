"""Bearer-token authentication of the control API: HS256 JWTs with a role.

The secret comes from ``TRADPAL_API_SECRET`` or from the file named by
``TRADPAL_API_SECRET_FILE`` (one line; the file must not be readable by group or others) and
must be at least :data:`MIN_SECRET_BYTES` bytes that do not look like a placeholder. Make one
with ``python -c "import secrets; print(secrets.token_urlsafe(48))"``.

Roles, each including the ones before it: ``read`` (the GET endpoints) < ``trade``
(emergency stop, pause, resume, approve and reject orders) < ``admin`` (reset).

A token carries ``sub`` (who: written to the audit log), ``role``, ``typ`` (``access`` or
``refresh``; only access tokens open the API), ``iat``, ``exp`` and ``jti``. Every failure
(no token, bad signature, another algorithm such as ``none``, expired, unknown role or type,
a refresh token) is a bare :class:`AuthError` with the HTTP status only: callers learn nothing
about why.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jwt

SECRET_ENV = "TRADPAL_API_SECRET"
SECRET_FILE_ENV = "TRADPAL_API_SECRET_FILE"
MIN_SECRET_BYTES = 32
#: Fewest distinct byte values in a secret: refuses "aaaa...", "abab..." and the like.
MIN_DISTINCT_BYTES = 12
ROLES: tuple[str, ...] = ("read", "trade", "admin")
TOKEN_TYPES: tuple[str, ...] = ("access", "refresh")
ALGORITHM = "HS256"
_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class SecretError(ValueError):
    """No usable API secret: missing, unreadable or weak (the message says which, never the secret)."""


class AuthError(Exception):
    """A request that may not pass: ``status`` is 401 (not authenticated) or 403 (role too low)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True)
class Principal:
    """Who a verified access token speaks for."""

    subject: str
    role: str


def check_secret(secret: bytes, source: str = "the API secret") -> bytes:
    """Return ``secret`` if it is strong enough, else raise :class:`SecretError` naming ``source``."""
    if not isinstance(secret, bytes):
        raise SecretError(f"{source} must be bytes, got {type(secret).__name__}")
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(f"{source} is too short: {len(secret)} bytes, at least {MIN_SECRET_BYTES} "
                          "random bytes are needed (python -c \"import secrets; "
                          "print(secrets.token_urlsafe(48))\")")
    if len(set(secret)) < MIN_DISTINCT_BYTES:
        raise SecretError(f"{source} is too weak: it repeats a few characters; use random bytes "
                          "(python -c \"import secrets; print(secrets.token_urlsafe(48))\")")
    return secret


def load_secret(env: Mapping[str, str] | None = None) -> bytes:
    """The API secret from ``TRADPAL_API_SECRET`` or the file named by
    ``TRADPAL_API_SECRET_FILE`` (surrounding whitespace stripped), checked by :func:`check_secret`.
    Raises :class:`SecretError` if neither is set, both are, the file is unreadable or readable
    by group/others, or the secret is weak."""
    env = os.environ if env is None else env
    value, path = env.get(SECRET_ENV), env.get(SECRET_FILE_ENV)
    if value and path:
        raise SecretError(f"set only one of ${SECRET_ENV} and ${SECRET_FILE_ENV}")
    if value:
        return check_secret(value.strip().encode(), f"${SECRET_ENV}")
    if path:
        file = Path(path)
        try:
            mode = file.stat().st_mode
            data = file.read_bytes()
        except OSError as exc:
            raise SecretError(f"cannot read the API secret file ${SECRET_FILE_ENV}={path}: "
                              f"{exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretError(f"the API secret file {path} is readable by group or others; "
                              f"chmod 600 {path}")
        return check_secret(data.strip(), f"the API secret file {path}")
    raise SecretError(f"no API secret: set ${SECRET_ENV} or ${SECRET_FILE_ENV} (a file holding at "
                      f"least {MIN_SECRET_BYTES} random bytes)")


def parse_ttl(text: str) -> int:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"7d"`` or plain seconds -> seconds (> 0)."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", str(text))
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"--ttl must be a positive duration such as 90s, 15m, 1h or 7d, got {text!r}")
    return int(m.group(1)) * _TTL_UNITS[m.group(2) or "s"]


def issue_token(secret: bytes, role: str, *, subject: str = "cli", ttl_s: int = 3600,
                token_type: str = "access", now: float | None = None) -> str:
    """A signed token for ``role`` valid ``ttl_s`` seconds from ``now`` (default: the clock)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if token_type not in TOKEN_TYPES:
        raise ValueError(f"token_type must be one of {', '.join(TOKEN_TYPES)}, got {token_type!r}")
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s <= 0:
        raise ValueError(f"ttl_s must be a positive whole number of seconds, got {ttl_s!r}")
    if not isinstance(subject, str) or not subject:
        raise ValueError(f"subject must be a non-empty string, got {subject!r}")
    iat = int(time.time() if now is None else now)
    claims = {"sub": subject, "role": role, "typ": token_type, "iat": iat, "exp": iat + ttl_s,
              "jti": secrets.token_hex(8)}
    return jwt.encode(claims, check_secret(secret), algorithm=ALGORITHM)


def decode_token(secret: bytes, token: str, token_type: str = "access") -> Principal:
    """The principal of a valid token of ``token_type``; :class:`AuthError` (401) otherwise."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM],
                            options={"require": ["sub", "role", "typ", "iat", "exp"]})
    except jwt.PyJWTError:
        raise AuthError(401) from None
    sub, role = claims.get("sub"), claims.get("role")
    if claims.get("typ") != token_type or role not in ROLES or not isinstance(sub, str) or not sub:
        raise AuthError(401)
    return Principal(sub, role)


def authorize(secret: bytes, authorization: str | None, required_role: str) -> Principal:
    """Check an ``Authorization`` header value for an access token of at least ``required_role``:
    :class:`AuthError` 401 if it is not a valid access token, 403 if its role is too low."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401)
    principal = decode_token(secret, token.strip())
    if ROLES.index(principal.role) < ROLES.index(required_role):
        raise AuthError(403)
    return principal
