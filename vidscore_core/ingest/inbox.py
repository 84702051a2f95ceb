"""The inbox's storage: where dropped meta files are listed, fingerprinted and moved to `processed/` or
`rejected/`. Two kinds, one interface (`Inbox`): a local folder (`FolderInbox`) and an s3:// prefix
(`ingest.object_inbox.ObjectInbox`). The Dagster sensor decides what to do with each file; this does
the I/O, so one loop serves both.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

PROCESSED = "processed"
REJECTED = "rejected"
# Names that writers use while a file is incomplete (browsers, rsync, curl -o x.part, editors).
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".download", ".swp", ".lock")


class Unsettled(Exception):
    """The file changed while it was being fingerprinted: it is still being written."""


@dataclass(frozen=True)
class Arrival:
    """A file (or object) at the top level of the inbox."""

    name: str
    key: tuple[int, str]  # (arrival time ns, name): the order files are handled in, and the cursor
    changed_ns: int  # when it was last written: it is taken once this is older than the settle time
    size: int
    location: str  # its local path or s3:// URL
    fingerprint: str | None = None  # known from the listing (an object's ETag and size), else read when taken


@dataclass(frozen=True)
class Taken:
    target: str  # the copy in processed/ that the ingest run reads
    created: bool  # False: the same content was already there (a duplicate)


class Inbox(Protocol):
    def scan(self, after: tuple[int, str]) -> list[Arrival]:
        """Files that arrived after `after`, oldest first (partial and dot names left out)."""
        ...

    def fingerprint(self, arrival: Arrival) -> str:
        """The content's fingerprint; FileNotFoundError when it was taken away, Unsettled when it changed."""
        ...

    def reject(self, arrival: Arrival, reason: str) -> None:
        """Move it to rejected/, with `<name>.reason.txt` beside it saying why."""
        ...

    def take(self, arrival: Arrival, fingerprint: str) -> Taken:
        """Move it to processed/ under its content's name (`processed_name`)."""
        ...


def is_candidate_name(name: str) -> bool:
    lower = name.lower()
    return not (name.startswith(".") or lower.endswith(PARTIAL_SUFFIXES) or lower.endswith(".reason.txt"))


def processed_name(name: str, fingerprint: str) -> str:
    """`<stem>-<8 hex of the content><suffix>`: the same content gets the same name."""
    path = Path(name)
    return f"{path.stem}-{fingerprint[:8]}{path.suffix.lower()}"


def rejection_note(name: str, reason: str) -> str:
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return f"{name} was rejected at {stamp}:\n{reason}\n"


class FolderInbox:
    """A local folder. Files are fingerprinted by sha256 of their bytes; the arrival time counts the
    ctime too, since `mv` keeps a file's old mtime but a rename into the inbox updates its ctime."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def scan(self, after: tuple[int, str]) -> list[Arrival]:
        found: list[Arrival] = []
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if not is_candidate_name(entry.name):
                    continue
                try:
                    if not entry.is_file():
                        continue  # processed/, rejected/, other folders
                    st = entry.stat()
                except FileNotFoundError:  # moved away while we listed
                    continue
                key = (max(st.st_mtime_ns, st.st_ctime_ns), entry.name)
                if key > after:
                    found.append(Arrival(entry.name, key, st.st_mtime_ns, st.st_size, entry.path))
        return sorted(found, key=lambda a: a.key)

    def fingerprint(self, arrival: Arrival) -> str:
        digest = hashlib.sha256()
        with open(arrival.location, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        st = os.stat(arrival.location)
        if (st.st_size, st.st_mtime_ns) != (arrival.size, arrival.changed_ns):
            raise Unsettled(arrival.name)  # still being written despite the settle time
        return digest.hexdigest()

    def reject(self, arrival: Arrival, reason: str) -> None:
        folder = self.folder / REJECTED
        folder.mkdir(parents=True, exist_ok=True)
        target = _unique_path(folder, arrival.name)
        os.replace(arrival.location, target)
        (folder / f"{target.name}.reason.txt").write_text(
            rejection_note(arrival.name, reason), encoding="utf-8"
        )

    def take(self, arrival: Arrival, fingerprint: str) -> Taken:
        processed = self.folder / PROCESSED
        processed.mkdir(parents=True, exist_ok=True)
        target = processed / processed_name(arrival.name, fingerprint)
        created = _place(Path(arrival.location), target)
        Path(arrival.location).unlink(missing_ok=True)
        return Taken(str(target), created)


def _unique_path(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/<stem>.<n><suffix>` when taken."""
    target = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 1
    while target.exists():
        target = folder / f"{stem}.{n}{suffix}"
        n += 1
    return target


def _place(source: Path, target: Path) -> bool:
    """Put a copy of `source` at `target` (a hard link when possible); False if it was already there."""
    try:
        os.link(source, target)
    except FileExistsError:
        return False
    except OSError:  # another filesystem, or links not supported
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copy2(source, tmp)
        os.replace(tmp, target)
    return True
