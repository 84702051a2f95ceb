"""An inbox on an S3 prefix (`VIDSCORE_INBOX=s3://bucket/inbox/`): list the meta objects dropped there,
move them to `processed/` or `rejected/` under the prefix. The sensor decides; this does the I/O.

An object appears whole when its upload completes, so "settled" only guards against a sender still
uploading a set of files; its content fingerprint is the object's ETag and size (no download).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from vidscore_core.media.object_stores import S3Store, split_s3_url


@dataclass(frozen=True)
class ObjectArrival:
    url: str  # s3://bucket/prefix/name
    name: str
    key: tuple[int, str]  # (last modified, ns; name): the order objects are handled in
    size: int
    fingerprint: str


class ObjectInbox:
    """The top level of an s3:// prefix, read and tidied with the clips' S3 client settings."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") + "/"
        self.bucket, _, self.prefix = self.url[len("s3://") :].partition("/")
        self.client = S3Store().client

    def scan(self, after: tuple[int, str]) -> list[ObjectArrival]:
        """Objects right under the prefix that arrived after `after`, oldest first."""
        found = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"
        )
        for page in pages:
            for item in page.get("Contents", []):
                name = item["Key"][len(self.prefix) :]
                if not name:
                    continue  # the prefix's own marker object
                modified = int(item["LastModified"].timestamp() * 1e9)
                key = (modified, name)
                if key > after:
                    fp = hashlib.sha256(f"{item['ETag']}:{item['Size']}".encode()).hexdigest()
                    found.append(ObjectArrival(f"{self.url}{name}", name, key, int(item["Size"]), fp))
        return sorted(found, key=lambda a: a.key)

    def exists(self, name: str) -> bool:
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix + name, MaxKeys=1)
        return any(item["Key"] == self.prefix + name for item in listed.get("Contents", []))

    def move(self, arrival: ObjectArrival, folder: str, name: str) -> str:
        """Copy the object to `<prefix>/<folder>/<name>` (a server-side copy) and delete the original."""
        bucket, key = split_s3_url(arrival.url)
        target = f"{self.prefix}{folder}/{name}"
        self.client.copy_object(Bucket=self.bucket, Key=target, CopySource={"Bucket": bucket, "Key": key})
        self.discard(arrival)
        return f"s3://{self.bucket}/{target}"

    def discard(self, arrival: ObjectArrival) -> None:
        bucket, key = split_s3_url(arrival.url)
        self.client.delete_object(Bucket=bucket, Key=key)

    def write_text(self, folder: str, name: str, text: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}{folder}/{name}", Body=text.encode("utf-8"))
