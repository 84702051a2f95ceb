"""Scores derived from stored CLIP frame embeddings: aesthetic (MLP) and matching (text tower)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from vidscore_core.ingest.meta import has_caption
from vidscore_core.models.aesthetic import AestheticMLP
from vidscore_core.models.clip import ClipModel

NO_CAPTION = "no caption"


@dataclass
class FrameEmbeddings:
    """The L2-normalised image embeddings of one clip's sampled frames (or why there are none)."""

    video_id: str
    embeddings: np.ndarray | None  # float32 [frames, dim]
    frame_indices: list[int] = field(default_factory=list)
    frame_points: list[float] = field(default_factory=list)
    num_frames: int | None = None
    error: str | None = None

    def frame_at(self, point: float) -> tuple[int, np.ndarray] | None:
        """The embedding sampled at `point` (images: their only frame)."""
        if self.embeddings is None:
            return None
        if len(self.frame_points) == 1:  # a still image: one frame serves every point
            return self.frame_indices[0], self.embeddings[0]
        for i, p in enumerate(self.frame_points):
            if math.isclose(p, point):
                return self.frame_indices[i], self.embeddings[i]
        return None


def aesthetic_values(items: Sequence[FrameEmbeddings], mlp: AestheticMLP, device: str = "cpu") -> list[dict]:
    """aes = mean over frames of MLP(embedding), in float32 as the reference computes it."""
    out: list[dict] = []
    scored = [it for it in items if it.embeddings is not None and len(it.embeddings)]
    per_frame: dict[str, np.ndarray] = {}
    if scored:
        stacked = torch.from_numpy(np.concatenate([it.embeddings for it in scored]).astype(np.float32))
        with torch.inference_mode():
            values = mlp(stacked.to(device)).float().cpu()
        start = 0
        for it in scored:
            n = len(it.embeddings)
            per_frame[it.video_id] = values[start : start + n]
            start += n
    for it in items:
        base = {"video_id": it.video_id, "frame_indices": it.frame_indices, "num_frames": it.num_frames}
        frames = per_frame.get(it.video_id)
        if frames is None:
            out.append({**base, "aes": None, "aes_frames": None, "error": it.error or "no frames"})
        else:
            out.append(
                {**base, "aes": float(frames.mean()), "aes_frames": [float(v) for v in frames], "error": None}
            )
    return out


def matching_values(
    items: Sequence[FrameEmbeddings],
    texts: Sequence[str | None],
    clip: ClipModel,
    point: float = 0.5,
    text_batch_size: int = 256,
) -> list[dict]:
    """match = exp(logit_scale) · cos(frame at `point`, caption), with the checkpoint's logit scale."""
    rows: list[dict] = []
    todo: list[tuple[int, np.ndarray, str]] = []
    for i, (it, text) in enumerate(zip(items, texts, strict=True)):
        frame = it.frame_at(point)
        row = {"video_id": it.video_id, "num_frames": it.num_frames, "frame_index": None, "match": None}
        if frame is None:
            row["error"] = it.error or f"no frame sampled at {point}"
        elif not has_caption(text):
            row["error"] = NO_CAPTION
            row["frame_index"] = frame[0]
        else:
            row["error"] = None
            row["frame_index"] = frame[0]
            todo.append((i, frame[1], text))
        rows.append(row)
    for start in range(0, len(todo), text_batch_size):
        chunk = todo[start : start + text_batch_size]
        text_emb = clip.encode_texts([t for _, _, t in chunk]).float()
        image_emb = torch.from_numpy(np.stack([e for _, e, _ in chunk]).astype(np.float32)).to(
            text_emb.device
        )
        scores = clip.match_scores(image_emb, text_emb).float().cpu()
        for (i, _, _), score in zip(chunk, scores, strict=True):
            rows[i]["match"] = float(score)
    return rows
