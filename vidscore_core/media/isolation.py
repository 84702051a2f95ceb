"""Decoding in supervised worker processes: a decoder that aborts, segfaults or hangs costs one item.

FFmpeg, decord and friends are C/C++ code fed with untrusted files. Some files make them abort
(`std::bad_alloc`), crash or hang in code that Python cannot interrupt. Run in the caller's process,
one such file ends the whole run; so `IsolatedPool` runs a function (decode + resize) over items in
worker processes, hands each worker one item at a time, and watches them:

* the function returns → the item's value;
* it raises a media error (`DecodeError`, or any exception that carries a `reason` string: a
  verdict about the input) → the item's `error`, and the worker goes on;
* it raises anything else → `WorkerBug` in the caller, with the worker's traceback: a bug in our
  code must fail the step loudly, never become error rows;
* the worker dies (signal, exit) → the item's `error` says how, and a fresh worker takes its place;
* the item takes longer than `timeout_s` → the worker is killed, the item's `error` says so, and a
  fresh worker takes its place.

Results travel back pickled over a pipe (plain pickle, no shared memory that a dying worker could
leave behind). Workers are forked where the platform allows it (fast to start and to replace).
"""

from __future__ import annotations

import faulthandler
import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

START_METHOD = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
_PARENT_POLL_S = 1.0  # how often an idle worker checks that its parent is still alive
_MAX_IDLE_DEATHS = 3  # per worker slot: workers that die without an item mean a broken environment
_REASON_MAX = 500


def is_media_error(exc: BaseException) -> bool:
    """A verdict about the input (the row's `error`), as opposed to a bug (the step fails).

    `DecodeError` and any exception that carries a `reason` string (e.g. "not a video") are verdicts.
    """
    from vidscore_core.media.errors import DecodeError

    return isinstance(exc, DecodeError) or isinstance(getattr(exc, "reason", None), str)


def error_reason(exc: BaseException) -> str:
    """A short, single-line reason for a row's `error` column."""
    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    return " ".join(str(reason).split())[:_REASON_MAX]


class WorkerBug(RuntimeError):
    """A worker raised something that is not a media error: a bug, re-raised in the caller."""

    def __init__(self, key: Hashable, exc_type: str, message: str, worker_traceback: str) -> None:
        super().__init__(
            f"{exc_type}: {message} (while preparing item {key!r} in a worker process)\n"
            f"--- worker traceback ---\n{worker_traceback.rstrip()}"
        )
        self.key = key
        self.exc_type = exc_type
        self.worker_traceback = worker_traceback


@dataclass
class Outcome:
    """The result for one item: `value`, or `error` (why it could not be prepared)."""

    key: Hashable
    value: Any = None
    error: str | None = None


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "worker process vanished"
    if exitcode < 0:
        try:
            sig = signal.Signals(-exitcode)
            return f"worker process killed by {sig.name} ({signal.strsignal(sig) or sig.name})"
        except ValueError:
            return f"worker process killed by signal {-exitcode}"
    return f"worker process exited with status {exitcode}"


def _abandoned_decoders() -> bool:
    # read_frames' own timeout leaves the stuck decoder thread behind; such a worker retires.
    return any(t.name == "vidscore-decode" and t.is_alive() for t in threading.enumerate())


