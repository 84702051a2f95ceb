"""What reaches the terminal: vidscore's own lines, not what decoders write on the side."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class DecoderLog:
    """Where decoder messages went, and how many bytes this run added there."""

    path: Path
    start: int

    def written(self) -> int:
        try:
            return self.path.stat().st_size - self.start
        except OSError:
            return 0


@contextlib.contextmanager
def decoder_messages_to(path: Path) -> Iterator[DecoderLog]:
    """Send file descriptor 2 to `path` for a while: FFmpeg, decord and the decode worker processes write
    there (C code writes to the descriptor, and children inherit it). Python's `sys.stderr` (progress bars,
    warnings, `error:` lines) stays on the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    start = path.stat().st_size if path.exists() else 0
    saved = os.dup(2)
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    terminal = os.fdopen(os.dup(saved), "w", buffering=1, encoding=encoding, errors="backslashreplace")
    previous = sys.stderr
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    sys.stderr = terminal
    try:
        yield DecoderLog(path, start)
    finally:
        terminal.flush()
        sys.stderr = previous
        os.dup2(saved, 2)
        os.close(saved)
        terminal.close()
