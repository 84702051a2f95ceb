"""An inbox on an S3 prefix (`VIDSCORE_INBOX=s3://bucket/inbox/`): the `ingest.inbox.Inbox` interface
over the objects right under the prefix, moved to `processed/` or `rejected/` under it.

An object appears whole when its upload completes, so "settled" only guards against a sender still
uploading a set of files; its content fingerprint is the object's ETag and size (no download).
"""

from __future__ import annotations

import hashlib

from vidscore_core.ingest.inbox import (
    PROCESSED,
    REJECTED,
    Arrival,
    Taken,
    is_candidate_name,
    processed_name,
    rejection_note,
)
from vidscore_core.media.object_stores import S3Store, split_s3_url


class ObjectInbox:
    """The top level of an s3:// prefix, read and tidied with the clips' S3 client settings."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") + "/"
        self.bucket, _, self.prefix = self.url[len("s3://") :].partition("/")
        self.client = S3Store().client

    def scan(self, after: tuple[int, str]) -> list[Arrival]:
        found = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"
        )
        for page in pages:
            for item in page.get("Contents", []):
                name = item["Key"][len(self.prefix) :]
                if not name or not is_candidate_name(name):  # "": the prefix's own marker object
                    continue
                # No `after` filter: S3 stamps whole seconds, so an object dropped in the second the
                # cursor holds (the same name again, or a name sorting before it) would be passed over
                # for good. Every object a tick handles leaves the top level, so what is listed is new.
                modified = int(item["LastModified"].timestamp() * 1e9)
                fp = hashlib.sha256(f"{item['ETag']}:{item['Size']}".encode()).hexdigest()
                found.append(Arrival(name, (modified, name), modified, int(item["Size"]), f"{self.url}{name}", fp))
        return sorted(found, key=lambda a: a.key)

    def fingerprint(self, arrival: Arrival) -> str:
        assert arrival.fingerprint is not None  # every listed object has one
        return arrival.fingerprint

    def reject(self, arrival: Arrival, reason: str) -> None:
        self._move(arrival, f"{REJECTED}/{arrival.name}")
        self._write_text(f"{REJECTED}/{arrival.name}.reason.txt", rejection_note(arrival.name, reason))

    def take(self, arrival: Arrival, fingerprint: str) -> Taken:
        name = f"{PROCESSED}/{processed_name(arrival.name, fingerprint)}"
        created = not self._exists(name)
        if created:
            self._move(arrival, name)
        else:
            self._delete(arrival)
        return Taken(f"{self.url}{name}", created)

    def _exists(self, name: str) -> bool:
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix + name, MaxKeys=1)
        return any(item["Key"] == self.prefix + name for item in listed.get("Contents", []))

    def _move(self, arrival: Arrival, name: str) -> None:
        """Copy the object to `<prefix>/<name>` (a server-side copy) and delete the original."""
        bucket, key = split_s3_url(arrival.location)
        self.client.copy_object(
            Bucket=self.bucket, Key=self.prefix + name, CopySource={"Bucket": bucket, "Key": key}
        )
        self._delete(arrival)

    def _delete(self, arrival: Arrival) -> None:
        bucket, key = split_s3_url(arrival.location)
        self.client.delete_object(Bucket=bucket, Key=key)

    def _write_text(self, name: str, text: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=text.encode("utf-8"))
