"""The secret channel: a stage's `secrets:` read at run time, and masked in everything it prints.

A secret's value never enters a spec, a fingerprint, the lock or a run record: only its source
(`env: VAR` or `file: PATH`) is in the spec, and the value is read just before the stage starts,
handed to its process (environment for `cmd`, the stdin payload for plugins) and replaced by
`***` in the stage log and in any error text the stage returns.
"""

from __future__ import annotations

import json
import os
import select
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO

from sluice.engine.errors import SluiceError
from sluice.engine.model import SecretRef, StageSpec

MASK = "***"
MAX_FILE_BYTES = 64 * 1024  # a token, a key or a small credentials file; anything larger is a mistake
_STREAM_CHUNK = 65536


class SecretMissing(SluiceError):
    """A declared secret whose source is not there when the stage is about to run."""


def describe(ref: SecretRef) -> str:
    return f"environment variable {ref.env}" if ref.env else f"file {ref.file}"


def read_secret(stage: str, ref: SecretRef, workspace: Path, environ: Mapping[str, str] | None = None) -> str:
    """The value of one secret; a SecretMissing naming the stage and the source otherwise."""
    environ = os.environ if environ is None else environ
    where = f"stage '{stage}' needs secret {ref.name} from {describe(ref)}"
    if ref.env:
        value = environ.get(ref.env)
        if value is None:
            raise SecretMissing(f"{where}, which is not set")
    else:
        path = Path(os.path.expanduser(ref.file))
        path = path if path.is_absolute() else workspace / path
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise SecretMissing(f"{where}, which cannot be read: {exc.strerror or exc}") from None
        if len(raw) > MAX_FILE_BYTES:
            raise SecretMissing(f"{where}, which is larger than {MAX_FILE_BYTES // 1024} KiB")
        # `echo TOKEN > file` adds a newline that is not part of the token.
        value = raw.decode(errors="replace").removesuffix("\n").removesuffix("\r")
    if not value:
        raise SecretMissing(f"{where}, which is empty")
    return value


def gather(stage: StageSpec, workspace: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every secret of `stage`, by name."""
    return {ref.name: read_secret(stage.id, ref, workspace, environ) for ref in stage.secrets}


class Masker:
    """Replaces secret values (and the escaped spellings a traceback or JSON dump gives them) by `***`."""

    def __init__(self, values: Iterable[str]):
        forms: set[str] = set()
        for value in values:
            forms.add(value)
            forms.update(line.strip() for line in value.splitlines() if len(line.strip()) >= 4)
            forms.add(json.dumps(value)[1:-1])
            forms.add(repr(value)[1:-1])
        # Longest first, so a value containing another is masked whole.
        self.forms = sorted((f for f in forms if f), key=len, reverse=True)
        self._bytes = [f.encode() for f in self.forms]
        self.longest = max((len(b) for b in self._bytes), default=0)

    def __bool__(self) -> bool:
        return bool(self.forms)

    def text(self, text: str) -> str:
        for form in self.forms:
            text = text.replace(form, MASK)
        return text

    def data(self, data: bytes) -> bytes:
        for form in self._bytes:
            data = data.replace(form, MASK.encode())
        return data

    def pump(self, source: IO[bytes], sink: IO[bytes]) -> Pump:
        """Copy `source` (a stage's output pipe) to `sink` (its log), masked, on a thread of its own."""
        return Pump(self, source, sink)


class Pump:
    """A stage's output, masked on its way to the log. A value split across two reads is still
    masked: the last `longest - 1` bytes wait for the next read."""

    def __init__(self, masker: Masker, source: IO[bytes], sink: IO[bytes]):
        self.masker, self.source, self.sink = masker, source, sink
        self._stop = threading.Event()
        self._stop_by = float("inf")
        self._thread = threading.Thread(target=self._copy, name="secret-mask", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        fd = self.source.fileno()
        keep = max(self.masker.longest - 1, 0)
        pending = b""
        while True:
            ready, _, _ = select.select([fd], [], [], 0.1)
            # Once the stage has ended, stop when nothing more comes, or after a while if a child it
            # left behind keeps writing.
            if self._stop.is_set() and (not ready or time.monotonic() > self._stop_by):
                break
            if not ready:
                continue
            chunk = os.read(fd, _STREAM_CHUNK)
            if not chunk:
                break
            pending = self.masker.data(pending + chunk)
            cut = len(pending) - keep
            if cut > 0:
                self.sink.write(pending[:cut])
                self.sink.flush()
                pending = pending[cut:]
        self.sink.write(self.masker.data(pending))
        self.sink.flush()

    def close(self) -> None:
        """Once the stage's process has exited: copy what is left, then stop."""
        self._stop_by = time.monotonic() + 2.0
        self._stop.set()
        self._thread.join()
        self.source.close()
