#!/usr/bin/env python3
"""GPU readiness check: parity with the CPU fp32 fixtures, model throughput and end-to-end clips/s.

One command, given a CUDA device (about 4-6 minutes on one H100/H200)::

    python bench/gpu_check.py --fixtures ../shared/fixtures --out bench/results/

It runs from a copy of the repository (no `pip install -e .` needed) on a stock CUDA PyTorch install
plus the few wheels that `bench/README.md` lists, and writes one JSON and one Markdown report:

1. **parity**: for every precision that `JobOptions.precision` offers and every score (aesthetic,
   matching, flow), the fixture clips go through the production path (`csv_scoring.score_rows` →
   `ClipJob` / `FlowJob` → the engine's worker processes → the models) on the device, and each score
   is compared with `reference/{aes,match,flow}.csv` (CPU float32): |Δaes| ≤ 2e-4, |Δmatch| ≤ 1e-3,
   |Δflow|/flow ≤ 1e-3. The fixtures README (section 7) gives these bounds for float32 only; the
   reduced precisions are compared against the same bounds and reported, but only fp32 must pass.
2. **clip_throughput**: CLIP ViT-L/14 at full size with random weights (a state dict written from
   `fixtures/manifests/openai_clip_ViT-L-14.tsv`, loaded by the production `ClipJob`), image tower
   images/s over batch sizes and precisions, the scorer's own batch step (uint8 crops → embeddings on
   the host), and the aesthetic head and the matching text tower on top: clips/s at 3 frames/clip.
3. **unimatch_throughput**: UniMatch gmflow-scale2-regrefine6 with random weights (the repo's
   model, checked key for key against the manifest) through `FlowJob`'s scorer: pairs/s at 320×576
   per precision.
4. **end_to_end**: a generated corpus (`vidscore_core.media.synth`) through `scoring.per_clip.score_videos`,
   the function the Dagster `clip_embeddings` and `flow_scores` assets call, then the aesthetic and
   matching rows from the stored embeddings as those assets compute them; then every per-clip table in
   one step (CLIP, UniMatch with object motion, camera motion, luminance, blur, OCR, TransNetV2: what
   `vidscore score all` computes), OCR left out, and said so, where onnxruntime has no CUDA provider.
5. **targets** of issue 11, evaluated from the figures above.
6. **text_and_shots**: the `ocr` detector (PP-OCRv4 through onnxruntime's CUDA provider) and the
   `shots` network (TransNetV2, float32) on the device against the same models on the CPU (fixture
   frames with and without drawn words; two fixture clips joined), their throughput (1024×1024
   frames/s, 48×27 frames/s), and the CPU cost of decoding every frame at 48×27 next to the CLIP
   frames alone.

`--dry-run` runs all of it on CPU at toy sizes (fixture CLIP, 2 clips, a 32×64 flow resolution in
the throughput and end-to-end sections, fp32 parity with one flow clip) so CI proves the script works
before a GPU is at hand. Exit status: 0 when every section ran and fp32 parity passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # a plain copy of the repository, not installed

# The bounds of fixtures/README.md section 7 (CPU float32).
TOLERANCES = {"aes": 2e-4, "match": 1e-3, "flow_rel": 1e-3}
SCORES = (("aesthetic", "aes"), ("matching", "match"), ("flow", "flow"))
FALLBACK_PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
FRAMES_PER_CLIP = 3  # the aesthetic score's frames at 10/50/90 %
TARGETS = {
    "aesthetic_clips_per_s": 1000.0,
    "aes_plus_match_over_aes": 1.15,
    "unimatch_over_reference": 2.0,
}


# ----------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Budget:
    """Wall-clock budget: optional measurements are skipped once it is spent."""

    def __init__(self, seconds: float) -> None:
        self.start = time.perf_counter()
        self.seconds = seconds

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed


def find_fixtures(explicit: str | None) -> Path | None:
    candidates = [Path(explicit)] if explicit else []
    if os.environ.get("VIDSCORE_FIXTURES"):
        candidates.append(Path(os.environ["VIDSCORE_FIXTURES"]))
    candidates += [REPO.parent / "shared" / "fixtures", REPO / "shared" / "fixtures", REPO / ".fixtures"]
    for c in candidates:
        if (c / "media" / "meta.csv").is_file() and (c / "reference" / "aes.csv").is_file():
            return c.resolve()
    return None


def read_manifest(path: Path) -> list[tuple[str, list[int], str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            key, shape, dtype = line.split("\t")
            rows.append((key, json.loads(shape), dtype))
    return rows


def tf32_flags() -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    for name, get in (
        ("cuda.matmul.allow_tf32", lambda: torch.backends.cuda.matmul.allow_tf32),
        ("cudnn.allow_tf32", lambda: torch.backends.cudnn.allow_tf32),
        ("float32_matmul_precision", torch.get_float32_matmul_precision),
    ):
        try:
            out[name] = get()
        except Exception as exc:  # newer torch may refuse mixed legacy/new TF32 APIs
            out[name] = f"unreadable: {exc}"
    return out


def restore_tf32_flags(state: dict[str, Any]) -> None:
    import torch

    with contextlib.suppress(Exception):
        if isinstance(state.get("cuda.matmul.allow_tf32"), bool):
            torch.backends.cuda.matmul.allow_tf32 = state["cuda.matmul.allow_tf32"]
    with contextlib.suppress(Exception):
        if isinstance(state.get("cudnn.allow_tf32"), bool):
            torch.backends.cudnn.allow_tf32 = state["cudnn.allow_tf32"]
    with contextlib.suppress(Exception):
        if state.get("float32_matmul_precision") in ("highest", "high", "medium"):
            torch.set_float32_matmul_precision(state["float32_matmul_precision"])


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str, *, warmup: int, min_iters: int, max_iters: int,
          min_seconds: float) -> dict[str, float]:  # fmt: skip
    """Median seconds per call after `warmup` calls; at least `min_iters`, more until `min_seconds`."""
    for _ in range(warmup):
        fn()
        sync(device)
    times: list[float] = []
    while len(times) < min_iters or (sum(times) < min_seconds and len(times) < max_iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"median_s": times[len(times) // 2], "min_s": times[0], "iters": len(times)}


def peak_memory_gib(device: str) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def free_device(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def section(report: dict, name: str, fn: Callable[[], dict]) -> None:
    """Run one section; a failure is recorded with its traceback and the next section still runs."""
    log(f"section {name} ...")
    t0 = time.perf_counter()
    try:
        result = fn()
        result["status"] = result.get("status", "ok")
    except Exception as exc:
        result = {
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
        log(f"section {name} FAILED: {type(exc).__name__}: {exc}")
    result["seconds"] = round(time.perf_counter() - t0, 2)
    report[name] = result
    log(f"section {name} done in {result['seconds']:.1f}s ({result['status']})")


def offered_precisions() -> list[str]:
    try:
        from vidscore_core.scoring.options import PRECISIONS

        return list(PRECISIONS)
    except Exception:
        return list(FALLBACK_PRECISIONS)


def make_settings(work: Path, *, clip: Path, aesthetic: Path, unimatch: Path, device: str):
    from vidscore_core.settings import Settings

    return Settings(
        home=work / "home",
        models_dir=work / "no-models",
        weights={"clip": clip, "aesthetic": aesthetic, "unimatch": unimatch},
        device=device,
        tables=str(work / "tables"),
    )


def job_options(**kw):
    from vidscore_core.scoring.options import JobOptions

    return JobOptions(**kw)


def clip_effective(job) -> dict[str, Any]:
    """What a ClipJob actually runs: the CLIP dtype, as the job chose it."""
    clip = job.clip
    return {"clip_dtype": str(getattr(clip, "dtype", "?")).removeprefix("torch.")}


def flow_effective(job, device: str) -> dict[str, Any]:
    """What a FlowJob actually runs: its precision() when it has one, and the autocast dtype if any."""
    out: dict[str, Any] = {}
    precision = getattr(job, "precision", None)
    if callable(precision):
        out["flow_precision"] = precision()
    elif isinstance(precision, str):
        out["flow_precision"] = precision
    return out


# ----------------------------------------------------------------------------------------------------
# 0. environment
# ----------------------------------------------------------------------------------------------------


def environment(args, device: str) -> dict:
    import importlib.metadata as md

    import torch

    env: dict[str, Any] = {
        "dry_run": args.dry_run,
        "device": device,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "tf32_flags_at_start": tf32_flags(),
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        env.update(
            device_name=props.name,
            device_capability=f"{props.major}.{props.minor}",
            device_memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
        )
        with contextlib.suppress(Exception):
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            ).stdout.strip()  # fmt: skip
    else:
        env["device_name"] = f"CPU ({platform.processor() or platform.machine()})"
    versions = {}
    for dist in ("numpy", "pandas", "pillow", "av", "decord", "decord2", "open_clip_torch", "ftfy", "regex",
                 "timm", "torchvision", "huggingface_hub", "opencv-python-headless", "opencv-python"):  # fmt: skip
        with contextlib.suppress(md.PackageNotFoundError):
            versions[dist] = md.version(dist)
    env["packages"] = versions
    with contextlib.suppress(Exception):
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)  # fmt: skip
        if rev.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10)  # fmt: skip
            env["git_commit"] = rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    return env


# ----------------------------------------------------------------------------------------------------
# 1. parity with the CPU float32 reference
# ----------------------------------------------------------------------------------------------------


def parity(args, device: str, fixtures: Path, work: Path, precisions: list[str], budget: Budget) -> dict:
    import pandas as pd

    from vidscore_core import scores as registry
    from vidscore_core.csv_commands import score_csv as csv_scoring
    from vidscore_core.ingest.meta import read_meta
    from vidscore_core.scoring.score_jobs import ClipJob, FlowJob

    weights = fixtures / "weights"
    settings = make_settings(
        work,
        clip=weights / "clip_tiny_openai.pt",
        aesthetic=weights / "aesthetic_random_scaled.pth",
        unimatch=weights / "unimatch_random.pth",
        device=device,
    )
    meta = read_meta(fixtures / "media" / "meta.csv", drop_duplicates=False)
    by_written = dict(zip(meta["path_original"], meta["video_id"], strict=True))
    bad_ids = set(meta.loc[meta["kind"] == "bad", "video_id"])
    references = {column: pd.read_csv(fixtures / "reference" / f"{column}.csv") for _, column in SCORES}
    flow_ref = references["flow"]
    flow_paths = list(flow_ref["path"])
    if args.flow_parity_clips is not None:
        flow_paths = flow_paths[-args.flow_parity_clips :] if args.flow_parity_clips > 0 else []
    flow_ids = {by_written[p] for p in flow_paths} | bad_ids
    baseline_flags = tf32_flags()

    results: dict[str, Any] = {"tolerances": TOLERANCES, "required_precisions": ["fp32"], "precisions": {}}
    for precision in precisions:
        entry: dict[str, Any] = {"scores": {}, "effective": {}}
        for task, column in SCORES:
            if budget.left() < 0:
                entry["scores"][column] = {"status": "skipped", "reason": "time budget spent"}
                continue
            restore_tf32_flags(baseline_flags)  # each run starts from the process defaults
            rows = meta if column != "flow" else meta[meta["video_id"].isin(flow_ids)]
            options = job_options(device=device, precision=precision, batch_size=args.parity_batch,
                                  num_workers=args.parity_workers)  # fmt: skip
            reset_peak(device)
            t0 = time.perf_counter()
            try:
                scores = csv_scoring.score_rows([registry.get(task)], rows, settings, options)[registry.get(task).name]
            except Exception as exc:
                entry["scores"][column] = {
                    "status": "error",
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                }
                continue
            seconds = time.perf_counter() - t0
            flags_after = tf32_flags()
            ref = references[column]
            if column == "flow":
                ref = ref[ref["path"].isin(flow_paths)]
            items = []
            for path, expected in zip(ref["path"], ref[column], strict=True):
                vid = by_written[path]
                got_rows = scores[scores["video_id"] == vid]
                got = got_rows[column].iloc[0] if len(got_rows) else None
                error = got_rows["error"].iloc[0] if len(got_rows) else "no row"
                item: dict[str, Any] = {"path": path, "reference": float(expected)}
                if got is None or pd.isna(got):
                    item.update(got=None, error=str(error), ok=False)
                else:
                    delta = abs(float(got) - float(expected))
                    item.update(got=float(got), abs_delta=delta)
                    if column == "flow":
                        item["rel_delta"] = delta / abs(float(expected))
                        item["ok"] = item["rel_delta"] <= TOLERANCES["flow_rel"]
                    else:
                        item["ok"] = delta <= TOLERANCES[column]
                items.append(item)
            bad_rows = scores[scores["video_id"].isin(bad_ids)]
            bad_ok = (
                bool(len(bad_rows))
                and bool(bad_rows["error"].notna().all())
                and bool(bad_rows[column].isna().all())
            )
            max_abs = max((i.get("abs_delta", math.inf) for i in items), default=0.0)
            result = {
                "status": "ok",
                "items": items,
                "max_abs_delta": max_abs,
                "bad_file_gets_error": bad_ok,
                "seconds": round(seconds, 2),
                "peak_gpu_gib": peak_memory_gib(device),
                "tf32_flags_after": flags_after,
                "tf32_flags_leaked": flags_after != baseline_flags,
                "pass": bool(items) and all(i["ok"] for i in items) and bad_ok,
            }
            if column == "flow":
                result["max_rel_delta"] = max((i.get("rel_delta", math.inf) for i in items), default=0.0)
                result["clips"] = len(items)
            entry["scores"][column] = result
            log(
                f"parity {precision:>4} {column:>5}: max|Δ|={max_abs:.3g} pass={result['pass']} ({seconds:.1f}s)"
            )
        # What the jobs chose for this precision (cheap with the fixture weights).
        restore_tf32_flags(baseline_flags)
        with contextlib.suppress(Exception):
            entry["effective"].update(
                clip_effective(ClipJob(settings, job_options(device=device, precision=precision)))
            )
        with contextlib.suppress(Exception):
            fj = FlowJob(settings, job_options(device=device, precision=precision))
            entry["effective"].update(flow_effective(fj, device))
        restore_tf32_flags(baseline_flags)
        scored = [s for s in entry["scores"].values() if s.get("status") == "ok"]
        entry["pass"] = len(scored) == len(SCORES) and all(s["pass"] for s in scored)
        results["precisions"][precision] = entry
        free_device(device)
    required = [p for p in results["required_precisions"] if p in results["precisions"]]
    # None when fp32 was not asked for (--precisions): nothing required was run.
    results["pass"] = all(results["precisions"][p]["pass"] for p in required) if required else None
    results["flow_clips"] = flow_paths
    results["note"] = (
        "fixtures/README.md section 7 states its bounds for CPU float32; on CUDA the reference itself "
        "keeps CLIP in float16. Only fp32 must pass; the other precisions are reported against the same "
        "bounds for information."
    )
    return results


# ----------------------------------------------------------------------------------------------------
# 2. CLIP ViT-L/14 throughput (random weights, full size)
# ----------------------------------------------------------------------------------------------------


def _random_tensor(key: str, shape: list[int], gen, device: str):
    import torch

    if key == "logit_scale":
        return torch.tensor(math.log(100.0))
    if ".ln_" in key or key.startswith(("ln_final", "visual.ln_pre", "visual.ln_post")):
        return torch.ones(shape) if key.endswith("weight") else torch.zeros(shape)
    std = 0.01 if "positional_embedding" in key else 0.02
    return (torch.randn(shape, generator=gen, device=device) * std).cpu()


def clip_manifest_check(manifest: Path) -> dict:
    """The repo's CLIP class built from the ViT-L/14 manifest on the meta device: same keys and shapes."""
    import torch

    from vidscore_core.models.clip import build_clip

    rows = read_manifest(manifest)
    meta_sd = {k: torch.empty(shape, dtype=getattr(torch, dt), device="meta") for k, shape, dt in rows}
    model = build_clip(meta_sd, device="meta")  # the architecture the manifest's tensors describe
    arch = {
        "embed_dim": int(model.text_projection.shape[1]),
        "vision_layers": len(model.visual.transformer.resblocks),
        "text_layers": len(model.transformer.resblocks),
        "image_size": list(model.visual.image_size),
    }
    built = {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    expected = {k: (shape, dt) for k, shape, dt in rows}
    mismatched = sorted(k for k in expected if k in built and built[k][0] != expected[k][0])
    return {
        "arch": arch,
        "tensors": len(rows),
        "parameters": int(sum(math.prod(s) for _, s, _ in rows)),
        "missing_in_model": sorted(set(expected) - set(built)),
        "unexpected_in_model": sorted(set(built) - set(expected)),
        "shape_mismatches": mismatched,
        "dtype_mismatches": sorted(k for k in expected if k in built and built[k][1] != expected[k][1]),
        "ok": set(built) == set(expected) and not mismatched,
    }


def write_random_clip(manifest: Path, target: Path, device: str) -> dict:
    """A ViT-L/14 state dict with random values, the manifest's keys, shapes and dtypes."""
    import torch

    t0 = time.perf_counter()
    gen_device = device if device.startswith("cuda") else "cpu"
    gen = torch.Generator(device=gen_device).manual_seed(0)
    state = {}
    for key, shape, dtype in read_manifest(manifest):
        state[key] = _random_tensor(key, shape, gen, gen_device).to(getattr(torch, dtype)).contiguous()
    torch.save(state, target)
    return {
        "path": str(target),
        "bytes": target.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _captions(n: int, rng: random.Random) -> list[str]:
    words = ("a", "the", "camera", "slowly", "pans", "across", "bright", "city", "street", "at", "night",
             "with", "people", "walking", "cars", "passing", "under", "neon", "signs", "and", "rain",
             "reflections", "on", "wet", "asphalt", "close-up", "of", "hands", "cooking", "vegetables",
             "in", "kitchen", "aerial", "view", "mountain", "lake", "sunset", "drone", "shot", "forest",
             "dog", "running", "beach", "waves", "crashing", "timelapse", "clouds", "over", "valley")  # fmt: skip
    out = []
    for i in range(n):
        k = rng.randint(12, 40)
        out.append(" ".join(rng.choice(words) for _ in range(k)) + f" scene {i} {rng.randint(0, 10**6)}")
    return out


def _measure_clip_batch(
    job, bs: int, device: str, timing: dict, rng: random.Random, caption_sets: int
) -> dict:
    """One batch size: the image tower, the scorer's batch step, the aesthetic head, matching on top."""
    import torch

    from vidscore_core.models.clip import tokenize
    from vidscore_core.scoring.derived import FrameEmbeddings, aesthetic_values, matching_values
    from vidscore_core.scoring.engine import Item

    clip, (mlp, _) = job.clip, job.mlp
    size = clip.image_size
    crops = torch.randint(0, 256, (bs, size, size, 3), dtype=torch.uint8, device=device)
    pixels = clip.normalize_uint8(crops)
    tower = timed(lambda: clip.encode_images(pixels), device, **timing)
    n_clips = max(1, bs // FRAMES_PER_CLIP)
    data = {
        "crops": crops[: n_clips * FRAMES_PER_CLIP],
        "meta": [{"indices": [0, 1, 2], "points": [0.1, 0.5, 0.9], "num_frames": 48} for _ in range(n_clips)],
    }
    clips = [Item(index=i, video_id=f"c{i}", path="") for i in range(n_clips)]
    part = job.part()  # the scorer and precision region the clip_embeddings step runs

    def scorer_step():
        with part.region():
            return part.scorer.run(data, clips)

    step = timed(scorer_step, device, **timing)
    # Aesthetic alone vs aesthetic + matching, on this batch of clips.
    outs = scorer_step()
    items = [
        FrameEmbeddings(f"c{i}", o["embeddings"], [0, 1, 2], [0.1, 0.5, 0.9], 48) for i, o in enumerate(outs)
    ]
    head = timed(lambda: aesthetic_values(items, mlp, device=device), device, **timing)
    captions = iter([_captions(n_clips, rng) for _ in range(caption_sets)])  # fresh captions per call
    match = timed(lambda: matching_values(items, next(captions), clip), device, **timing)
    tok_captions = _captions(n_clips, rng)
    t_tok = time.perf_counter()
    tokenize(tok_captions, clip.context_length)
    tok_s = time.perf_counter() - t_tok
    aes_s = step["median_s"] + head["median_s"]
    both_s = aes_s + match["median_s"]
    return {
        "images": bs,
        "tower_images_per_s": bs / tower["median_s"],
        "tower_clips_per_s": bs / tower["median_s"] / FRAMES_PER_CLIP,
        "tower": tower,
        "scorer_step_clips": n_clips,
        "scorer_step_clips_per_s": n_clips / step["median_s"],
        "scorer_step": step,
        "aesthetic_head": head,
        "matching": match,
        "matching_tokenize_s": tok_s,
        "aesthetic_clips_per_s": n_clips / aes_s,
        "aes_plus_match_clips_per_s": n_clips / both_s,
        "aes_plus_match_over_aes": both_s / aes_s,
        "peak_gpu_gib": peak_memory_gib(device),
    }


def clip_throughput(
    args, device: str, fixtures: Path, work: Path, precisions: list[str], budget: Budget
) -> dict:
    import torch

    from vidscore_core.scoring.score_jobs import ClipJob

    manifest = fixtures / "manifests" / "openai_clip_ViT-L-14.tsv"
    out: dict[str, Any] = {"manifest_check": clip_manifest_check(manifest)}
    if args.dry_run:
        clip_file = fixtures / "weights" / "clip_tiny_openai.pt"
        out["model"] = "fixture clip_tiny_openai.pt (2 layers, width 64): dry run, toy sizes"
    else:
        clip_file = work / "random_ViT-L-14.pt"
        out["random_weights"] = write_random_clip(manifest, clip_file, device)
        out["model"] = "ViT-L/14, random weights with the manifest's keys, shapes and dtypes"
    settings = make_settings(
        work,
        clip=clip_file,
        aesthetic=fixtures / "weights" / "aesthetic_random_scaled.pth",
        unimatch=fixtures / "weights" / "unimatch_random.pth",
        device=device,
    )
    batch_sizes = args.clip_batches
    timing = dict(
        warmup=args.warmup, min_iters=args.min_iters, max_iters=args.max_iters, min_seconds=args.min_seconds
    )
    baseline = tf32_flags()
    rng = random.Random(0)
    results: dict[str, Any] = {}
    seen: dict[tuple, str] = {}
    for precision in precisions:
        if budget.left() < 0:
            results[precision] = {"status": "skipped", "reason": "time budget spent"}
            continue
        restore_tf32_flags(baseline)
        free_device(device)
        reset_peak(device)
        job = ClipJob(settings, job_options(device=device, precision=precision, batch_size=16, num_workers=1))
        t0 = time.perf_counter()
        clip = job.clip
        mlp, _ = job.mlp
        sync(device)
        load_s = time.perf_counter() - t0
        eff = {**clip_effective(job), "tf32_flags": tf32_flags()}
        key = (eff["clip_dtype"], json.dumps(eff["tf32_flags"], sort_keys=True, default=str))
        entry: dict[str, Any] = {"effective": eff, "load_seconds": round(load_s, 2)}
        if key in seen:
            entry["same_as"] = seen[key]
            results[precision] = entry
            log(f"clip {precision}: same configuration as {seen[key]}, not measured again")
            del job, clip, mlp
            continue
        seen[key] = precision
        per_batch: dict[str, Any] = {}
        with torch.inference_mode():
            for bs in batch_sizes:
                if budget.left() < 0:
                    per_batch[str(bs)] = {"status": "skipped", "reason": "time budget spent"}
                    continue
                try:
                    row = _measure_clip_batch(job, bs, device, timing, rng, args.max_iters + args.warmup + 1)
                    per_batch[str(bs)] = row
                    log(
                        f"clip {precision:>4} bs={bs:>4}: tower {row['tower_images_per_s']:.0f} img/s, "
                        f"aes {row['aesthetic_clips_per_s']:.0f} clips/s, aes+match x{row['aes_plus_match_over_aes']:.3f}"
                    )
                except torch.OutOfMemoryError as exc:
                    per_batch[str(bs)] = {"status": "oom", "error": str(exc).splitlines()[0]}
                    free_device(device)
        entry["batches"] = per_batch
        results[precision] = entry
        del job, clip, mlp
        free_device(device)
    restore_tf32_flags(baseline)
    out["precisions"] = results
    out["batch_sizes_images"] = batch_sizes
    out["frames_per_clip"] = FRAMES_PER_CLIP
    out["notes"] = [
        "tower: ClipModel.encode_images on normalized pixels already on the device (images/s); "
        "clips/s = images/s / 3.",
        "scorer_step: ClipImageScorer.run, the engine's model step: uint8 crops on the device → "
        "normalize → tower → float32 embeddings on the host, bs // 3 clips of 3 frames.",
        "aesthetic = scorer_step + aesthetic_values (MLP); matching = matching_values on the same "
        "embeddings (tokenize on the CPU + text tower + cosine), one caption per clip.",
    ]
    return out


# ----------------------------------------------------------------------------------------------------
# 3. UniMatch throughput (random weights, official shapes)
# ----------------------------------------------------------------------------------------------------


def write_random_unimatch(manifest: Path, target: Path) -> dict:
    """The repo's UniMatch with a seeded random init, checked against the official manifest."""
    import torch

    from vidscore_core.models.unimatch import build_unimatch

    torch.manual_seed(0)
    model = build_unimatch()
    state = model.state_dict()
    expected = {k: (shape, dt) for k, shape, dt in read_manifest(manifest)}
    built = {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()}
    check = {
        "tensors": len(expected),
        "parameters": int(sum(math.prod(s) for s, _ in expected.values())),
        "missing_in_model": sorted(set(expected) - set(built)),
        "unexpected_in_model": sorted(set(built) - set(expected)),
        "mismatches": sorted(k for k in expected if k in built and built[k] != expected[k]),
    }
    check["ok"] = not (check["missing_in_model"] or check["unexpected_in_model"] or check["mismatches"])
    torch.save({"model": state}, target)
    return check


def _measure_flow_batch(job, scorer, n_clips: int, size: tuple[int, int], device: str, timing: dict) -> dict:
    """FlowScorer.run on `n_clips` clips of 4 random frames (3 pairs each), in the job's precision context."""
    import torch

    from vidscore_core.scoring.engine import Item

    height, width = size
    gen = torch.Generator(device=device).manual_seed(n_clips)
    frames = torch.rand((n_clips, 4, 3, height, width), generator=gen, device=device) * 255
    metas = [{"indices": [0, 10, 20, 30], "num_frames": 48} for _ in range(n_clips)]
    clips = [Item(index=i, video_id=f"c{i}", path="") for i in range(n_clips)]

    def step() -> None:
        with job.part().region(), torch.inference_mode():  # the precision region the step runs UniMatch in
            scorer.run({"frames": frames, "meta": [dict(m) for m in metas]}, clips)

    t = timed(step, device, **timing)
    pairs = n_clips * 3
    return {
        "clips": n_clips,
        "pairs": pairs,
        "pairs_per_s": pairs / t["median_s"],
        "clips_per_s": n_clips / t["median_s"],
        "timing": t,
        "peak_gpu_gib": peak_memory_gib(device),
    }


def unimatch_throughput(args, device: str, fixtures: Path, work: Path, precisions: list[str],
                        budget: Budget) -> dict:  # fmt: skip
    import torch

    from vidscore_core.scoring.score_jobs import FlowJob

    target = work / "random_unimatch.pth"
    out: dict[str, Any] = {
        "manifest_check": write_random_unimatch(
            fixtures / "manifests" / "unimatch_gmflow-scale2-regrefine6.tsv", target
        )
    }
    height, width = args.flow_size
    out["resolution"] = [height, width]
    settings = make_settings(
        work,
        clip=fixtures / "weights" / "clip_tiny_openai.pt",
        aesthetic=fixtures / "weights" / "aesthetic_random_scaled.pth",
        unimatch=target,
        device=device,
    )
    timing = dict(
        warmup=args.warmup, min_iters=args.min_iters, max_iters=args.max_iters, min_seconds=args.min_seconds
    )
    baseline = tf32_flags()
    results: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for precision in precisions:
        if budget.left() < 0:
            results[precision] = {"status": "skipped", "reason": "time budget spent"}
            continue
        restore_tf32_flags(baseline)
        free_device(device)
        job = FlowJob(settings, job_options(device=device, precision=precision, num_workers=1))
        scorer = job.scorer  # loads the model
        eff = {**flow_effective(job, device), "tf32_flags": tf32_flags()}
        key = json.dumps(eff, sort_keys=True, default=str)
        entry: dict[str, Any] = {"effective": eff}
        if key in seen:
            entry["same_as"] = seen[key]
            results[precision] = entry
            log(f"unimatch {precision}: same configuration as {seen[key]}, not measured again")
            continue
        seen[key] = precision
        per_batch: dict[str, Any] = {}
        for n_clips in args.flow_batches:
            if budget.left() < 0:
                per_batch[str(n_clips)] = {"status": "skipped", "reason": "time budget spent"}
                continue
            reset_peak(device)
            try:
                row = _measure_flow_batch(job, scorer, n_clips, (height, width), device, timing)
                per_batch[str(n_clips)] = row
                log(f"unimatch {precision:>4} clips={n_clips:>3}: {row['pairs_per_s']:.1f} pairs/s")
            except torch.OutOfMemoryError as exc:
                per_batch[str(n_clips)] = {"status": "oom", "error": str(exc).splitlines()[0]}
        entry["batches"] = per_batch
        results[precision] = entry
        del scorer, job
    restore_tf32_flags(baseline)
    out["precisions"] = results
    out["notes"] = [
        "FlowScorer.run (FlowJob's model step) on random frames [clips, 4, 3, H, W] already on the device, "
        "in the job's precision context: 3 consecutive pairs per clip in one forward, flow scores to the host.",
        "The reference implementation (Open-Sora tools/scoring/optical_flow, UniMatch upstream) is not "
        "available offline: its pairs/s on the same device must be measured separately.",
    ]
    return out


# ----------------------------------------------------------------------------------------------------
# 6. text and shots: the ocr detector and the shots network on the device
# ----------------------------------------------------------------------------------------------------

OCR_AREA_TOLERANCE = 0.002  # |Δocr_area| between the device and the CPU on the same frame
SHOT_PROBABILITY_TOLERANCE = 1e-3  # max |Δp| of TransNetV2 float32, device vs CPU


def _ocr_on_device(args, device: str, crops, timing: dict) -> dict:
    """Boxes on the device vs the CPU for the same 1024×1024 crops, and frames/s per batch size."""
    import numpy as np

    from vidscore_core.models.ppocr_det import TextDetector, covered_fraction

    cpu = TextDetector(device="cpu", box_threshold=0.3).detect(crops)
    try:
        detector = TextDetector(device=device, box_threshold=0.3)
    except RuntimeError as exc:  # onnxruntime without its CUDA provider: the job would fail the same way
        return {"status": "unavailable", "reason": str(exc)}
    got = detector.detect(crops)
    frames = []
    for a, b in zip(cpu, got, strict=True):
        area_cpu, area_device = covered_fraction(a, 1024, 1024), covered_fraction(b, 1024, 1024)
        frames.append({"cpu_boxes": len(a), "device_boxes": len(b), "cpu_area": area_cpu, "device_area": area_device,
                       "ok": len(a) == len(b) and abs(area_cpu - area_device) <= OCR_AREA_TOLERANCE})  # fmt: skip
    batches = {}
    for n in args.ocr_batches:
        batch = np.repeat(crops[-1:], n, axis=0)
        t = timed(lambda batch=batch: detector.detect(batch), device, **timing)
        batches[str(n)] = {"frames_per_s": n / t["median_s"], "timing": t}
        log(f"ocr batch {n}: {n / t['median_s']:.1f} frames/s")
    return {"providers": detector.session.get_providers(), "frames": frames, "pass": all(f["ok"] for f in frames),
            "batches": batches}  # fmt: skip


def _shots_on_device(args, device: str, small, timing: dict) -> dict:
    """TransNetV2 probabilities on the device vs the CPU for the same frames, and frames/s."""
    import numpy as np
    import torch

    from vidscore_core.models import transnetv2

    frames = torch.from_numpy(small)
    cpu = transnetv2.predict_probabilities(transnetv2.load_transnetv2(device="cpu"), frames)
    model = transnetv2.load_transnetv2(device=device)
    got = transnetv2.predict_probabilities(model, frames.to(device))
    delta = float(np.abs(cpu - got).max())
    same_shots = transnetv2.shots_from_probabilities(cpu) == transnetv2.shots_from_probabilities(got)
    batches = {}
    gen = torch.Generator().manual_seed(0)
    for n in args.shot_windows:
        windows = torch.randint(0, 256, (n, transnetv2.WINDOW, 27, 48, 3), generator=gen, dtype=torch.uint8).to(device)

        def step(windows=windows) -> None:
            with torch.inference_mode():
                model(windows)

        reset_peak(device)
        t = timed(step, device, **timing)
        # Each window contributes its 50 middle frames to a clip's predictions.
        batches[str(n)] = {"frames_per_s": n * transnetv2.STEP / t["median_s"], "timing": t,
                           "peak_gpu_gib": peak_memory_gib(device)}  # fmt: skip
        log(f"transnetv2 {n} windows: {batches[str(n)]['frames_per_s']:.0f} frames/s")
    return {"max_abs_delta": delta, "same_shots": same_shots, "shots": transnetv2.shots_from_probabilities(got),
            "pass": delta <= SHOT_PROBABILITY_TOLERANCE and same_shots, "batches": batches}  # fmt: skip


def text_and_shots(args, device: str, fixtures: Path, work: Path) -> dict:
    import numpy as np

    from vidscore_core.media import read_frames, read_scaled_frames
    from vidscore_core.media.synth import draw_words, write_clip
    from vidscore_core.models.transnetv2 import FRAME_SIZE
    from vidscore_core.scoring.ocr_frames import OCR_FRAME_INDEX, square_crop
    from vidscore_core.scoring.shot_frames import FRAME_SIZE as SHOT_SIZE

    timing = dict(warmup=args.warmup, min_iters=args.min_iters, max_iters=args.max_iters,
                  min_seconds=args.min_seconds)  # fmt: skip
    media = fixtures / "media"
    names = ["pan_hubble_right_5px.mp4", "pan_retina_portrait_down_3px.mp4", "image_colorwheel.jpg"]
    names = names[: args.ocr_frames]
    plain = [read_frames(media / n, indices=[OCR_FRAME_INDEX]).frames[0] for n in names]
    crops = np.stack([square_crop(f) for f in plain] + [square_crop(draw_words(f)) for f in plain])
    out: dict[str, Any] = {"ocr": _ocr_on_device(args, device, crops, timing)}

    first = read_frames(media / "pan_hubble_right_5px.mp4", indices=list(range(48))).frames
    second = [f.transpose(1, 0, 2) for f in read_frames(media / "pan_retina_portrait_down_3px.mp4",
                                                          indices=list(range(48))).frames]  # fmt: skip
    joined = write_clip(work / "joined.mp4", [*first, *(np.ascontiguousarray(f) for f in second)])
    small = np.stack(read_scaled_frames(joined, FRAME_SIZE).frames)
    out["shots"] = {**_shots_on_device(args, device, small, timing), "join_frame": len(first)}

    # Decoding (CPU, one clip at a time): every frame at 48×27 next to the CLIP frames alone.
    clip = media / "pan_hubble_right_5px.mp4"
    scaled = timed(lambda: read_scaled_frames(clip, SHOT_SIZE), "cpu", **timing)
    sparse = timed(lambda: read_frames(clip, points=(0.1, 0.5, 0.9)), "cpu", **timing)
    out["decode"] = {"clip": clip.name, "every_frame_48x27_s": scaled["median_s"], "clip_frames_s": sparse["median_s"]}
    ok = [out["shots"]["pass"], out["ocr"].get("pass", True)]
    out["pass"] = all(ok)
    out["notes"] = [
        "ocr: boxes of confidence > 0.3 on 1024x1024 crops of frame 10 (fixture frames, and the same with "
        f"drawn words); device vs CPU: same box count and |Δarea| <= {OCR_AREA_TOLERANCE}. 'unavailable' when "
        "onnxruntime has no CUDA provider (install onnxruntime-gpu): the ocr job then fails on CUDA.",
        f"shots: two fixture clips joined at frame {len(first)}; device vs CPU float32: max |Δp| <= "
        f"{SHOT_PROBABILITY_TOLERANCE} and the same shots. Throughput: random 100-frame windows, 50 frames each.",
    ]
    return out


# ----------------------------------------------------------------------------------------------------
# 4. end to end: the assets' code path on a generated corpus
# ----------------------------------------------------------------------------------------------------


def make_corpus(
    folder: Path, n_clips: int, distinct: int, width: int, height: int, frames: int
) -> list[Path]:
    """`distinct` generated pans (vidscore_core.media.synth), copied to `n_clips` files."""
    from vidscore_core.media import synth

    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for i in range(min(distinct, n_clips)):
        dx, dy = [(2, 0), (0, 3), (-4, 1), (1, 1), (5, -2), (0, 0), (-1, -3), (3, 2)][i % 8]
        texture = synth.texture_image(
            height + abs(dy) * frames + 16, width + abs(dx) * frames + 16, seed=100 + i
        )
        path = folder / f"src_{i:03d}.mp4"
        synth.write_clip(path, synth.pan_frames(texture, width, height, frames, dx, dy))
        sources.append(path)
    paths = []
    for i in range(n_clips):
        path = folder / f"clip_{i:05d}.mp4"
        shutil.copyfile(sources[i % len(sources)], path)
        paths.append(path)
    return paths


def end_to_end(args, device: str, fixtures: Path, work: Path, budget: Budget, clip_file: Path) -> dict:
    import numpy as np
    import pandas as pd
    import torch

    from vidscore_core.ingest.meta import video_id_for
    from vidscore_core.models import flow as flow_module
    from vidscore_core.scoring.per_clip import score_videos
    from vidscore_core.scoring.score_jobs import ClipJob, frame_embeddings_from_rows

    t0 = time.perf_counter()
    width, height = args.e2e_clip_size
    paths = make_corpus(work / "corpus", args.e2e_clips, args.e2e_distinct, width, height, args.e2e_frames)
    corpus_s = time.perf_counter() - t0
    rng = random.Random(1)
    videos = pd.DataFrame(
        {
            "video_id": [video_id_for(str(p.resolve())) for p in paths],
            "path": [str(p.resolve()) for p in paths],
            "text": _captions(len(paths), rng),
            "error": [None] * len(paths),
        }
    )
    settings = make_settings(
        work,
        clip=clip_file,
        aesthetic=fixtures / "weights" / "aesthetic_random_scaled.pth",
        unimatch=fixtures / "weights" / "unimatch_random.pth",  # the full UniMatch architecture
        device=device,
    )
    out: dict[str, Any] = {
        "corpus": {
            "clips": len(paths),
            "distinct_sources": min(args.e2e_distinct, len(paths)),
            "size": [width, height],
            "frames": args.e2e_frames,
            "codec": "libx264 yuv420p (synth.write_clip)",
            "seconds": round(corpus_s, 2),
        },  # fmt: skip
        "clip_weights": str(clip_file.name),
        "precision": args.e2e_precision,
        "batch_size": args.e2e_batch,
        "num_workers": args.e2e_workers,
        "flow_size": list(args.flow_size),
    }
    options = job_options(device=device, precision=args.e2e_precision, batch_size=args.e2e_batch,
                          num_workers=args.e2e_workers)  # fmt: skip
    baseline = tf32_flags()

    def summary_dict(summary, wall: float) -> dict:
        return {
            "clips": summary.clips,
            "scored": summary.scored,
            "errors": summary.errors,
            "wall_seconds": round(wall, 3),
            "engine_seconds": round(summary.seconds, 3),
            "model_seconds": round(summary.model_seconds, 3),
            "clips_per_s_wall": summary.clips / wall if wall > 0 else None,
            "clips_per_s_engine": summary.clips / summary.seconds if summary.seconds > 0 else None,
        }

    # clip_embeddings: decode 3 frames + CLIP image tower (one pass serves aesthetic and matching).
    restore_tf32_flags(baseline)
    reset_peak(device)
    t0 = time.perf_counter()
    frames, summary = score_videos(["clip_embeddings"], videos, "bench", settings, options)
    frame = frames["clip_embeddings"]
    wall = emb_wall = time.perf_counter() - t0
    out["clip_embeddings"] = {
        **summary_dict(summary, wall),
        "rows": len(frame),
        "peak_gpu_gib": peak_memory_gib(device),
    }
    log(f"e2e clip_embeddings: {out['clip_embeddings']}")

    # aesthetic_scores + matching_scores from the stored embeddings, as the Dagster assets do.
    ids = list(videos["video_id"])
    job = ClipJob(settings, options)
    t0 = time.perf_counter()
    _ = job.clip, job.mlp
    load_s = time.perf_counter() - t0
    items = frame_embeddings_from_rows(frame, ids)
    t0 = time.perf_counter()
    aes = job.aesthetic_rows(items, "bench")
    aes_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    match = job.matching_rows(items, list(videos["text"]), "bench")
    match_s = time.perf_counter() - t0
    out["derived"] = {
        "model_load_seconds": round(load_s, 3),
        "aesthetic_seconds": round(aes_s, 3),
        "matching_seconds": round(match_s, 3),
        "aesthetic_errors": int(aes["error"].notna().sum()),
        "matching_errors": int(match["error"].notna().sum()),
        "aes_mean": float(aes["aes"].mean()),
    }
    del job
    free_device(device)

    # flow_scores: decode 4 frames + resize + UniMatch.
    restore_tf32_flags(baseline)
    reset_peak(device)
    saved_size = flow_module.FLOW_SIZE
    if tuple(args.flow_size) != tuple(saved_size):
        # Dry run only: a toy resolution so CPU UniMatch takes seconds. Workers fork after this.
        flow_module.FLOW_SIZE = tuple(args.flow_size)
    try:
        probe = flow_module.prepare_flow_frames(torch.zeros((1, 8, 8, 3), dtype=torch.uint8))
        out["flow_size_applied"] = list(probe.shape[-2:]) == list(args.flow_size)
        t0 = time.perf_counter()
        flow_frames, flow_summary = score_videos(["flow_scores"], videos, "bench", settings, options)
        wall = time.perf_counter() - t0
        flow_frame = flow_frames["flow_scores"]
        out["flow_scores"] = {
            **summary_dict(flow_summary, wall),
            "rows": len(flow_frame),
            "flow_mean": float(flow_frame["flow"].mean()) if flow_frame["flow"].notna().any() else None,
            "peak_gpu_gib": peak_memory_gib(device),
            "tf32_flags_after": tf32_flags(),
        }
        log(f"e2e flow_scores: {out['flow_scores']}")
        # Both per-clip tables in one step, one decode per clip (what a run selecting both does). The
        # page cache is as warm as for the second of the separate runs.
        restore_tf32_flags(baseline)
        reset_peak(device)
        t0 = time.perf_counter()
        both, both_summary = score_videos(["clip_embeddings", "flow_scores"], videos, "bench", settings, options)
        both_wall = time.perf_counter() - t0
        every = every_per_clip_table(videos, settings, options, device, baseline, summary_dict)
    finally:
        flow_module.FLOW_SIZE = saved_size
    out["clip_embeddings+flow_scores"] = {
        **summary_dict(both_summary, both_wall),
        "rows": {table: len(f) for table, f in both.items()},
        "same_flow_as_alone": bool(
            np.allclose(both["flow_scores"]["flow"].astype(float), flow_frame["flow"].astype(float), equal_nan=True)
        ),
        "vs_separate_wall": both_wall / (emb_wall + wall) if emb_wall + wall > 0 else None,
        "peak_gpu_gib": peak_memory_gib(device),
    }
    log(f"e2e clip_embeddings+flow_scores (one decode per clip): {out['clip_embeddings+flow_scores']}")
    every["vs_clip_embeddings+flow_scores_wall"] = every["wall_seconds"] / both_wall if both_wall > 0 else None
    out["every_per_clip_table"] = every
    restore_tf32_flags(baseline)
    emb, fl = out["clip_embeddings"], out["flow_scores"]
    total = (
        emb["wall_seconds"]
        + out["derived"]["aesthetic_seconds"]
        + out["derived"]["matching_seconds"]
        + fl["wall_seconds"]
    )
    out["all_scores_clips_per_s_wall"] = len(paths) / total if total > 0 else None
    out["errors"] = (
        emb["errors"] + fl["errors"] + out["derived"]["aesthetic_errors"] + out["derived"]["matching_errors"]
        + every["errors"]
    )  # fmt: skip
    out["notes"] = [
        "score_videos is what vidscore_dagster.defs.publishing.score_per_clip calls for clip_embeddings and "
        "flow_scores (one process, no torchrun; both selected: one step, one decode per clip); aesthetic_rows/matching_rows are what the aesthetic_scores and "
        "matching_scores assets compute from the stored embeddings.",
        "wall includes model loading and worker start; engine = the engine's own time (decode + model).",
    ]
    return out


def every_per_clip_table(videos, settings, options, device: str, baseline: dict, summary_dict) -> dict:
    """All the per-clip tables in one step, one decode per clip (`score all` and a run of every score):
    CLIP, UniMatch with object motion, camera motion, luminance, blur, OCR and TransNetV2 on the device.
    OCR is left out where onnxruntime has no CUDA provider (its job would fail there), and says so."""
    from vidscore_core.models.ppocr_det import providers_for
    from vidscore_core.scores import OCR, PER_CLIP_TABLES
    from vidscore_core.scoring.per_clip import score_videos

    tables, left_out = list(PER_CLIP_TABLES), {}
    try:
        providers_for(device)
    except RuntimeError as exc:
        tables.remove(OCR.table)
        left_out[OCR.table] = str(exc)
    restore_tf32_flags(baseline)
    reset_peak(device)
    t0 = time.perf_counter()
    frames, summary = score_videos(tables, videos, "bench", settings, options)
    wall = time.perf_counter() - t0
    out = {**summary_dict(summary, wall), "tables": tables, "left_out": left_out,
           "errors_by_table": {t: int(f["error"].notna().sum()) for t, f in frames.items()},
           "peak_gpu_gib": peak_memory_gib(device)}  # fmt: skip
    log(f"e2e every per-clip table (one decode per clip): {out}")
    restore_tf32_flags(baseline)
    return out


# ----------------------------------------------------------------------------------------------------
# 5. targets
# ----------------------------------------------------------------------------------------------------


def _best(batches: dict, field: str) -> tuple[float | None, str | None]:
    best, where = None, None
    for bs, row in (batches or {}).items():
        value = row.get(field) if isinstance(row, dict) else None
        if value is not None and (best is None or value > best):
            best, where = value, bs
    return best, where


def _resolve(precisions: dict, name: str) -> dict:
    entry = precisions.get(name) or {}
    if "same_as" in entry:
        return precisions.get(entry["same_as"]) or {}
    return entry


def evaluate_targets(report: dict, dry_run: bool) -> dict:
    out: dict[str, Any] = {}
    clip = (report.get("clip_throughput") or {}).get("precisions") or {}
    default = "auto" if "auto" in clip else next(iter(clip), None)
    rows = []
    for name in clip:
        entry = _resolve(clip, name)
        best, bs = _best(entry.get("batches"), "aesthetic_clips_per_s")
        if best is not None:
            batch = entry["batches"][bs]
            rows.append({"precision": name, "batch_images": int(bs), "aesthetic_clips_per_s": best,
                         "aes_plus_match_over_aes": batch.get("aes_plus_match_over_aes")})  # fmt: skip
    default_row = next((r for r in rows if r["precision"] == default), None)
    best_row = max(rows, key=lambda r: r["aesthetic_clips_per_s"], default=None)
    out["aesthetic_model_side"] = {
        "target": f">= {TARGETS['aesthetic_clips_per_s']:.0f} clips/s at 3 frames (model side)",
        "default_precision": default,
        "at_default": default_row,
        "best": best_row,
        "met": None
        if default_row is None
        else default_row["aesthetic_clips_per_s"] >= TARGETS["aesthetic_clips_per_s"],
        "met_at_best_precision": None
        if best_row is None
        else best_row["aesthetic_clips_per_s"] >= TARGETS["aesthetic_clips_per_s"],
    }
    ratio_row = default_row or best_row
    out["aes_plus_match"] = {
        "target": f"aesthetic + matching <= {TARGETS['aes_plus_match_over_aes']}x aesthetic alone",
        "ratio": None if ratio_row is None else ratio_row["aes_plus_match_over_aes"],
        "at": None
        if ratio_row is None
        else {"precision": ratio_row["precision"], "batch_images": ratio_row["batch_images"]},
        "met": None
        if ratio_row is None or ratio_row["aes_plus_match_over_aes"] is None
        else ratio_row["aes_plus_match_over_aes"] <= TARGETS["aes_plus_match_over_aes"],
    }
    flow = (report.get("unimatch_throughput") or {}).get("precisions") or {}
    figures = {}
    for name in flow:
        best, where = _best(_resolve(flow, name).get("batches"), "pairs_per_s")
        if best is not None:
            figures[name] = {"pairs_per_s": best, "clips_in_batch": int(where)}
    parity = report.get("parity") or {}
    equal_scores = {
        name: entry.get("scores", {}).get("flow", {}).get("pass")
        for name, entry in (parity.get("precisions") or {}).items()
    }
    out["unimatch_vs_reference"] = {
        "target": f"UniMatch >= {TARGETS['unimatch_over_reference']:.0f}x the reference implementation's pairs/s at equal scores",
        "pairs_per_s": figures,
        "flow_parity_by_precision": equal_scores,
        "reference_pairs_per_s": None,
        "met": None,
        "note": "the reference implementation (Open-Sora tools/scoring/optical_flow with upstream UniMatch) is not "
        "available offline; run it on the same device at 320x576 and divide. Only precisions whose flow parity "
        "passes count as 'equal scores'.",
    }
    if dry_run:
        out["note"] = "dry run: toy models on CPU; these figures say nothing about a GPU."
    return out


# ----------------------------------------------------------------------------------------------------
# reports
# ----------------------------------------------------------------------------------------------------


def _unavailable(section: dict) -> list[str]:
    """The report lines of a section that did not produce figures (not run, skipped, failed); [] if it did."""
    if not section:
        return ["_not run (see --sections)_", ""]
    if section.get("status") == "skipped":
        return [f"_skipped: {section.get('reason')}_", ""]
    if section.get("status") == "error":
        return [f"**error**: {section.get('error')}", ""]
    return []


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) < 1e-2:
            return f"{value:.2e}"
        return f"{value:.{digits}g}"
    return str(value)


def markdown(report: dict) -> str:
    env = report.get("environment", {})
    lines = [
        f"# GPU check: {env.get('device_name', '?')}{' (DRY RUN, CPU, toy sizes)' if env.get('dry_run') else ''}",
        "",
    ]
    lines += [
        f"* started {env.get('started_utc')}, total {report.get('total_seconds')} s; verdict: **{report.get('verdict')}**",
        f"* device `{env.get('device')}` {env.get('device_name')} (capability {env.get('device_capability', '–')}, "
        f"{env.get('device_memory_gib', '–')} GiB), driver {env.get('driver', '–')}",
        f"* torch {env.get('torch')}, CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')}, Python {env.get('python')}, "
        f"{env.get('cpu_count')} CPUs, git {env.get('git_commit', '–')}",
        f"* packages: {', '.join(f'{k} {v}' for k, v in env.get('packages', {}).items())}",
        f"* command: `python bench/gpu_check.py {' '.join(env.get('argv', []))}`",
        "",
    ]
    parity = report.get("parity", {})
    lines += ["## 1. Parity with the CPU float32 reference fixtures", ""]
    unavailable = _unavailable(parity)
    if unavailable:
        lines += unavailable
    else:
        tol = parity.get("tolerances", TOLERANCES)
        lines += [
            f"Production path `csv_scoring.score_rows` on `fixtures/media/meta.csv` (fixture weights). Bounds: "
            f"|Δaes| ≤ {tol['aes']}, |Δmatch| ≤ {tol['match']}, |Δflow|/flow ≤ {tol['flow_rel']}. {parity.get('note', '')}",
            "",
            "| precision | effective | max abs Δaes | max abs Δmatch | max Δflow/flow | bad file → error | TF32 flags leaked | pass |",
            "|---|---|---:|---:|---:|---|---|---|",
        ]
        for name, entry in parity.get("precisions", {}).items():
            s = entry.get("scores", {})
            eff = ", ".join(f"{k}={v}" for k, v in entry.get("effective", {}).items())

            def cell(col: str, field: str, s: dict = s) -> str:
                r = s.get(col, {})
                if r.get("status") != "ok":
                    return r.get("status", "–")
                mark = "" if r.get("pass") else " ✗"
                return _fmt(r.get(field)) + mark

            bad = all(
                s.get(c, {}).get("bad_file_gets_error")
                for c in ("aes", "match", "flow")
                if s.get(c, {}).get("status") == "ok"
            )
            leaked = any(s.get(c, {}).get("tf32_flags_leaked") for c in ("aes", "match", "flow"))
            lines.append(
                f"| {name} | {eff} | {cell('aes', 'max_abs_delta')} | {cell('match', 'max_abs_delta')} | "
                f"{cell('flow', 'max_rel_delta')} | {_fmt(bad)} | {_fmt(leaked) if leaked else 'no'} | {_fmt(entry.get('pass'))} |"
            )
        lines += [
            "",
            f"Flow clips compared: {', '.join(parity.get('flow_clips', []))}. Required (fp32) pass: **{_fmt(parity.get('pass'))}**.",
            "",
        ]
        for name, entry in parity.get("precisions", {}).items():
            for col, r in entry.get("scores", {}).items():
                if r.get("status") == "error":
                    lines += [f"* {name} {col}: error {r.get('error')}"]
        lines.append("")
    clip = report.get("clip_throughput", {})
    lines += ["## 2. CLIP ViT-L/14 throughput", ""]
    unavailable = _unavailable(clip)
    if unavailable:
        lines += unavailable
    else:
        mc = clip.get("manifest_check", {})
        arch = mc.get("arch", {})
        lines += [
            f"Model: {clip.get('model')}. Manifest check (repo's `build_clip` on the meta device vs "
            f"`openai_clip_ViT-L-14.tsv`): {mc.get('tensors')} tensors, {mc.get('parameters'):,} parameters, "
            f"embed {arch.get('embed_dim')}, vision {arch.get('vision_layers')} layers at {arch.get('image_size')}, "
            f"text {arch.get('text_layers')} layers: **{'ok' if mc.get('ok') else 'MISMATCH'}**.",
            "",
            "| precision | effective | load s | images/batch | tower img/s | tower clips/s | scorer step clips/s | aesthetic clips/s | aes+match clips/s | aes+match / aes | tokenize s | peak GiB |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, entry in clip.get("precisions", {}).items():
            eff = entry.get("effective", {}).get("clip_dtype", "–")
            if "same_as" in entry:
                lines.append(
                    f"| {name} | {eff} | {_fmt(entry.get('load_seconds'))} | same as {entry['same_as']} | | | | | | | | |"
                )
                continue
            if entry.get("status") == "skipped":
                lines.append(f"| {name} | – | – | skipped: {entry.get('reason')} | | | | | | | | |")
                continue
            for bs, row in entry.get("batches", {}).items():
                if "tower_images_per_s" not in row:
                    lines.append(
                        f"| {name} | {eff} | | {bs} | {row.get('status')}: {row.get('error', row.get('reason', ''))} | | | | | | | |"
                    )
                    continue
                lines.append(
                    f"| {name} | {eff} | {_fmt(entry.get('load_seconds'))} | {bs} | {_fmt(row['tower_images_per_s'])} | "
                    f"{_fmt(row['tower_clips_per_s'])} | {_fmt(row['scorer_step_clips_per_s'])} | {_fmt(row['aesthetic_clips_per_s'])} | "
                    f"{_fmt(row['aes_plus_match_clips_per_s'])} | {_fmt(row['aes_plus_match_over_aes'], 4)} | "
                    f"{_fmt(row['matching_tokenize_s'])} | {_fmt(row.get('peak_gpu_gib'))} |"
                )
        lines += [""] + [f"* {n}" for n in clip.get("notes", [])] + [""]
    flow = report.get("unimatch_throughput", {})
    lines += ["## 3. UniMatch throughput", ""]
    unavailable = _unavailable(flow)
    if unavailable:
        lines += unavailable
    else:
        mc = flow.get("manifest_check", {})
        res = flow.get("resolution", [320, 576])
        lines += [
            f"gmflow-scale2-regrefine6, random weights from the repo's `build_unimatch` (manifest check: {mc.get('tensors')} "
            f"tensors, {mc.get('parameters'):,} parameters: **{'ok' if mc.get('ok') else 'MISMATCH'}**), at {res[0]}×{res[1]}.",
            "",
            "| precision | effective | clips/batch | pairs/batch | pairs/s | clips/s | peak GiB |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for name, entry in flow.get("precisions", {}).items():
            eff = entry.get("effective", {})
            eff_s = eff.get("flow_precision", "–")
            if "same_as" in entry:
                lines.append(f"| {name} | {eff_s} | same as {entry['same_as']} | | | | |")
                continue
            if entry.get("status") == "skipped":
                lines.append(f"| {name} | – | skipped: {entry.get('reason')} | | | | |")
                continue
            for n, row in entry.get("batches", {}).items():
                if "pairs_per_s" not in row:
                    lines.append(f"| {name} | {eff_s} | {n} | {row.get('status')} | | | |")
                    continue
                lines.append(
                    f"| {name} | {eff_s} | {n} | {row['pairs']} | {_fmt(row['pairs_per_s'])} | {_fmt(row['clips_per_s'])} | "
                    f"{_fmt(row.get('peak_gpu_gib'))} |"
                )
        lines += [""] + [f"* {n}" for n in flow.get("notes", [])] + [""]
    e2e = report.get("end_to_end", {})
    lines += ["## 4. End to end (the assets' code path)", ""]
    unavailable = _unavailable(e2e)
    if unavailable:
        lines += unavailable
    else:
        c = e2e.get("corpus", {})
        lines += [
            f"Corpus: {c.get('clips')} clips ({c.get('distinct_sources')} distinct generated pans, {c.get('size')}, "
            f"{c.get('frames')} frames, {c.get('codec')}), precision `{e2e.get('precision')}`, batch {e2e.get('batch_size')} "
            f"clips, {e2e.get('num_workers')} decode workers, flow at {e2e.get('flow_size')}.",
            "",
            "| step | clips | errors | wall s | engine s | model s | clips/s (wall) | clips/s (engine) | peak GiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in ("clip_embeddings", "flow_scores", "clip_embeddings+flow_scores", "every_per_clip_table"):
            r = e2e.get(name, {})
            lines.append(
                f"| {name} (decode + model{', one decode per clip' if '+' in name else ''}) | {r.get('clips')} | {r.get('errors')} | {_fmt(r.get('wall_seconds'))} | "
                f"{_fmt(r.get('engine_seconds'))} | {_fmt(r.get('model_seconds'))} | {_fmt(r.get('clips_per_s_wall'))} | "
                f"{_fmt(r.get('clips_per_s_engine'))} | {_fmt(r.get('peak_gpu_gib'))} |"
            )
        d, every = e2e.get("derived", {}), e2e.get("every_per_clip_table", {})
        lines += (
            [
                "",
                f"Aesthetic and matching rows from the stored embeddings: model load {_fmt(d.get('model_load_seconds'))} s, "
                f"aesthetic {_fmt(d.get('aesthetic_seconds'))} s, matching {_fmt(d.get('matching_seconds'))} s. "
                f"All four scores: **{_fmt(e2e.get('all_scores_clips_per_s_wall'))} clips/s** (wall, sequential steps); "
                f"errors {e2e.get('errors')}.",
                "",
                f"Both per-clip tables in one step (one decode per clip): "
                f"{_fmt(e2e.get('clip_embeddings+flow_scores', {}).get('vs_separate_wall'))}× the wall time of the two "
                f"steps run apart; same flow values: {e2e.get('clip_embeddings+flow_scores', {}).get('same_flow_as_alone')}.",
                "",
                f"Every per-clip table in one step ({', '.join(every.get('tables', []))}; what `score all` computes): "
                f"{_fmt(every.get('vs_clip_embeddings+flow_scores_wall'))}× the wall time of clip_embeddings+flow_scores; "
                f"errors by table {every.get('errors_by_table')}"
                + "".join(f"; **{t} left out**: {why}" for t, why in every.get("left_out", {}).items()) + ".",
                "",
            ]
            + [f"* {n}" for n in e2e.get("notes", [])]
            + [""]
        )
    t = report.get("targets", {})
    lines += ["## 5. Targets (issue 11)", ""]
    if t.get("note"):
        lines += [f"_{t['note']}_", ""]
    a = t.get("aesthetic_model_side", {})
    at = a.get("at_default") or {}
    best = a.get("best") or {}
    lines += [
        "| target | figure | met |",
        "|---|---|---|",
        f"| {a.get('target')} | {_fmt(at.get('aesthetic_clips_per_s'))} clips/s at `{a.get('default_precision')}` "
        f"(batch {at.get('batch_images')} images); best {_fmt(best.get('aesthetic_clips_per_s'))} at `{best.get('precision')}` | "
        f"{_fmt(a.get('met'))} (best precision: {_fmt(a.get('met_at_best_precision'))}) |",
    ]
    m = t.get("aes_plus_match", {})
    lines.append(
        f"| {m.get('target')} | ×{_fmt(m.get('ratio'), 4)} at {m.get('at')} | {_fmt(m.get('met'))} |"
    )
    u = t.get("unimatch_vs_reference", {})
    figs = ", ".join(f"{k}: {_fmt(v['pairs_per_s'])} pairs/s" for k, v in u.get("pairs_per_s", {}).items())
    lines.append(f"| {u.get('target')} | {figs or '–'}; reference: not measured | needs the reference run |")
    lines += ["", u.get("note", ""), ""]
    lines += text_and_shots_markdown(report.get("text_and_shots", {}))
    errors = [k for k, v in report.items() if isinstance(v, dict) and v.get("status") == "error"]
    if errors:
        lines += ["## Errors", ""]
        for k in errors:
            lines += [
                f"### {k}",
                "",
                "```",
                report[k].get("traceback", report[k].get("error", "")),
                "```",
                "",
            ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------------


def text_and_shots_markdown(ts: dict) -> list[str]:
    lines = ["## 6. Text and shots (ocr, shots)", ""]
    unavailable = _unavailable(ts)
    if unavailable:
        return lines + unavailable
    ocr, shots, decode = ts.get("ocr", {}), ts.get("shots", {}), ts.get("decode", {})
    if ocr.get("status") == "unavailable":
        lines += [f"ocr on the device: unavailable ({ocr.get('reason')})", ""]
    else:
        lines += [f"ocr providers {ocr.get('providers')}; device vs CPU boxes agree: **{ocr.get('pass')}**", "",
                  "| frame | CPU boxes | device boxes | CPU area | device area |", "|---:|---:|---:|---:|---:|"]  # fmt: skip
        for i, f in enumerate(ocr.get("frames", [])):
            lines.append(f"| {i} | {f['cpu_boxes']} | {f['device_boxes']} | {_fmt(f['cpu_area'], 4)} | "
                         f"{_fmt(f['device_area'], 4)} |")  # fmt: skip
        figs = ", ".join(f"batch {k}: {_fmt(v['frames_per_s'])}" for k, v in ocr.get("batches", {}).items())
        lines += ["", f"ocr throughput (1024×1024 frames/s): {figs}", ""]
    figs = ", ".join(f"{k} windows: {_fmt(v['frames_per_s'])}" for k, v in shots.get("batches", {}).items())
    lines += [
        f"TransNetV2 on the device: max |Δp| vs CPU {_fmt(shots.get('max_abs_delta'), 6)}, same shots "
        f"{shots.get('same_shots')} ({shots.get('shots')}; join at frame {shots.get('join_frame')}); "
        f"frames/s: {figs}",
        "",
        f"Decoding {decode.get('clip')} on the CPU: every frame at 48×27 {_fmt(decode.get('every_frame_48x27_s'), 4)} s, "
        f"the three CLIP frames alone {_fmt(decode.get('clip_frames_s'), 4)} s.",
        "",
    ]
    return lines + [f"* {n}" for n in ts.get("notes", [])] + [""]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: proves the script works (CI)")
    p.add_argument(
        "--out", default=None, help="report folder (default bench/results/; a temp dir with --dry-run)"
    )
    p.add_argument(
        "--fixtures", default=None, help="fixtures folder (default $VIDSCORE_FIXTURES, ../shared/fixtures)"
    )
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu: full sizes on CPU (default cuda)")
    p.add_argument("--precisions", default=None, help="comma list (default: every JobOptions precision)")
    p.add_argument("--sections", default="parity,clip,unimatch,e2e,text_shots", help="comma list of sections to run")
    p.add_argument("--budget-s", type=float, default=None,
                   help="after this many seconds, skip the remaining throughput measurements and the end-to-end "
                   "section (default 360; 3600 with --dry-run)")  # fmt: skip
    p.add_argument("--clip-batches", default=None, help="CLIP batch sizes in images (default 32,128,512)")
    p.add_argument(
        "--flow-batches", default=None, help="UniMatch batch sizes in clips of 3 pairs (default 1,16)"
    )
    p.add_argument("--e2e-clips", type=int, default=None, help="end-to-end corpus size (default 200)")
    p.add_argument("--e2e-workers", type=int, default=None, help="decode workers (default min(12, CPUs - 2))")
    p.add_argument(
        "--e2e-batch", type=int, default=None, help="clips per model batch end to end (default 64)"
    )
    p.add_argument("--e2e-precision", default="auto")
    p.add_argument(
        "--flow-parity-clips", type=int, default=None, help="flow parity on the last N clips (default all)"
    )
    p.add_argument(
        "--keep-work", action="store_true", help="keep the scratch folder (random checkpoints, corpus)"
    )
    args = p.parse_args(argv)
    dry = args.dry_run
    if args.budget_s is None:
        args.budget_s = 3600.0 if dry else 360.0
    cpus = os.cpu_count() or 2
    args.clip_batches = [int(x) for x in (args.clip_batches or ("6,12" if dry else "32,128,512")).split(",")]
    args.flow_batches = [int(x) for x in (args.flow_batches or ("1" if dry else "1,16")).split(",")]
    args.e2e_clips = args.e2e_clips or (2 if dry else 200)
    args.e2e_workers = args.e2e_workers or (1 if dry else max(2, min(12, cpus - 2)))
    args.e2e_batch = args.e2e_batch or (2 if dry else 64)
    args.e2e_distinct = 2 if dry else 8
    args.e2e_clip_size = (160, 96) if dry else (640, 360)
    args.e2e_frames = 32
    args.flow_size = (32, 64) if dry else (320, 576)  # UniMatch needs multiples of 32
    args.ocr_batches = [1] if dry else [1, 8, 32]
    args.ocr_frames = 1 if dry else 3  # fixture frames compared, each also with drawn words
    args.shot_windows = [2] if dry else [16, 64, 256]
    if dry and args.flow_parity_clips is None:
        args.flow_parity_clips = 1
    args.warmup = 0 if dry else 2
    args.min_iters = 1 if dry else 3
    args.max_iters = 2 if dry else 20
    args.min_seconds = 0.0 if dry else 1.0
    args.parity_batch = 4
    args.parity_workers = 1 if dry else 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    fixtures = find_fixtures(args.fixtures)
    if fixtures is None:
        print(
            "gpu_check: parity fixtures not found: pass --fixtures DIR or set VIDSCORE_FIXTURES",
            file=sys.stderr,
        )
        return 2
    work = Path(tempfile.mkdtemp(prefix="vidscore-gpu-check-"))
    if not args.keep_work:  # also when a section's bug ends the run: the corpus and weights take GBs
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    os.environ["VIDSCORE_HOME"] = str(work / "home")  # sha256 cache etc. stay out of the repository
    if args.out:
        out_dir = Path(args.out)
    elif args.dry_run:
        out_dir = Path(tempfile.mkdtemp(prefix="vidscore-gpu-check-report-"))
    else:
        out_dir = REPO / "bench" / "results"
    import torch

    if args.dry_run:
        device = "cpu"
    else:
        device = args.device
        if device.startswith("cuda") and not torch.cuda.is_available():
            print(
                "gpu_check: CUDA is not available here; use --dry-run to check the script on CPU",
                file=sys.stderr,
            )
            return 2
        if device.startswith("cuda:"):
            torch.cuda.set_device(torch.device(device))
    all_precisions = offered_precisions()
    if args.precisions:
        precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    else:
        precisions = all_precisions
    parity_precisions = precisions if (args.precisions or not args.dry_run) else ["fp32"]
    bench_precisions = precisions if (args.precisions or not args.dry_run) else ["auto", "fp32"]
    bench_precisions = [p for p in bench_precisions if p != "auto"] + (
        ["auto"] if "auto" in bench_precisions else []
    )
    wanted = {s.strip() for s in args.sections.split(",")}

    report: dict[str, Any] = {"tool": "bench/gpu_check.py", "offered_precisions": all_precisions}
    section(report, "environment", lambda: environment(args, device))
    log(f"fixtures {fixtures}, device {device} ({report['environment'].get('device_name')}), work {work}")
    if "parity" in wanted:
        section(report, "parity", lambda: parity(args, device, fixtures, work, parity_precisions, budget))
    clip_file = fixtures / "weights" / "clip_tiny_openai.pt"
    if "clip" in wanted:
        section(
            report,
            "clip_throughput",
            lambda: clip_throughput(args, device, fixtures, work, bench_precisions, budget),
        )
        random_clip = work / "random_ViT-L-14.pt"
        if random_clip.is_file():
            clip_file = random_clip
    if "unimatch" in wanted:
        section(report, "unimatch_throughput",
                lambda: unimatch_throughput(args, device, fixtures, work, bench_precisions, budget))  # fmt: skip
    if "e2e" in wanted:
        if budget.left() < 0:
            report["end_to_end"] = {
                "status": "skipped",
                "reason": f"time budget of {args.budget_s:.0f} s spent",
            }
        else:
            section(report, "end_to_end", lambda: end_to_end(args, device, fixtures, work, budget, clip_file))
    if "text_shots" in wanted:
        section(report, "text_and_shots", lambda: text_and_shots(args, device, fixtures, work))
    report["targets"] = evaluate_targets(report, args.dry_run)
    report["total_seconds"] = round(budget.elapsed, 1)
    failed = [k for k, v in report.items() if isinstance(v, dict) and v.get("status") == "error"]
    parity_ok = report.get("parity", {}).get("pass") is not False and report.get("text_and_shots", {}).get("pass") is not False
    report["verdict"] = "pass" if not failed and parity_ok else "fail"
    report["failed_sections"] = failed

    out_dir.mkdir(parents=True, exist_ok=True)
    name = str(report["environment"].get("device_name", "cuda")).lower()
    slug = (
        "cpu-dry-run" if args.dry_run else "-".join("".join(c if c.isalnum() else " " for c in name).split())
    )
    json_path = out_dir / f"gpu_check-{slug}.json"
    md_path = out_dir / f"gpu_check-{slug}.md"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md_path.write_text(markdown(report))
    log(f"verdict {report['verdict']} in {report['total_seconds']} s; wrote {json_path} and {md_path}")
    return 0 if report["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
