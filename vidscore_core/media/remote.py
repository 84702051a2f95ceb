"""A clip in object storage read by byte ranges, through a per-clip block cache with read-ahead.

The decoders open a clip several times in one pass (header, packet scan, seeks to keyframes); each
open gets its own `RemoteFile` position over one shared `RemoteClip`, so no byte is fetched twice.
A miss fetches the missing run of blocks from there, and the run grows while reads go forward
(read-ahead), so a sequential demux costs a few large GETs, not one per 32 KiB read.

Failures: `object_stores.Transient` is retried with exponential backoff, then becomes a retryable
`RemoteError` ("... (retryable)", which the scheduled backfill re-runs); `Unreadable` is a final one.
A server that ignores ranges sends the whole object once: it is kept and said once per host.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from vidscore_core.media.errors import DecodeError
from vidscore_core.media.object_stores import Transient, Unreadable, safe_url, store_for
from vidscore_core.media.seekable import SeekableReader

log = logging.getLogger(__name__)

# The first GET (4 MiB) holds an image, most short clips whole, or a faststart MP4's index and its first
# GOPs: one round trip for most training clips. A forward read then doubles its GETs up to 16 MiB, and
# a jump (a seek, e.g. to an index at the end of the file) starts again at one 1 MiB block, so a 20 MB
# clip costs 3 requests (what latency to S3 rewards).
BLOCK_SIZE = 1024 * 1024
FIRST_READ_BLOCKS = 4
MAX_READ_AHEAD_BLOCKS = 16
PREFETCH_GETS = 8  # GETs in flight at once when a decode's GOPs are fetched ahead
RETRY_ATTEMPTS = 5
RETRY_BASE_S = 0.2  # backoff: 0.2, 0.4, 0.8, 1.6 s between the attempts


class RemoteError(DecodeError):
    """A clip in object storage that could not be fetched; final for the clip (no other decoder can
    read bytes that did not arrive). `retryable`: the store failed transiently, a later run may not."""

    def __init__(self, reason: str, details: dict[str, str] | None = None, *, final: bool = True,
                 retryable: bool = False) -> None:  # fmt: skip
        super().__init__(reason, details, final=final)
        self.retryable = retryable

    def __reduce__(self):
        return (_rebuild_remote_error, (self.reason, self.details, self.retryable))


def _rebuild_remote_error(reason: str, details: dict[str, str], retryable: bool) -> RemoteError:
    return RemoteError(reason, details, retryable=retryable)


@dataclass
class FetchStats:
    size: int | None = None
    bytes_fetched: int = 0
    requests: int = 0
    retries: int = 0
    whole_object: bool = False  # the server ignored the range and sent everything


_ranges_unsupported_said: set[str] = set()


def _say_ranges_unsupported(url: str) -> None:
    host = safe_url(url).split("/")[2]
    if host not in _ranges_unsupported_said:
        _ranges_unsupported_said.add(host)
        log.warning("%s does not support range requests: its clips are read whole", host)


class RemoteClip:
    """One object's bytes, fetched on demand by blocks and kept for the life of this object."""

    def __init__(self, url: str, *, block_size: int = BLOCK_SIZE) -> None:
        self.url = url
        self.name = safe_url(url)
        self.block_size = block_size
        self.stats = FetchStats()
        self.failure: RemoteError | None = None  # the first fetch failure; it decides the clip's error
        self._blocks: dict[int, bytes] = {}
        self._coming: dict[int, Future] = {}  # blocks a prefetch GET is bringing
        self._next_block: int | None = None  # where a forward read continues
        self._ahead = FIRST_READ_BLOCKS
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()  # stats and failure: prefetch GETs run in threads

    @property
    def size(self) -> int:
        if self.stats.size is None:
            with self._lock:
                if self.stats.size is None:
                    self._fetch_blocks(0)
        assert self.stats.size is not None
        return self.stats.size

    def read_at(self, offset: int, n: int) -> bytes:
        """Up to n bytes at `offset` (fewer at the end of the object)."""
        end = min(offset + n, self.size)
        if offset >= end:
            return b""
        bs = self.block_size
        out = []
        with self._lock:
            for block in range(offset // bs, (end - 1) // bs + 1):
                if block in self._coming:
                    self._arrive(self._coming[block])
                if block not in self._blocks:
                    self._fetch_blocks(block)
                data = self._blocks[block]
                lo = max(offset - block * bs, 0)
                hi = min(end - block * bs, len(data))
                out.append(data[lo:hi])
        return b"".join(out)

    def open(self) -> RemoteFile:
        return RemoteFile(self)

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        """Start fetching the blocks of byte `ranges` not held yet, one GET per run of adjacent blocks, all
        at once: a decode that will jump between known GOPs pays one round trip, not one per jump, and
        decodes the first GOP while the later ones are still arriving (a read waits for its block)."""
        bs = self.block_size
        with self._lock:
            size = self.stats.size
            if size is None or self.stats.whole_object:
                return
            wanted = sorted(
                {b for start, end in ranges if end > start for b in range(start // bs, (min(end, size) - 1) // bs + 1)}
                - self._blocks.keys() - self._coming.keys()
            )
            runs: list[list[int]] = []
            for block in wanted:
                if runs and block == runs[-1][-1] + 1 and len(runs[-1]) < MAX_READ_AHEAD_BLOCKS:
                    runs[-1].append(block)
                else:
                    runs.append([block])
            if not runs:
                return
            pool = ThreadPoolExecutor(max_workers=min(len(runs), PREFETCH_GETS))
            for run in runs:
                future = pool.submit(self._get, run[0] * bs, (run[-1] + 1) * bs)
                self._coming.update(dict.fromkeys(run, future))
            pool.shutdown(wait=False)  # its threads end with their GETs

    def _arrive(self, future: Future) -> None:
        """Wait for a prefetch GET (under `_lock`) and keep its blocks; its failure is the read's."""
        try:
            got = future.result()
        finally:
            for block in [b for b, f in self._coming.items() if f is future]:
                del self._coming[block]
        bs = self.block_size
        for k in range(0, len(got.data), bs):
            self._blocks.setdefault((got.start + k) // bs, got.data[k : k + bs])

    def _fetch_blocks(self, first: int) -> None:
        # The first read is a large one; forward reads double the read-ahead, a jump (a seek) starts it over.
        if self._next_block is None:
            self._ahead = FIRST_READ_BLOCKS
        elif first == self._next_block:
            self._ahead = min(self._ahead * 2, MAX_READ_AHEAD_BLOCKS)
        else:
            self._ahead = 1
        count = self._ahead
        if self.stats.size is not None:
            last = (self.stats.size - 1) // self.block_size
            count = next((k for k in range(1, count)
                          if first + k > last or first + k in self._blocks or first + k in self._coming), count)  # fmt: skip
        start = first * self.block_size
        fetched = self._get(start, start + count * self.block_size)
        self.stats.size = fetched.size
        if fetched.start != start or len(fetched.data) > count * self.block_size:  # the range was ignored
            self.stats.whole_object = True
            _say_ranges_unsupported(self.url)
        for k in range(0, len(fetched.data), self.block_size):
            self._blocks.setdefault((fetched.start + k) // self.block_size, fetched.data[k : k + self.block_size])
        self._next_block = (fetched.start + len(fetched.data) + self.block_size - 1) // self.block_size

    def _get(self, start: int, end: int):
        if self.stats.size is not None:
            end = min(end, self.stats.size)
        store = store_for(self.url)
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                with self._stats_lock:
                    self.stats.requests += 1
                fetched = store.get(self.url, start, end)
            except Unreadable as exc:
                raise self._fail(str(exc), retryable=False) from None
            except Transient as exc:
                if attempt == RETRY_ATTEMPTS:
                    raise self._fail(
                        f"storage unavailable (retryable): {exc} after {attempt} attempts reading {self.name}",
                        retryable=True,
                    ) from None
                with self._stats_lock:
                    self.stats.retries += 1
                time.sleep(RETRY_BASE_S * 2 ** (attempt - 1))
                continue
            with self._stats_lock:
                self.stats.bytes_fetched += len(fetched.data)
            return fetched
        raise AssertionError("unreachable")

    def _fail(self, reason: str, *, retryable: bool) -> RemoteError:
        error = RemoteError(reason, retryable=retryable)
        with self._stats_lock:  # prefetch GETs fail in threads: the first failure stays the clip's
            if self.failure is None:
                self.failure = error
        return error


class RemoteFile(SeekableReader):
    """A seekable read-only file over a `RemoteClip` (what PyAV, PIL and decord read from)."""

    def __init__(self, clip: RemoteClip) -> None:
        super().__init__()
        self.clip = clip
        self.name = clip.name

    @property
    def size(self) -> int:
        return self.clip.size

    def readinto(self, buffer) -> int:
        data = self.clip.read_at(self._pos, len(buffer))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(self.clip.size - self._pos, 0)
        data = self.clip.read_at(self._pos, size)
        self._pos += len(data)
        return data


# The clips being decoded now, by URL: every open within one pass (or probe) shares one cache.
_held: dict[str, tuple[RemoteClip, int]] = {}
_held_lock = threading.Lock()


@contextlib.contextmanager
def held(url: str) -> Iterator[RemoteClip]:
    """The clip's cache for the duration of the block (nested holds share it)."""
    with _held_lock:
        clip, count = _held.get(url, (None, 0))
        clip = clip or RemoteClip(url)
        _held[url] = (clip, count + 1)
    try:
        yield clip
    finally:
        with _held_lock:
            clip, count = _held[url]
            if count == 1:
                del _held[url]
            else:
                _held[url] = (clip, count - 1)


def clip_for(url: str) -> RemoteClip:
    """The held clip for `url`, or a fresh one (a read outside any `held` block)."""
    with _held_lock:
        entry = _held.get(url)
    return entry[0] if entry else RemoteClip(url)


def remote_error(clip: RemoteClip, exc: BaseException) -> BaseException:
    """What a decode that failed on a remote clip reports: the fetch failure when there was one, since
    a decoder that was starved of bytes may call the file cut or corrupt."""
    return clip.failure if clip.failure is not None else exc
