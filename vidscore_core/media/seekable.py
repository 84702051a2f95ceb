"""The position bookkeeping shared by the file objects PyAV reads clips through."""

from __future__ import annotations

import io


class SeekableReader(io.RawIOBase):
    """A read-only, seekable raw file; subclasses give its `size` and implement `readinto` from `_pos`."""

    def __init__(self) -> None:
        super().__init__()
        self._pos = 0

    @property
    def size(self) -> int:
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            base = 0
        elif whence == io.SEEK_CUR:
            base = self._pos
        elif whence == io.SEEK_END:
            base = self.size  # read only here: a remote clip learns its size from its first read
        else:
            raise ValueError(f"bad whence {whence}")
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos
