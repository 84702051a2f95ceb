"""Weight-free shot detection with PySceneDetect's adaptive content detector (`scenedetect-headless`).

The detector compares each frame's HSV content with its neighbours' (a rolling average over two
frames each side) and cuts where the change stands out; its defaults are kept (adaptive threshold 3,
at least 15 frames per shot, minimum content change 15).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NOMINAL_FPS = 25.0  # timecodes need a rate; only frame numbers are used


def shot_starts(frames: Sequence[np.ndarray]) -> list[int]:
    """First frames of the shots after the first, from uint8 RGB frames of one clip."""
    from scenedetect import AdaptiveDetector, FrameTimecode

    detector = AdaptiveDetector()
    cuts: list[FrameTimecode] = []
    timecode = FrameTimecode(0, fps=NOMINAL_FPS)
    for i, frame in enumerate(frames):
        timecode = FrameTimecode(i, fps=NOMINAL_FPS)
        cuts += detector.process_frame(timecode, np.ascontiguousarray(frame[..., ::-1]))  # it reads BGR
    cuts += detector.post_process(timecode)
    return sorted({int(c.frame_num) for c in cuts if 0 < c.frame_num < len(frames)})


def shots_from_starts(starts: Sequence[int], num_frames: int) -> list[tuple[int, int]]:
    """(first, last) frame of each shot, given where shots after the first start."""
    bounds = [0, *starts, num_frames]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(len(bounds) - 1)]
