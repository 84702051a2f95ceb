"""The one exception a clip that cannot be read raises, and the decoder's "not mine" variant."""

from __future__ import annotations


class DecodeError(Exception):
    """A file that yields no trustworthy frames. `reason` is short and meant for an `error` column.

    `final`: the verdict is about the file itself (missing, empty, cut, no video stream, an image
    PIL cannot read, a decode that hung), not about one decoder's limits or one frame, so nothing
    is decoded again: a second opinion cannot make a cut file whole, and a file that lies in its
    header is exactly what crashes decord (a claimed 3e9 frames → std::bad_alloc).
    """

    def __init__(self, reason: str, details: dict[str, str] | None = None, *, final: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # Per-backend messages, for debugging; `reason` is what users see.
        self.details = dict(details or {})
        self.final = final

    def __reduce__(self):
        # Survives the trip back from a worker process with its details.
        return (_rebuild_decode_error, (type(self), self.reason, self.details, self.final))


def _rebuild_decode_error(cls: type[DecodeError], reason: str, details: dict[str, str], final: bool):
    return cls(reason, details, final=final)


class DecoderDeclined(DecodeError):
    """A decoder that does not take this file at all (its pixel format, or it is not installed),
    whatever frames are asked: the next decoder is simply the right one."""
