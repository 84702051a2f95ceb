"""Synthetic clips with known motion, for the demo and for tests (no network, no scikit-image).

A clip is a rigid pan over a procedural texture: every frame is an exact crop of one image, shifted by
a whole number of pixels per frame, so the true optical flow is known. A zoom about the centre and an
object moving over a still background are the other two motions with a known answer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

DEMO_FPS = 24


def write_clip(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray] | np.ndarray,
    fps: int = DEMO_FPS,
    codec: str = "libx264",
    crf: int = 18,
    gop: int | None = None,
    preset: str = "medium",
) -> Path:
    """Encode uint8 HxWx3 RGB frames to a yuv420p clip; the container follows the extension (.mp4, .mkv).

    `gop`: the most frames between keyframes (None: the encoder's default, 250 for libx264). `preset`:
    libx264's speed/size trade-off ("ultrafast" writes large test clips quickly).

    libx264 runs single-threaded so the bytes are reproducible; if this PyAV build lacks libx264 the
    clip falls back to mpeg4. Width and height must be even (4:2:0 chroma).
    """
    import av

    path = Path(path)
    if codec not in av.codecs_available:
        codec = "mpeg4"
    options = {"crf": str(crf), "preset": preset} if codec == "libx264" else {"qscale": "2"}
    # bitexact: no random Matroska segment UID or muxing date, so reruns give identical bytes.
    container_options = {"fflags": "+bitexact"}
    if path.suffix.lower() in (".mp4", ".mov", ".m4v"):
        container_options["movflags"] = "+faststart"  # index first, as the parity fixtures have it
    count = 0
    with av.open(str(path), mode="w", options=container_options) as container:
        stream = None
        for frame in frames:
            frame = np.ascontiguousarray(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"frames must be uint8 HxWx3, got {frame.dtype} {frame.shape}")
            if stream is None:
                height, width = frame.shape[:2]
                if width % 2 or height % 2:
                    raise ValueError(f"width and height must be even for yuv420p, got {width}x{height}")
                stream = container.add_stream(codec, rate=fps, options=options)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.codec_context.thread_count = 1
                if gop is not None:
                    stream.codec_context.gop_size = gop
            elif frame.shape[:2] != (stream.height, stream.width):
                raise ValueError(f"frame {count} is {frame.shape[1]}x{frame.shape[0]}, not {width}x{height}")
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            count += 1
        if stream is None:
            raise ValueError("no frames to write")
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)
    return path


def pan_frames(image: np.ndarray, width: int, height: int, n_frames: int, dx: int, dy: int) -> np.ndarray:
    """[n, height, width, 3] crops of `image` whose content moves by (+dx, +dy) px per frame.

    The crop window moves by (-dx, -dy); its whole path is centred in the image, which is first
    enlarged (PIL LANCZOS, smallest sufficient factor) when the path does not fit.
    """
    if n_frames < 1 or width < 1 or height < 1:
        raise ValueError("width, height and n_frames must be >= 1")
    if int(dx) != dx or int(dy) != dy:
        raise ValueError("dx and dy must be whole pixels per frame")
    step_x, step_y = -int(dx), -int(dy)
    span_x = width + abs(step_x) * (n_frames - 1)
    span_y = height + abs(step_y) * (n_frames - 1)
    img_h, img_w = image.shape[:2]
    scale = max(span_x / img_w, span_y / img_h, 1.0)
    if scale > 1.0:
        size = (max(math.ceil(img_w * scale), span_x), max(math.ceil(img_h * scale), span_y))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
        img_h, img_w = image.shape[:2]
    # Left/top edge of the first window so that the path's bounding box sits in the middle.
    x0 = (img_w - span_x) // 2 + (abs(step_x) * (n_frames - 1) if step_x < 0 else 0)
    y0 = (img_h - span_y) // 2 + (abs(step_y) * (n_frames - 1) if step_y < 0 else 0)
    out = np.empty((n_frames, height, width, 3), dtype=np.uint8)
    for t in range(n_frames):
        x, y = x0 + step_x * t, y0 + step_y * t
        out[t] = image[y : y + height, x : x + width, :3]
    return out


def draw_words(frame: np.ndarray, words: tuple[str, ...] = ("BREAKING NEWS", "live 2026")) -> np.ndarray:
    """The frame with white, black-outlined words drawn around its centre (on-screen text for OCR)."""
    from PIL import ImageFont

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    height, width = frame.shape[:2]
    font = ImageFont.load_default(size=max(12, min(height, width) // 12))
    for i, word in enumerate(words):
        draw.text((width // 4, height // 3 + i * height // 5), word, fill=(255, 255, 255), font=font,
                  stroke_width=2, stroke_fill=(0, 0, 0))  # fmt: skip
    return np.asarray(image)


def camera_frames(
    image: np.ndarray, width: int, height: int, n_frames: int, pan: tuple[float, float] = (0.0, 0.0),
    zoom: float = 1.0,
) -> np.ndarray:
    """[n, height, width, 3] views of `image` from a moving camera: the content moves by `pan`
    (vx, vy) px per frame, sub-pixel allowed, and is magnified by `zoom` per frame about the frame
    centre (> 1 zooms in, < 1 out). Frame t is the window of the first frame's size shrunk by
    zoom**t and shifted by -t·pan, resampled to width×height (PIL BICUBIC); the first window is the
    largest of that aspect ratio that fits in the middle of the image with room for the whole path."""
    if n_frames < 1 or zoom <= 0:
        raise ValueError("n_frames must be >= 1 and zoom > 0")
    img_h, img_w = image.shape[:2]
    last = n_frames - 1
    travel_x, travel_y = abs(pan[0]) * last, abs(pan[1]) * last
    grow = max(1.0, 1 / zoom**last)  # a zoom out ends on a larger window
    fit = min((img_w - travel_x) / (width * grow), (img_h - travel_y) / (height * grow), 1.0)
    if fit <= 0:
        raise ValueError("the image is too small for this motion: give a larger image")
    base_w, base_h = width * fit, height * fit
    # The window's centre starts where the whole path stays centred in the image.
    cx = img_w / 2 + pan[0] * last / 2
    cy = img_h / 2 + pan[1] * last / 2
    source = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    out = np.empty((n_frames, height, width, 3), dtype=np.uint8)
    for t in range(n_frames):
        half_w, half_h = base_w / zoom**t / 2, base_h / zoom**t / 2
        x, y = cx - pan[0] * fit * t, cy - pan[1] * fit * t
        box = (x - half_w, y - half_h, x + half_w, y + half_h)
        out[t] = np.asarray(source.resize((width, height), Image.Resampling.BICUBIC, box=box))
    return out


def object_frames(
    background: np.ndarray, sprite: np.ndarray, n_frames: int, start: tuple[int, int], dx: int, dy: int
) -> np.ndarray:
    """[n, H, W, 3] frames of a still `background` with `sprite` pasted at `start` (x, y) + t·(dx, dy):
    an object moving over a scene the camera holds still. The sprite must stay inside the frame."""
    height, width = background.shape[:2]
    sh, sw = sprite.shape[:2]
    out = np.repeat(background[None, ..., :3], n_frames, axis=0)
    for t in range(n_frames):
        x, y = start[0] + dx * t, start[1] + dy * t
        if x < 0 or y < 0 or x + sw > width or y + sh > height:
            raise ValueError(f"the sprite leaves the frame at frame {t}")
        out[t, y : y + sh, x : x + sw] = sprite[..., :3]
    return out


def texture_image(height: int, width: int, seed: int) -> np.ndarray:
    """A deterministic colourful texture with detail at several scales (enough for optical flow)."""
    rng = np.random.default_rng(seed)
    canvas = np.zeros((height, width, 3), dtype=np.float64)
    # Smooth multi-scale colour noise: small random grids enlarged bicubically, finer ones weaker.
    for cells, weight in ((4, 0.45), (12, 0.3), (40, 0.15), (120, 0.1)):
        grid_w = max(2, round(cells * width / max(width, height)))
        grid_h = max(2, round(cells * height / max(width, height)))
        grid = (rng.random((grid_h, grid_w, 3)) * 255).astype(np.uint8)
        layer = np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC))
        canvas += weight * layer
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    # Sharp shapes give corners and edges that a flow estimator can lock on to.
    n_shapes = max(8, (width * height) // 4000)
    for _ in range(n_shapes):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(4, max(6, min(width, height) // 6)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        box = (x - size, y - size, x + size, y + size)
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, outline=colour, width=max(1, size // 4))
        else:
            x2, y2 = int(rng.integers(0, width)), int(rng.integers(0, height))
            draw.line((x, y, x2, y2), fill=colour, width=int(rng.integers(1, 4)))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(0.7)))


# name, (width, height), frames, (dx, dy) scene motion in px/frame, texture seed, caption
_DEMO_CLIPS = [
    (
        "static_texture.mp4",
        (320, 180),
        48,
        (0, 0),
        1,
        "a still procedural texture of soft colour blobs, circles, squares and lines; nothing moves",
    ),
    (
        "slow_pan_right_1px.mp4",
        (320, 180),
        48,
        (1, 0),
        2,
        "a colourful procedural texture drifting slowly to the right, one pixel per frame",
    ),
    (
        "fast_pan_left_8px.mp4",
        (320, 180),
        48,
        (-8, 0),
        3,
        'a "fast" pan: a colourful texture sweeps to the left at 8 px per frame (schnell, 快速)',
    ),
    (
        "portrait_tilt_down_3px.mp4",
        (180, 320),
        48,
        (0, 3),
        4,
        "vertical video of a colourful procedural texture moving down, 3 px per frame",
    ),
    (
        "short_diagonal_20frames.mkv",
        (256, 144),
        20,
        (2, 2),
        5,
        "a short 20-frame clip of a procedural texture moving diagonally down and to the right",
    ),
]
_DEMO_IMAGE = (
    "still_texture.png",
    (300, 200),
    6,
    "a still image of a procedural texture with blobs and shapes",
)
_DEMO_TRUNCATED = ("broken_truncated.mp4", "fast_pan_left_8px.mp4")
_DEMO_TEXT = "not_a_video.mp4"


def make_demo_corpus(folder: str | os.PathLike[str]) -> Path:
    """Write a small corpus of clips with known motion plus broken files; returns its meta.csv.

    meta.csv lists every file with a relative `path`, an honest `text`, and the known facts: `kind`
    (video, image, bad), `gt_dx_px_per_frame`, `gt_dy_px_per_frame`, `width`, `height` and
    `expected_frames` (empty where they do not apply).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (w, h), n, (dx, dy), seed, caption in _DEMO_CLIPS:
        texture = texture_image(h + abs(dy) * n + 16, w + abs(dx) * n + 16, seed)
        write_clip(folder / name, pan_frames(texture, w, h, n, dx, dy))
        rows.append(_row(name, caption, "video", dx, dy, w, h, n))

    name, (w, h), seed, caption = _DEMO_IMAGE
    Image.fromarray(texture_image(h, w, seed)).save(folder / name)
    rows.append(_row(name, caption, "image", None, None, w, h, 1))

    name, source = _DEMO_TRUNCATED
    data = (folder / source).read_bytes()
    (folder / name).write_bytes(data[: int(len(data) * 0.3)])  # header kept, frame data cut
    rows.append(_row(name, f"a broken file: the first 30% of the bytes of {source}", "bad"))

    (folder / _DEMO_TEXT).write_text("this is a text file, not a video\n", encoding="utf-8")
    rows.append(_row(_DEMO_TEXT, "a text file with a .mp4 name; it holds no video", "bad"))

    meta = pd.DataFrame(rows)
    for column in ("gt_dx_px_per_frame", "gt_dy_px_per_frame", "width", "height", "expected_frames"):
        meta[column] = meta[column].astype("Int64")
    meta_path = folder / "meta.csv"
    meta.to_csv(meta_path, index=False)
    return meta_path


def _row(
    name: str,
    text: str,
    kind: str,
    dx: int | None = None,
    dy: int | None = None,
    width: int | None = None,
    height: int | None = None,
    frames: int | None = None,
) -> dict[str, object]:
    return {
        "path": name,
        "text": text,
        "kind": kind,
        "gt_dx_px_per_frame": dx,
        "gt_dy_px_per_frame": dy,
        "width": width,
        "height": height,
        "expected_frames": frames,
    }


def claim_avi_frame_count(source: str | os.PathLike[str], target: str | os.PathLike[str], frames: int) -> Path:
    """Copy an AVI, patching its header to claim `frames` frames (a lying header, as in the wild).

    Sets the main header's dwTotalFrames (`avih`) and the video stream header's dwLength (`strh` with
    fccType `vids`); the frame data is untouched. A claim of 3,000,000,000 frames made decord abort
    the process with std::bad_alloc.
    """
    import struct

    if not 0 <= frames < 2**32:
        raise ValueError(f"an AVI frame count is a 32-bit unsigned integer, got {frames}")
    data = bytearray(Path(source).read_bytes())
    if data[:4] != b"RIFF" or data[8:12] != b"AVI ":
        raise ValueError(f"{source}: not an AVI (RIFF/AVI) file")
    avih = data.find(b"avih")
    if avih < 0:
        raise ValueError(f"{source}: no avih header")
    struct.pack_into("<I", data, avih + 8 + 16, frames)  # chunk id, size, then dwTotalFrames at +16
    patched = False
    at = data.find(b"strh")
    while at >= 0:
        if data[at + 8 : at + 12] == b"vids":
            struct.pack_into("<I", data, at + 8 + 32, frames)  # dwLength at +32 of the strh data
            patched = True
        at = data.find(b"strh", at + 4)
    if not patched:
        raise ValueError(f"{source}: no video stream header")
    target = Path(target)
    target.write_bytes(bytes(data))
    return target
