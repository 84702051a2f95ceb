"""Reading clips and images: verified frame counts, reference frame indices, probing."""

from vidscore_core.media.decode import DecodedFrames, read_frame_sets, read_frames, read_scaled_frames
from vidscore_core.media.errors import DecodeError
from vidscore_core.media.frames import FrameRequest, clamp_indices, frame_indices_at
from vidscore_core.media.images import IMAGE_EXTENSIONS, is_image_path
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
