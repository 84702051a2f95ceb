"""Byte-range GETs from S3-compatible storage (boto3) and HTTP(S) servers (requests), failures by kind.

A store answers one question: the bytes [start, end) of an object, plus its total size. It does not
retry or cache (`media.remote` does both); it says what kind of failure it hit:

* `Unreadable` (final for that clip): missing object, access denied, bad URL.
* `Transient` (worth retrying): throttling, 5xx, timeouts, connection resets, a body cut short.

Reasons never carry credentials: URLs are named without userinfo or query string (`safe_url`), and
library messages, which can quote the full URL, are reduced to their exception type.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

S3_PREFIX = "s3://"
HTTP_PREFIXES = ("https://", "http://")
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0


class Unreadable(Exception):
    """The object cannot be read, and asking again will not change that."""


class Transient(Exception):
    """The request failed in a way that another attempt may not."""


@dataclass
class Fetched:
    data: bytes
    start: int  # offset of `data` in the object (0 when the server sent the whole object)
    size: int  # the object's total size


class ObjectStore(Protocol):
    def get(self, url: str, start: int, end: int) -> Fetched: ...


def is_remote(path: str) -> bool:
    return path.startswith((S3_PREFIX, *HTTP_PREFIXES))


def safe_url(url: str) -> str:
    """The URL as it may be stored or printed: no user:password@, no query string (a presigned URL's
    signature and credential), no fragment. Anything that is not a URL comes back unchanged.

    An s3:// URL names a bucket and a key, and a key may hold any character (`?`, `#`, `%`, spaces):
    it comes back whole, only a `user:password@` before the bucket (which no bucket name holds) dropped."""
    if url.startswith(S3_PREFIX):
        bucket, slash, key = url[len(S3_PREFIX) :].partition("/")
        return f"{S3_PREFIX}{bucket.rpartition('@')[2]}{slash}{key}"
    if not is_remote(url):
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


_URL_IN_TEXT = re.compile(r"(?:s3|https?)://[^\s'\"<>]+")


def redact(text: str) -> str:
    """`text` with every URL in it reduced to `safe_url` (for messages from elsewhere)."""
    return _URL_IN_TEXT.sub(lambda m: safe_url(m.group(0)), text)


# The variables an S3 client is made from: a change of any of them (a test, a bench) gets a new client.
_S3_CLIENT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_REGION", "AWS_ACCESS_KEY_ID")


def store_for(url: str) -> ObjectStore:
    """The store that reads `url`: one per scheme, process (clients are not shared across forks) and,
    for S3, endpoint and identity."""
    kind = "s3" if url.startswith(S3_PREFIX) else "http"
    key = (kind, os.getpid(), *(os.environ.get(name) for name in _S3_CLIENT_ENV if kind == "s3"))
    with _stores_lock:
        if key not in _stores:
            _stores[key] = S3Store() if kind == "s3" else HttpStore()
        return _stores[key]


_stores: dict[tuple, ObjectStore] = {}
_stores_lock = threading.Lock()


def _content_range_size(header: str | None) -> int | None:
    # "bytes 0-1023/4096" -> 4096 ("*" when the server does not know).
    total = (header or "").rpartition("/")[2]
    return int(total) if total.isdigit() else None


def split_s3_url(url: str) -> tuple[str, str]:
    bucket, _, key = url[len(S3_PREFIX) :].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise Unreadable(f"bad URL: {safe_url(url)} names no object (s3://bucket/key)")
    return bucket, key


# S3 error codes by kind (the rest of 4xx: final, with the code; the rest of 5xx: transient).
_S3_MISSING = {"NoSuchKey": "no such key", "NotFound": "no such key", "404": "no such key",
               "NoSuchBucket": "no such bucket"}  # fmt: skip
_S3_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
              "InvalidToken", "AllAccessDisabled", "AccountProblem"}  # fmt: skip
_S3_TRANSIENT = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                 "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequests"}  # fmt: skip


class S3Store:
    """S3 or a compatible server (MinIO, moto, R2) with the usual AWS variables and profiles; boto3
    reads `AWS_ENDPOINT_URL(_S3)`, `AWS_REGION`, `AWS_PROFILE` and the credential chain itself."""

    def __init__(self) -> None:
        import boto3
        from botocore.config import Config

        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        config = Config(
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            retries={"total_max_attempts": 1},  # `media.remote` retries, with one policy for S3 and HTTP
            s3={"addressing_style": "path"} if endpoint else None,  # a compatible server: path style, as the tables
            # Some compatible servers (rclone's) send the whole object's checksum with a range; checking
            # it against the range would fail every read past the first. A read asks for no checksum.
            response_checksum_validation="when_required",
        )
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint or None, config=config)

    def get(self, url: str, start: int, end: int) -> Fetched:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ParamValidationError

        bucket, key = split_s3_url(url)
        where = safe_url(url)
        try:
            response = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")
            data = response["Body"].read()
        except NoCredentialsError:
            raise Unreadable(f"access denied: no AWS credentials found for {where}") from None
        except ParamValidationError:
            raise Unreadable(f"bad URL: {where}") from None
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code == "InvalidRange":  # a range past the end: the object is empty
                raise Unreadable(f"empty file (0 bytes): {where}") from None
            if code in _S3_MISSING:
                raise Unreadable(f"file not found: {where} ({_S3_MISSING[code]})") from None
            if code in _S3_DENIED:
                raise Unreadable(f"access denied: {where} ({code})") from None
            if code in _S3_TRANSIENT or status >= 500 or status == 429:
                raise Transient(f"S3 {code or status}") from None
            raise Unreadable(f"cannot read {where}: S3 {code or status}") from None
        except (BotoCoreError, OSError) as exc:  # connection refused/reset, timeouts, a body cut short
            raise Transient(type(exc).__name__) from None
        except Exception as exc:  # urllib3's ProtocolError and kin, raised while reading the body
            if type(exc).__module__.startswith(("urllib3", "botocore", "http.client")):
                raise Transient(type(exc).__name__) from None
            raise
        size = _content_range_size(response.get("ContentRange")) or int(response.get("ContentLength") or len(data))
        return Fetched(data, start if response.get("ContentRange") else 0, size)


class HttpStore:
    """Plain HTTP(S) GETs with a Range header; a server that ignores ranges sends the whole object."""

    def __init__(self) -> None:
        import requests

        self.session = requests.Session()

    def get(self, url: str, start: int, end: int) -> Fetched:
        import requests

        where = safe_url(url)
        try:
            response = self.session.get(
                url, headers={"Range": f"bytes={start}-{end - 1}"}, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
            )
            status, data = response.status_code, response.content
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema):
            raise Unreadable(f"bad URL: {where}") from None
        except requests.exceptions.RequestException as exc:  # connection reset/refused, timeouts, cut bodies
            raise Transient(type(exc).__name__) from None
        if status == 206:
            size = _content_range_size(response.headers.get("Content-Range"))
            if size is None:
                raise Unreadable(f"cannot read {where}: HTTP 206 without the object's size")
            return Fetched(data, start, size)
        if status == 200:
            return Fetched(data, 0, len(data))
        if status == 416:
            raise Unreadable(f"empty file (0 bytes): {where}")
        if status in (404, 410):
            raise Unreadable(f"file not found: {where} (HTTP {status})")
        if status in (401, 403):
            raise Unreadable(f"access denied: {where} (HTTP {status})")
        if status in (408, 429) or status >= 500:
            raise Transient(f"HTTP {status}")
        raise Unreadable(f"cannot read {where}: HTTP {status}")
