"""torchcodec against vidscore's sparse decoder and decord (issue 11).

For each clip, every decoder does what the scorers do: the CLIP frames (sampling points 0.1, 0.5, 0.9
-> indices with `frame_indices_at`) and the flow frames (indices 0, 10, 20, 30, clamped with
`clamp_indices`), each job opening the clip afresh as `clip_frames.py` and `flow_frames.py` do.

Decoders:
  vidscore        `read_frames(path, points=...)` + `read_frames(path, indices=...)`, default backends
                  (sparse PyAV first), timeout_s=None (no watchdog thread)
  decord          `VideoReader(path)`, `len()`, `get_batch(indices).asnumpy()`
  torchcodec      `VideoDecoder(path, seek_mode="exact")`, `metadata.num_frames`, `get_frames_at(indices)`
                  (NCHW uint8 -> NHWC)
  torchcodec-approx  the same with seek_mode="approximate" (count from the header, no scan)

Reported per clip: frame count each decoder sees, max abs difference against decord's frames (0 =
bit-identical), median seconds of 5 timed runs after one warm-up.

    .venv/bin/python bench/bench_torchcodec.py --out bench/results/torchcodec-cpu-2core
    .venv/bin/python bench/bench_torchcodec.py --device cuda   # torchcodec's NVDEC path, on a GPU machine

With --device cuda the torchcodec decoders are built with device="cuda" (frames are copied back to the
CPU for the comparison; NVDEC's colour conversion is not expected to be bit-identical to FFmpeg's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch  # before decord, as the project imports them

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidscore_core.media.decode import read_frames  # noqa: E402
from vidscore_core.media.frames import clamp_indices, frame_indices_at  # noqa: E402
from vidscore_core.media.synth import pan_frames, texture_image, write_clip  # noqa: E402

POINTS = (0.1, 0.5, 0.9)
FLOW = (0, 10, 20, 30)
FIXTURES = Path("/work/shared/fixtures/media")
SKIP = {"bad_truncated.mp4"}


# --- decoders: each returns (num_frames, clip_frames, flow_frames), frames as lists of HxWx3 uint8 ---


def run_vidscore(path: str, device: str):
    a = read_frames(path, points=POINTS, timeout_s=None)
    b = read_frames(path, indices=FLOW, timeout_s=None)
    return a.num_frames, list(a.frames), list(b.frames), a.backend


def run_decord(path: str, device: str):
    import decord

    out = []
    n = 0
    for job in ("clip", "flow"):
        vr = decord.VideoReader(path)
        n = len(vr)
        idx = frame_indices_at(n, POINTS) if job == "clip" else clamp_indices(n, FLOW)
        out.append(list(vr.get_batch(idx).asnumpy()))
        del vr
    return n, out[0], out[1], "decord"


def _torchcodec(seek_mode: str):
    def run(path: str, device: str):
        from torchcodec.decoders import VideoDecoder

        out = []
        n = 0
        for job in ("clip", "flow"):
            dec = VideoDecoder(path, seek_mode=seek_mode, device=device)
            n = dec.metadata.num_frames
            idx = frame_indices_at(n, POINTS) if job == "clip" else clamp_indices(n, FLOW)
            data = dec.get_frames_at(idx).data.permute(0, 2, 3, 1).cpu().numpy()
            out.append(list(data))
            del dec
        return n, out[0], out[1], f"torchcodec-{seek_mode}"

    return run


DECODERS = {
    "vidscore": run_vidscore,
    "decord": run_decord,
    "torchcodec": _torchcodec("exact"),
    "torchcodec-approx": _torchcodec("approximate"),
}


def max_diff(frames, ref) -> int | None:
    if len(frames) != len(ref) or any(f.shape != r.shape for f, r in zip(frames, ref, strict=True)):
        return None
    return max(
        int(np.abs(f.astype(np.int16) - r.astype(np.int16)).max()) for f, r in zip(frames, ref, strict=True)
    )


def synth_clips(tmp: Path) -> list[Path]:
    import av

    img = texture_image(720, 1280, seed=3)
    frames = pan_frames(img, 640, 360, 120, dx=3, dy=1)
    clips = [
        write_clip(tmp / "synth_640x360_120f.mp4", frames),
        write_clip(tmp / "synth_640x360_120f.mkv", frames),
    ]
    # Short GOP (keyframe every 12 frames): write_clip has no GOP option, so encode it here.
    gop = tmp / "synth_640x360_120f_gop12.mp4"
    with av.open(str(gop), mode="w", options={"fflags": "+bitexact", "movflags": "+faststart"}) as c:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        s = c.add_stream(
            codec,
            rate=24,
            options={"g": "12", "keyint_min": "12", "crf": "18"} if codec == "libx264" else {"g": "12"},
        )
        s.width, s.height, s.pix_fmt = 640, 360, "yuv420p"
        s.codec_context.thread_count = 1
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    clips.append(gop)
    long = pan_frames(img, 640, 360, 300, dx=1, dy=0)
    clips.append(write_clip(tmp / "synth_640x360_300f.mp4", long))
    return clips


def bench_clip(path: Path, device: str, repeats: int) -> dict:
    row: dict = {"clip": path.name, "decoders": {}}
    results = {}
    for name, fn in DECODERS.items():
        dev = device if name.startswith("torchcodec") else "cpu"
        try:
            results[name] = fn(str(path), dev)  # warm-up, and the frames compared
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn(str(path), dev)
                times.append(time.perf_counter() - t0)
            row["decoders"][name] = {
                "num_frames": results[name][0],
                "backend": results[name][3],
                "median_s": statistics.median(times),
                "times_s": times,
            }
        except Exception as exc:  # noqa: BLE001 - a decoder failing is a result
            row["decoders"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    ref = results.get("decord")
    for name, res in results.items():
        if ref is not None:
            row["decoders"][name]["max_abs_diff_vs_decord"] = max_diff(res[1] + res[2], ref[1] + ref[2])
    return row


def to_markdown(rows: list[dict], meta: dict) -> str:
    names = list(DECODERS)
    lines = [
        f"# torchcodec vs sparse PyAV vs decord ({meta['host']})",
        "",
        f"torch {meta['torch']}, torchcodec {meta['torchcodec']}, decord {meta['decord']}, "
        f"PyAV {meta['av']}, FFmpeg libs for torchcodec: {meta['ffmpeg']}; device {meta['device']}; "
        f"median of {meta['repeats']} runs after a warm-up. Per clip: CLIP frames at points "
        f"{list(POINTS)} + flow frames {list(FLOW)} (clamped), each job opening the clip, as the scorers do.",
        "",
        "Frames seen / max abs diff vs decord (0 = bit-identical):",
        "",
        "| clip | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for r in rows:
        cells = []
        for n in names:
            d = r["decoders"][n]
            cells.append(
                d["error"][:60] if "error" in d else f"{d['num_frames']} / {d.get('max_abs_diff_vs_decord')}"
            )
        lines.append(f"| {r['clip']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Time per clip, ms (median):",
        "",
        "| clip | " + " | ".join(names) + " | torchcodec / vidscore |",
        "|---" * (len(names) + 2) + "|",
    ]
    for r in rows:
        d = r["decoders"]
        ms = [f"{d[n]['median_s'] * 1e3:.1f}" if "median_s" in d[n] else "—" for n in names]
        ratio = (
            f"{d['torchcodec']['median_s'] / d['vidscore']['median_s']:.2f}x"
            if "median_s" in d["torchcodec"] and "median_s" in d["vidscore"]
            else "—"
        )
        lines.append(f"| {r['clip']} | " + " | ".join(ms) + f" | {ratio} |")
    tot = {n: sum(r["decoders"][n].get("median_s", float("nan")) for r in rows) for n in names}
    lines.append(
        "| **all clips** | "
        + " | ".join(f"**{tot[n] * 1e3:.1f}**" for n in names)
        + f" | **{tot['torchcodec'] / tot['vidscore']:.2f}x** |"
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", type=Path, default=FIXTURES)
    ap.add_argument("--device", default="cpu", help="torchcodec device: cpu or cuda (NVDEC)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = ap.parse_args()

    import av
    import decord
    import torchcodec

    ffmpeg = ""
    try:
        from torchcodec._core import get_ffmpeg_library_versions

        ffmpeg = get_ffmpeg_library_versions().get("ffmpeg_version", ffmpeg)
    except Exception:  # noqa: BLE001
        pass
    meta = {
        "host": f"{platform.machine()} {os.cpu_count()} cores",
        "torch": torch.__version__,
        "torchcodec": torchcodec.__version__,
        "decord": getattr(decord, "__version__", "?"),
        "av": av.__version__,
        "ffmpeg": ffmpeg or "?",
        "device": args.device,
        "repeats": args.repeats,
    }

    clips = sorted(p for p in args.fixtures.iterdir() if p.suffix in (".mp4", ".mkv") and p.name not in SKIP)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clips += synth_clips(Path(tmp))
        for clip in clips:
            rows.append(bench_clip(clip, args.device, args.repeats))
            print(
                json.dumps(
                    {
                        "clip": rows[-1]["clip"],
                        **{
                            k: {kk: vv for kk, vv in v.items() if kk != "times_s"}
                            for k, v in rows[-1]["decoders"].items()
                        },
                    }
                ),
                flush=True,
            )
    md = to_markdown(rows, meta)
    print(md)
    if args.out:
        args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(md)


if __name__ == "__main__":
    main()
