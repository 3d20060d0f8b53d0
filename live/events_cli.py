"""``tradpal events tail`` and ``tradpal events journal``: the shipped bus consumers.

Wired into ``framework.cli`` by :func:`register`; handlers return the exit code (0 ok, 1 Redis
unreachable, 2 bad usage). The Redis URL may hold a password: it is never printed.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable

import redis


def register(subparsers) -> None:
    """Add the ``events`` command group to the ``tradpal`` parser."""
    events = subparsers.add_parser("events", help="watch a live runner's events (Redis Streams)")
    sub = events.add_subparsers(dest="events_command", required=True)

    p = sub.add_parser("tail", help="print events as they are published, one line each")
    _common(p)
    p.add_argument("--group", help="read through this consumer group (acknowledging each event); "
                   "default: plain reading, nothing acknowledged")
    p.add_argument("--from-start", action="store_true", help="begin with the oldest event kept, not the next one")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("journal", help="write a runner's events to Parquet files for research")
    _common(p)
    p.add_argument("--group", default="journal", help="consumer group (default journal)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory of events-*.parquet files "
                   "(and processed.sqlite, the ids written)")
    p.set_defaults(func=cmd_journal)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", required=True, metavar="URL", help="redis://[:password@]host:port[/db]")
    p.add_argument("--runner", metavar="NAME", help="the runner's name (default: every runner's stream; "
                   "required by journal)")
    p.add_argument("--consumer", default=None, help="consumer name within the group (default host-pid)")
    p.add_argument("--max-events", type=int, metavar="N", help="stop after N events (default: run until Ctrl-C)")


def _runners(client: redis.Redis, runner: str | None) -> list[str]:
    from live.bus import stream_key

    if runner is not None:
        return [runner]
    return sorted(k.split(":")[1] for k in client.scan_iter(match=stream_key("*"), _type="STREAM"))


def _budget(max_events: int | None) -> Callable[[int], bool]:
    """A counter: ``spent(n)`` adds n and says whether ``--max-events`` is reached."""
    if max_events is not None and max_events < 1:
        raise ValueError("--max-events must be at least 1")
    seen = [0]

    def spent(n: int) -> bool:
        seen[0] += n
        return max_events is not None and seen[0] >= max_events
    return spent


def _consumer_name(given: str | None) -> str:
    return given or f"{socket.gethostname()}-{os.getpid()}"


def _tail(args: argparse.Namespace) -> int:
    from live.bus import StreamConsumer, redis_client, stream_key
    from live.events import describe

    spent = _budget(args.max_events)
    client = redis_client(args.redis_url, timeout_s=5.0)
    runners = _runners(client, args.runner)
    if args.group is None:
        if not runners:
            print("no runner streams yet; pass --runner NAME to wait for one", file=sys.stderr)
            return 1
        last = {stream_key(r): "0" if args.from_start else "$" for r in runners}
        while True:
            for stream, messages in client.xread(last, block=1000, count=100) or []:
                for mid, fields in messages:
                    last[stream] = mid
                    for line in _lines(fields):
                        print(line, flush=True)
                        if spent(1):
                            return 0
    if args.runner is None:
        print("--group needs --runner NAME", file=sys.stderr)
        return 2
    consumer = StreamConsumer(args.redis_url, args.runner, args.group, _consumer_name(args.consumer),
                              start_id="0" if args.from_start else "$")
    while not spent(consumer.poll(lambda event: print(describe(event), flush=True), count=100)):
        pass
    return 0


def _lines(fields: dict[str, str]) -> list[str]:
    """An entry's events, one line each (an unreadable one says so)."""
    from live.events import describe, from_dict, parse_entry

    try:
        items = parse_entry(fields.get("e", ""))
    except ValueError as exc:
        return [f"(unreadable entry: {exc})"]
    lines = []
    for raw in items:
        try:
            lines.append(describe(from_dict(raw)))
        except ValueError as exc:
            lines.append(f"(unreadable event: {exc})")
    return lines


def _no_url(exc: Exception) -> str:
    # redis-py names host and port in connection errors, not the password; keep it that way
    return str(exc).split("@")[-1]


def _journal(args: argparse.Namespace) -> int:
    from pathlib import Path

    from live.bus import ParquetJournal, ProcessedIds, StreamConsumer

    if args.runner is None:
        print("error: journal needs --runner NAME", file=sys.stderr)
        return 2
    spent = _budget(args.max_events)
    journal = ParquetJournal(args.out)
    processed = ProcessedIds(Path(args.out) / "processed.sqlite")
    consumer = StreamConsumer(args.redis_url, args.runner, args.group, _consumer_name(args.consumer),
                              processed=processed, claim_idle_ms=10_000)
    while not spent(consumer.poll(journal.handle, count=1000, on_batch=journal.write)):
        pass
    print(f"{consumer.handled} events written to {journal.files} files in {args.out}", file=sys.stderr)
    return 0


def _with_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command's errors as exit codes: bad input 2, Redis trouble 1 (the URL's password never
    shown), Ctrl-C a clean stop."""
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except redis.RedisError as exc:
            print(f"error: Redis: {type(exc).__name__}: {_no_url(exc)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
    return run


cmd_tail = _with_errors(_tail)
cmd_journal = _with_errors(_journal)