def _serve(conn: Connection, other_end: Connection | None, fn: Callable[[Any], Any], parent: int) -> None:
    """Worker loop: receive (key, item), send back ("ok" | "error" | "bug", key, ..., retiring)."""
    if other_end is not None:
        other_end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a handler inherited from the parent (the CLI's) is not ours
    # A decoder that crashes this process is an expected outcome the supervisor reports in the clip's row:
    # no "Fatal Python error" dump from a faulthandler inherited through fork (pytest enables one).
    faulthandler.disable()
    if "torch" in sys.modules:  # as DataLoader workers do: the parallelism is across workers
        sys.modules["torch"].set_num_threads(1)
    while True:
        while not conn.poll(_PARENT_POLL_S):
            if os.getppid() != parent:
                return
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if message is None:
            return
        key, item = message
        try:
            reply: tuple = ("ok", key, fn(item))
        except Exception as exc:
            if is_media_error(exc):
                reply = ("error", key, error_reason(exc))
            else:
                reply = ("bug", key, type(exc).__name__, str(exc), traceback.format_exc())
        retiring = _abandoned_decoders()
        try:
            data = pickle.dumps((*reply, retiring), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            data = pickle.dumps(
                ("bug", key, type(exc).__name__, f"result cannot be pickled: {exc}", traceback.format_exc(), True)
            )
            retiring = True
        try:
            conn.send_bytes(data)
        except OSError:
            return
        if retiring:
            return


class _Worker:
    def __init__(self, ctx, fn: Callable[[Any], Any]) -> None:
        parent_end, child_end = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_serve, args=(child_end, parent_end, fn, os.getpid()), name="vidscore-decode-worker", daemon=True
        )
        self.process.start()
        child_end.close()
        self.conn = parent_end
        self.key: Hashable | None = None
        self.busy = False
        self.started = 0.0

    def send(self, key: Hashable, item: Any) -> None:
        self.conn.send_bytes(pickle.dumps((key, item), protocol=pickle.HIGHEST_PROTOCOL))
        self.key, self.busy, self.started = key, True, time.monotonic()

    def stop(self, kill: bool = False) -> int | None:
        if kill and self.process.is_alive():
            self.process.kill()
        elif self.process.is_alive():
            try:
                self.conn.send_bytes(pickle.dumps(None))
            except OSError:
                pass
            self.process.join(1.0)
            if self.process.is_alive():
                self.process.kill()
        self.process.join(5.0)
        self.conn.close()
        return self.process.exitcode


class IsolatedPool:
    """Run `fn(item)` for submitted items in `workers` supervised processes (see the module doc).

    `fn` must be picklable when workers are spawned (a module-level function or a picklable object's
    bound method). Use as a context manager, `submit` items, and `collect` outcomes as they come.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        workers: int = 2,
        timeout_s: float | None = None,
        start_method: str | None = None,
    ) -> None:
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 or None, got {timeout_s}")
        self.fn = fn
        self.size = max(1, int(workers))
        self.timeout_s = timeout_s
        self._ctx = mp.get_context(start_method or START_METHOD)
        self._workers: list[_Worker] = []
        self._queue: deque[tuple[Hashable, Any]] = deque()
        self._idle_deaths = 0
        self.crashes = 0  # items lost to a dead worker
        self.hangs = 0  # items whose worker was killed for taking too long
        self.replaced = 0  # workers started to replace one that died, hung or retired

    def __enter__(self) -> IsolatedPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Items submitted and not yet collected."""
        return len(self._queue) + sum(w.busy for w in self._workers)

    def submit(self, key: Hashable, item: Any) -> None:
        self._queue.append((key, item))
        self._dispatch()

    def collect(self) -> list[Outcome]:
        """Block until at least one outcome is ready and return those ready; [] when nothing is pending."""
        while True:
            self._dispatch()
            busy = [w for w in self._workers if w.busy]
            if not busy:
                return []
            timeout = None
            if self.timeout_s is not None:
                now = time.monotonic()
                timeout = max(0.0, min(w.started + self.timeout_s for w in busy) - now)
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout))
            outcomes = []
            for worker in busy:
                if worker.conn in ready or worker.process.sentinel in ready:
                    outcome = self._receive(worker)
                    if outcome is not None:
                        outcomes.append(outcome)
            if self.timeout_s is not None:
                now = time.monotonic()
                for worker in [w for w in self._workers if w.busy and now - w.started >= self.timeout_s]:
                    self.hangs += 1
                    outcomes.append(
                        Outcome(
                            worker.key,
                            error=f"decoder hung: no result after {self.timeout_s:g} s (worker process killed)",
                        )
                    )
                    self._replace(worker, kill=True)
            if outcomes:
                return outcomes

    def close(self) -> None:
        """Stop every worker (items still pending are dropped)."""
        self._queue.clear()
        for worker in self._workers:
            worker.stop(kill=worker.busy)
        self._workers = []

    # -- internals ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while self._queue:
            worker = next((w for w in self._workers if not w.busy), None)
            if worker is None:
                if len(self._workers) >= self.size:
                    return
                worker = _Worker(self._ctx, self.fn)
                self._workers.append(worker)
            key, item = self._queue[0]
            if not worker.process.is_alive():
                self._idle_death(worker)
                continue
            try:
                worker.send(key, item)
            except OSError:  # died while idle: the item was never handed over
                self._idle_death(worker)
                continue
            self._queue.popleft()

    def _idle_death(self, worker: _Worker) -> None:
        self._idle_deaths += 1
        exitcode = worker.stop(kill=True)
        self._workers.remove(worker)
        if self._idle_deaths > _MAX_IDLE_DEATHS * self.size:
            raise RuntimeError(f"decode workers keep dying before any work ({describe_exit(exitcode)})")

    def _receive(self, worker: _Worker) -> Outcome | None:
        data = None
        closed = False
        if worker.conn.poll():
            try:
                data = worker.conn.recv_bytes()
            except (EOFError, OSError):
                closed = True
        if data is None:
            if not closed and worker.process.is_alive():
                return None  # woken without a message, and the worker lives: keep waiting
            key = worker.key
            worker.process.join(1.0)  # let a dying worker finish dying, for its exit status
            exitcode = self._replace(worker, kill=True)
            self.crashes += 1
            return Outcome(key, error=f"decoder crashed: {describe_exit(exitcode)}")
        kind, key, *rest = pickle.loads(data)
        retiring = rest.pop()
        worker.busy, worker.key = False, None
        if retiring:
            self._replace(worker, kill=False)
        if kind == "ok":
            self._idle_deaths = 0
            return Outcome(key, value=rest[0])
        if kind == "error":
            self._idle_deaths = 0
            return Outcome(key, error=rest[0])
        exc_type, message, worker_traceback = rest
        raise WorkerBug(key, exc_type, message, worker_traceback)

    def _replace(self, worker: _Worker, kill: bool) -> int | None:
        exitcode = worker.stop(kill=kill)
        self._workers.remove(worker)
        self.replaced += 1
        return exitcode  # a fresh worker starts on the next dispatch
