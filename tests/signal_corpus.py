"""Clips with known camera motion, object motion, brightness and sharpness, for the signal tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from vidscore_core.media.synth import camera_frames, object_frames, texture_image, write_clip

SIZE = (576, 320)  # the flow frame's size: no resize between the clip and the flow fields
FRAMES = 31  # camera-motion pairs (0, 15) and (0, 30); flow pairs (0, 10), (10, 20), (20, 30)
# Open-Sora's Farnebäck (full resolution, 3 pyramid levels) follows displacements up to ~15 px between
# frames 15 apart: the camera moves gently. name -> (content motion px/frame, zoom per frame, label).
CAMERA_CLIPS = {
    "static": ((0.0, 0.0), 1.0, "static"),
    "pan_right": ((-0.4, 0.0), 1.0, "pan right"),  # content moves left
    # Content moving right (camera panning left) with a downward component: the reference takes the
    # median of angles in [0, 360), which for a purely horizontal motion straddles 0/360.
    "pan_left": ((0.4, 0.15), 1.0, "pan left"),
    "tilt_up": ((0.0, 0.4), 1.0, "tilt up"),  # content moves down
    "tilt_down": ((0.0, -0.4), 1.0, "tilt down"),
    "zoom_in": ((0.0, 0.0), 1.005, "zoom in"),
    "zoom_out": ((0.0, 0.0), 1 / 1.005, "zoom out"),
}
SPRITE = (128, 96)  # width, height of the object moving over a still background
SPRITE_STEP = 4  # px per frame, to the right


def build(folder: Path) -> Path:
    """Write the corpus and its meta.csv; returns the meta file."""
    folder.mkdir(parents=True, exist_ok=True)
    texture = texture_image(720, 1280, seed=7)
    rows = []
    for name, (pan, zoom, _) in CAMERA_CLIPS.items():
        write_clip(folder / f"{name}.mp4", camera_frames(texture, *SIZE, FRAMES, pan, zoom))
        rows.append(name)
    background = texture_image(SIZE[1], SIZE[0], seed=8)
    sprite = texture_image(SPRITE[1], SPRITE[0], seed=9)
    write_clip(folder / "object.mp4", object_frames(background, sprite, FRAMES, (40, 100), SPRITE_STEP, 0))
    still = camera_frames(texture, *SIZE, FRAMES)
    write_clip(folder / "dark.mp4", (still.astype(np.float64) * 0.25).round().astype(np.uint8))
    write_clip(folder / "blurred.mp4", np.stack([cv2.GaussianBlur(f, (0, 0), 2.0) for f in still]))
    write_clip(folder / "short.mp4", still[:10])
    rows += ["object", "dark", "blurred", "short"]
    meta = pd.DataFrame({"path": [f"{name}.mp4" for name in rows], "text": rows})
    meta.to_csv(folder / "meta.csv", index=False)
    return folder / "meta.csv"
