"""The input file's SHA-256, read in a thread while the run starts.

The run's record and its resume check name the input by its hash, which means reading the whole
file once more. Hashing releases the interpreter lock, so reading it while the main thread imports
scikit-learn and loads the version costs no wall time; a run that fails before it needs the hash
stops the thread at its next block instead of waiting for a large file's end. No Flask.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

#: Bytes hashed per call. The thread holds the interpreter lock only between calls, and while the
#: main thread runs Python (a run's start-up) taking it back can wait a switch interval (5 ms): with
#: 1 MB at a time, those waits made the hash of a 300 MB file end 0.2 s after the start-up did.
BLOCK = 16 << 20


class Digest:
    """A file's SHA-256 being computed; ``result()`` waits for it, ``cancel()`` stops it."""

    def __init__(self, path: Path):
        self._path = path
        self._stop = threading.Event()
        self._value: str | None = None
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="input-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        digest = hashlib.sha256()
        block = bytearray(BLOCK)  # one buffer, read into again and again: memory is one block
        try:
            with open(self._path, "rb", buffering=0) as fh, memoryview(block) as view:
                while not self._stop.is_set() and (read := fh.readinto(view)):
                    digest.update(view[:read])
        except OSError as exc:
            self._error = exc
            return
        self._value = digest.hexdigest()

    def result(self) -> str:
        """The hex digest; raise the ``OSError`` reading the file gave."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._value is None:
            raise RuntimeError("the input's hash was cancelled")
        return self._value

    def cancel(self) -> None:
        self._stop.set()
        self._thread.join()
