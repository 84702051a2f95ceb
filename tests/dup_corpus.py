"""A small corpus with planted near-duplicates: exact copy, re-encode, resize, and unrelated clips."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from vidscore_core.media.synth import pan_frames, texture_image, write_clip

W, H, N = 320, 192, 24


def make_duplicate_corpus(folder: Path) -> Path:
    """original.mp4, exact_copy.mp4 (same bytes), reencoded.mp4 (CRF 35, same size),
    resized.mp4 (256×160), and two unrelated clips; returns meta.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = pan_frames(texture_image(H + 2 * N + 16, W + 2 * N + 16, seed=11), W, H, N, 2, 1)
    write_clip(folder / "original.mp4", frames)
    shutil.copyfile(folder / "original.mp4", folder / "exact_copy.mp4")
    write_clip(folder / "reencoded.mp4", frames, crf=35)
    small = np.stack([np.asarray(Image.fromarray(f).resize((256, 160), Image.BILINEAR)) for f in frames])
    write_clip(folder / "resized.mp4", small)
    for i, seed in enumerate((29, 47)):
        other = pan_frames(texture_image(H + 2 * N + 16, W + 2 * N + 16, seed=seed), W, H, N, -1, 2)
        write_clip(folder / f"different_{i}.mp4", other)
    names = ["original.mp4", "exact_copy.mp4", "reencoded.mp4", "resized.mp4", "different_0.mp4", "different_1.mp4"]
    meta = pd.DataFrame({"path": names, "text": [f"clip {n}" for n in names]})
    meta.to_csv(folder / "meta.csv", index=False)
    return folder / "meta.csv"
