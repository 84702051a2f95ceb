"""`vidscore weights download` as a user runs it: where it writes, how much it takes, what an interrupt leaves.

Real subprocesses of the console script against a real HTTP server on 127.0.0.1 (or file:// URLs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_cli_scoring_commands import VIDSCORE, one_error_line, run
from ui_helpers import restore_sigint

from vidscore_core import weights

AESTHETIC_FILE = weights.get("aesthetic").relative_path


class TricklingServer:
    """Announces `size` bytes, sends `first` of them, then waits until the client goes away."""

    def __init__(self, size: int, first: int) -> None:
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                self.wfile.write(b"\0" * first)
                self.wfile.flush()
                server.stop.wait(60)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def trickle() -> Iterator[TricklingServer]:
    server = TricklingServer(size=3_000_000, first=200_000)
    yield server
    server.close()


def _parts(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob("*") if p.name.endswith(".part")]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDSCORE_", "DAGSTER_"))}
    env.update(HOME=str(tmp_path / "userhome"), VIDSCORE_HOME=str(tmp_path / "home"),
               VIDSCORE_MODELS_DIR=str(tmp_path / "models"), **extra)  # fmt: skip
    return env


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_download_removes_its_partial_file(tmp_path: Path, trickle: TricklingServer, sig) -> None:
    models = tmp_path / "models"
    proc = subprocess.Popen(
        [str(VIDSCORE), "weights", "download", "aesthetic", "--url", trickle.url("/aesthetic.pth")],
        cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=restore_sigint,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size > 0 for p in _parts(models)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    assert _parts(models, tmp_path) == []
    assert not (models / AESTHETIC_FILE).exists()


def test_download_is_capped_at_the_pinned_size(tmp_path: Path) -> None:
    # A mirror that never ends (file:///dev/zero) stops one byte past the official file's size.
    proc = run(["weights", "download", "aesthetic", "--url", "file:///dev/zero"], tmp_path)
    line = one_error_line(proc, 1)
    assert "more than the 3714759 bytes" in line and "nothing was installed" in line
    assert _parts(tmp_path) == [] and not (tmp_path / "models" / AESTHETIC_FILE).exists()


def test_download_announcing_too_much_reads_nothing(tmp_path: Path) -> None:
    server = TricklingServer(size=50_000_000, first=0)
    try:
        proc = run(["weights", "download", "aesthetic", "--url", server.url("/big.pth")], tmp_path)
    finally:
        server.close()
    line = one_error_line(proc, 1)
    assert "announces 50000000 bytes" in line and _parts(tmp_path) == []


# A registry whose aesthetic file is the test's bytes (the real file cannot be fetched here); the rest is the
# real console entry point, as `vidscore` runs it.
_PINNED_CLI = """
import dataclasses, hashlib, sys
from vidscore_core import weights
data = open(sys.argv[1], "rb").read()
spec = weights.REGISTRY["aesthetic"]
weights.REGISTRY["aesthetic"] = dataclasses.replace(
    spec, sha256=hashlib.sha256(data).hexdigest(), expected_size=len(data))
from vidscore_dagster.cli import main
main(sys.argv[2:], prog_name="vidscore")
"""


def test_download_never_writes_onto_an_override(tmp_path: Path) -> None:
    official = tmp_path / "official.pth"
    official.write_bytes(os.urandom(100_000))
    custom = tmp_path / "mine" / "custom.pth"
    custom.parent.mkdir()
    custom.write_bytes(b"my own fine-tuned head")
    env = _env(tmp_path, VIDSCORE_AESTHETIC_WEIGHTS=str(custom))
    proc = subprocess.run(
        [sys.executable, "-c", _PINNED_CLI, str(official), "weights", "download", "aesthetic",
         "--url", official.as_uri()],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    installed = tmp_path / "models" / AESTHETIC_FILE
    assert installed.read_bytes() == official.read_bytes()
    assert custom.read_bytes() == b"my own fine-tuned head"
    assert sorted(p.name for p in custom.parent.iterdir()) == ["custom.pth"]
    assert f"aesthetic: {installed} (sha256 verified)" in proc.stdout
    # The user learns that their override still wins.
    assert "VIDSCORE_AESTHETIC_WEIGHTS is set" in proc.stderr and str(custom) in proc.stderr
