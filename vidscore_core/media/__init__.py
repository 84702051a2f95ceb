"""Reading clips and images: verified frame counts, reference frame indices, probing."""

from vidscore_core.media.decode import (
    IMAGE_EXTENSIONS,
    DecodedFrames,
    DecodeError,
    FrameRequest,
    clamp_indices,
    frame_indices_at,
    is_image_path,
    read_frame_sets,
    read_frames,
    read_scaled_frames,
)
from vidscore_core.media.probe import probe, probe_many

__all__ = [
    "IMAGE_EXTENSIONS",
    "DecodeError",
    "DecodedFrames",
    "FrameRequest",
    "clamp_indices",
    "frame_indices_at",
    "is_image_path",
    "probe",
    "probe_many",
    "read_frame_sets",
    "read_frames",
    "read_scaled_frames",
]
