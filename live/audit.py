"""An append-only, hash-chained audit log of control actions (JSON lines).

Each line is one JSON object: ``seq`` (1, 2, ...), ``ts`` (UTC, ISO), ``who`` (the token's
subject), ``action``, ``args``, ``result``, ``prev`` (the ``hash`` of the line before; 64 zeros
for the first) and ``hash`` (SHA-256 of the line's canonical JSON without ``hash``). Removing,
reordering or editing a line breaks the chain at that line or the next: :func:`verify_log`
names the first bad line. Cutting lines off the end leaves a valid shorter chain; keep a copy
of the last hash elsewhere if that matters. Callers pass no tokens or secrets: only the
subject and the action's own arguments are written.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
_FIELDS = ("seq", "ts", "who", "action", "args", "result", "prev", "hash")


class AuditChainError(ValueError):
    """The audit log is not an intact chain; ``line`` is the first bad line (1-based)."""

    def __init__(self, path: Path, line: int, why: str) -> None:
        super().__init__(f"{path}: line {line}: {why}")
        self.line = line


def _digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def verify_log(path: str | os.PathLike[str]) -> int:
    """Check the whole chain; return the number of lines, or raise :class:`AuditChainError`
    naming the first line that is not valid JSON, out of sequence, altered or unlinked."""
    path = Path(path)
    prev, count = GENESIS, 0
    with open(path, encoding="utf-8") as f:
        for count, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise AuditChainError(path, count, "not a JSON line") from None
            if not isinstance(record, dict) or set(record) != set(_FIELDS):
                raise AuditChainError(path, count, f"not an audit record (fields {', '.join(_FIELDS)})")
            if record["hash"] != _digest(record):
                raise AuditChainError(path, count, "edited: its hash does not match its content")
            if record["prev"] != prev:
                raise AuditChainError(path, count, "the chain is broken here: a line before it "
                                      "was removed, inserted or edited")
            if record["seq"] != count:
                raise AuditChainError(path, count, f"sequence number {record['seq']!r}, expected {count}")
            prev = record["hash"]
    return count


class AuditLog:
    """Appends records to a JSON-lines file (created if missing), thread-safe within a process.
    Opening checks the existing chain: an altered log is refused, never extended."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        if self.path.exists():
            self._seq = verify_log(self.path)
            self._prev = self._last_hash() if self._seq else GENESIS
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._seq, self._prev = 0, GENESIS

    def _last_hash(self) -> str:
        with open(self.path, encoding="utf-8") as f:
            *_, last = f
        return json.loads(last)["hash"]

    def append(self, who: str, action: str, args: dict[str, Any], result: Any) -> dict[str, Any]:
        """Write one record (fsynced) and return it."""
        with self._lock:
            record = {"seq": self._seq + 1, "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                      "who": who, "action": action, "args": args, "result": result, "prev": self._prev}
            record["hash"] = _digest(record)
            line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            self._seq, self._prev = record["seq"], record["hash"]
        return record
