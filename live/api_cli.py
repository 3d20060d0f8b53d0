"""``tradpal api token``, ``tradpal api serve`` and ``tradpal audit verify``.

Wired into ``framework.cli`` by :func:`register`; handlers return the exit code (0 ok, 1 an
audit log that fails verification, 2 bad usage or no usable secret).
"""

from __future__ import annotations

import argparse
import sys
import time

from live.auth import ROLES, SecretError, issue_token, load_secret, parse_ttl


def register(subparsers) -> None:
    """Add the ``api`` and ``audit`` command groups to the ``tradpal`` parser."""
    api = subparsers.add_parser("api", help="the control API: tokens, serving a state directory")
    api_sub = api.add_subparsers(dest="api_command", required=True)

    p = api_sub.add_parser("token", help="print an access token signed with $TRADPAL_API_SECRET "
                           "(or the file named by $TRADPAL_API_SECRET_FILE)")
    p.add_argument("--role", required=True, choices=ROLES,
                   help="read: GET endpoints; trade: also stop, pause, resume, approve, reject; "
                   "admin: also reset")
    p.add_argument("--ttl", default="1h", help="lifetime, e.g. 15m, 1h, 7d (default 1h)")
    p.add_argument("--subject", default="cli", help="who the token speaks for, written to the "
                   "audit log (default cli)")
    p.set_defaults(func=cmd_token)

    p = api_sub.add_parser("serve", help="serve the control API over a runner's state directory")
    p.add_argument("--state", required=True, metavar="DIR", help="the runner's state directory")
    p.add_argument("--audit-log", required=True, metavar="FILE", help="append-only audit log")
    p.add_argument("--port", type=int, default=8780, help="TCP port (default 8780)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.set_defaults(func=cmd_serve)

    audit = subparsers.add_parser("audit", help="the control API's audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    p = audit_sub.add_parser("verify", help="check the hash chain; exit 1 naming the first bad line")
    p.add_argument("--log", required=True, metavar="FILE", help="the audit log (JSON lines)")
    p.set_defaults(func=cmd_audit_verify)


def _secret() -> bytes | None:
    try:
        return load_secret()
    except SecretError as exc:
        print(f"tradpal: error: {exc}", file=sys.stderr)
        return None


def cmd_token(args: argparse.Namespace) -> int:
    secret = _secret()
    if secret is None:
        return 2
    ttl = parse_ttl(args.ttl)  # ValueError: reported by main as a usage error
    print(issue_token(secret, args.role, subject=args.subject, ttl_s=ttl))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from live.api import create_app, serve_api  # FastAPI only for the commands that serve

    secret = _secret()
    if secret is None:
        return 2
    server = serve_api(create_app(args.state, secret=secret, audit_log_path=args.audit_log),
                       host=args.host, port=args.port)
    print(f"control API on http://{server.host}:{server.port} (docs at /docs); Ctrl-C stops it",
          file=sys.stderr)
    try:
        while server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from live.audit import AuditChainError, verify_log

    try:
        n = verify_log(args.log)
    except AuditChainError as exc:
        print(f"tradpal: audit log NOT intact: {exc}", file=sys.stderr)
        return 1
    print(f"{args.log}: {n} records, chain intact")
    return 0
