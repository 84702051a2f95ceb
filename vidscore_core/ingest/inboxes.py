"""Which inbox a location names: an s3:// prefix or a local folder (kept apart from `inbox`, which
`object_inbox` builds on, so the imports stay one-way)."""

from __future__ import annotations

from pathlib import Path

from vidscore_core.ingest.inbox import FolderInbox, Inbox
from vidscore_core.ingest.object_inbox import ObjectInbox


def open_inbox(location: str) -> Inbox:
    """The inbox at `location`: an s3:// prefix, or a local folder (created if missing)."""
    if location.startswith("s3://"):
        return ObjectInbox(location)
    return FolderInbox(Path(location))
