"""CLIP + aesthetic models: strict loading of the official layouts, parity with the reference scores."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

from vidscore_core.models.aesthetic import AestheticMLP, load_aesthetic
from vidscore_core.models.clip import (
    OPENAI_MEAN,
    OPENAI_STD,
    ClipModel,
    build_clip,
    load_clip,
    normalize_uint8,
    read_clip_state_dict,
    tokenize,
)
from vidscore_core.models.clip_preprocess import clip_crop

SOT, EOT = 49406, 49407
OPENAI_SCALARS = {"input_resolution": 224, "context_length": 77, "vocab_size": 49408}


def read_manifest(path: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    rows = (line.rstrip("\n").split("\t") for line in path.read_text().splitlines())
    return {key: (tuple(json.loads(shape)), getattr(torch, dtype)) for key, shape, dtype in rows}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def decode_frames(path: Path, wanted: set[int]) -> tuple[dict[int, np.ndarray], int]:
    """Sequential PyAV decode (pixel-identical to decord here); returns the wanted frames and the count."""
    frames: dict[int, np.ndarray] = {}
    count = 0
    with av.open(str(path)) as container:
        for count, frame in enumerate(container.decode(video=0), start=1):
            if count - 1 in wanted:
                frames[count - 1] = frame.to_ndarray(format="rgb24")
    return frames, count


@pytest.fixture(scope="session")
def tiny_clip(fixtures: Path) -> ClipModel:
    return load_clip(fixtures / "weights" / "clip_tiny_openai.pt")


# --- strict loading against the official layouts -------------------------------------------------


def test_vit_l14_layout_is_inferred_and_loads_strictly(fixtures: Path) -> None:
    manifest = read_manifest(fixtures / "manifests" / "openai_clip_ViT-L-14.tsv")
    # Meta tensors: the 427M-parameter layout without allocating it.
    state = {k: torch.empty(shape, dtype=dtype, device="meta") for k, (shape, dtype) in manifest.items()}
    state.update({k: torch.tensor(v) for k, v in OPENAI_SCALARS.items()})

    model = build_clip(state, device="meta")  # loads strictly: every key, every shape
    assert (len(model.visual.transformer.resblocks), len(model.transformer.resblocks)) == (24, 12)
    assert (model.visual.conv1.weight.shape[0], model.visual.conv1.kernel_size, model.visual.image_size) == (
        1024, (14, 14), (224, 224))  # fmt: skip
    assert (model.context_length, model.vocab_size, model.text_projection.shape[1]) == (77, 49408, 768)
    assert (model.transformer.width, model.transformer.resblocks[0].attn.num_heads) == (768, 12)
    built = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    assert built == manifest  # keys, shapes and OpenAI's float16/float32 split


def test_aesthetic_layout_loads_strictly(fixtures: Path, tmp_path: Path) -> None:
    manifest = read_manifest(fixtures / "manifests" / "aesthetic_mlp.tsv")
    assert {k: (tuple(v.shape), v.dtype) for k, v in AestheticMLP(768).state_dict().items()} == manifest
    path = tmp_path / "aesthetic.pth"
    torch.save({k: torch.zeros(shape, dtype=dtype) for k, (shape, dtype) in manifest.items()}, path)
    mlp = load_aesthetic(path, expected_dim=768)
    assert mlp.input_size == 768 and not mlp.training
    assert mlp(torch.ones(5, 768)).shape == (5,)


# --- the tiny OpenAI-format checkpoint -----------------------------------------------------------


def test_tiny_clip_reads_architecture_and_logit_scale(tiny_clip: ClipModel) -> None:
    assert tiny_clip.embed_dim == 768
    assert tiny_clip.image_size == 224
    assert tiny_clip.logit_scale == pytest.approx(2.65926003, abs=1e-7)
    assert tiny_clip.logit_scale_exp == pytest.approx(14.2857141, abs=1e-6)
    assert len(tiny_clip.model.visual.transformer.resblocks) == 2
    assert tiny_clip.model.transformer.resblocks[0].attn.num_heads == 1


def _save_torchscript_archive(fixtures: Path, path: Path) -> None:
    """A TorchScript archive shaped like OpenAI's ViT-L-14.pt: code + constants, the OpenAI keys
    and the three 0-dim scalars in its state_dict()."""
    state = read_clip_state_dict(fixtures / "weights" / "clip_tiny_openai.pt")
    model = build_clip(state).float()
    for key, value in OPENAI_SCALARS.items():
        model.__dict__.pop(key, None)  # open_clip keeps some of these as ints; OpenAI's archive as tensors
        model.register_buffer(key, torch.tensor(value))
    model.attn_mask = model._buffers.pop("attn_mask")  # a constant, not state, as in OpenAI's archive
    with torch.no_grad():
        traced = torch.jit.trace_module(
            model,
            {
                "encode_image": (torch.zeros(1, 3, 224, 224),),
                "encode_text": (torch.zeros(1, 77, dtype=torch.long),),
            },
        )
    torch.jit.save(traced, str(path))


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_torchscript_archive_loads_like_the_state_dict(
    fixtures: Path, tiny_clip: ClipModel, tmp_path: Path
) -> None:
    archive = tmp_path / "ViT-tiny.pt"
    _save_torchscript_archive(fixtures, archive)
    with zipfile.ZipFile(archive) as zf:  # a real TorchScript archive, not a torch.save zip
        assert any(name.endswith("/constants.pkl") for name in zf.namelist())
    state = read_clip_state_dict(archive)
    assert set(OPENAI_SCALARS) <= set(state)

    from_archive = load_clip(archive)
    assert from_archive.model.state_dict().keys() == tiny_clip.model.state_dict().keys()
    assert from_archive.logit_scale_exp == tiny_clip.logit_scale_exp
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    assert torch.equal(from_archive.encode_images(pixels), tiny_clip.encode_images(pixels))
    texts = ["a cat", "galaxies on a black sky"]
    assert torch.equal(from_archive.encode_texts(texts), tiny_clip.encode_texts(texts))


def test_float16_weights_load_like_openai(fixtures: Path, tiny_clip: ClipModel, tmp_path: Path) -> None:
    state = torch.load(fixtures / "weights" / "clip_tiny_openai.pt", weights_only=True)
    fp16_keys = {
        k
        for k, v in build_clip(state, device="meta").state_dict().items()
        if v.dtype == torch.float16
    }
    # 1) OpenAI's partially-float16 file gives the same model (the fixture values are float16-exact).
    mixed = {k: (v.half() if k in fp16_keys else v) for k, v in state.items()}
    torch.save(mixed, tmp_path / "mixed.pt")
    loaded = load_clip(tmp_path / "mixed.pt")
    pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    assert torch.equal(loaded.encode_images(pixels), tiny_clip.encode_images(pixels))
    # 2) float32 values that float16 cannot hold are rounded through float16, as clip.load does.
    key = "visual.proj"
    assert key in fp16_keys
    state[key] = state[key] + 1e-5
    torch.save(state, tmp_path / "fine.pt")
    param = load_clip(tmp_path / "fine.pt").model.state_dict()[key]
    assert param.dtype == torch.float32
    assert torch.equal(param, state[key].half().float())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_stays_close(fixtures: Path, tiny_clip: ClipModel, dtype: torch.dtype) -> None:
    low = load_clip(fixtures / "weights" / "clip_tiny_openai.pt", dtype=dtype)
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    emb = low.encode_images(pixels)
    assert emb.dtype == torch.float32
    assert torch.allclose(emb, tiny_clip.encode_images(pixels), atol=5e-2)
    assert torch.allclose(low.encode_texts(["a dog"]), tiny_clip.encode_texts(["a dog"]), atol=5e-2)


def test_resnet_clip_checkpoint_loads(tmp_path: Path) -> None:
    # OpenAI's RN50-style layout (a ModifiedResNet tower): the architecture is read from the weights too.
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(layers=(1, 1, 1, 1), width=8, image_size=64)
    text = CLIPTextCfg(context_length=16, vocab_size=100, width=64, heads=1, layers=1)
    torch.save(CLIP(24, vision, text, quick_gelu=True).state_dict(), tmp_path / "rn.pt")
    clip = load_clip(tmp_path / "rn.pt")
    assert (clip.image_size, clip.embed_dim, clip.context_length) == (64, 24, 16)
    assert [len(getattr(clip.model.visual, f"layer{b}")) for b in (1, 2, 3, 4)] == [1, 1, 1, 1]
    emb = clip.encode_images(torch.randn(2, 3, 64, 64))
    assert emb.shape == (2, 24)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2))


def test_missing_and_foreign_files_are_reported(fixtures: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_clip(tmp_path / "nope.pt")
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="not a CLIP checkpoint"):
        load_clip(text)
    with pytest.raises(ValueError, match="not an OpenAI-format CLIP"):
        load_clip(fixtures / "weights" / "aesthetic_random_scaled.pth")
    with pytest.raises(ValueError, match="not a CLIP checkpoint"):
        load_clip(fixtures / "weights" / "unimatch_random.pth")  # {"model": state_dict}
    with pytest.raises(ValueError, match="unsupported CLIP dtype"):
        load_clip(fixtures / "weights" / "clip_tiny_openai.pt", dtype=torch.float64)
    cut = tmp_path / "cut.pt"
    cut.write_bytes((fixtures / "weights" / "clip_tiny_openai.pt").read_bytes()[:100_000])
    with pytest.raises(ValueError, match="not a CLIP checkpoint"):
        load_clip(cut)


# --- preprocessing ------------------------------------------------------------------------------

REFERENCE_TRANSFORM = Compose(
    [
        Resize(224, interpolation=InterpolationMode.BICUBIC),
        CenterCrop(224),
        lambda image: image.convert("RGB"),  # openai-clip's _convert_image_to_rgb, after the crop
        ToTensor(),
        Normalize(OPENAI_MEAN, OPENAI_STD),
    ]
)


def _random_image(width: int, height: int, mode: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    # Smooth gradients plus noise: both matter for bicubic resampling.
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / max(width, 1), yy * 255 / max(height, 1), (xx + yy) % 256], axis=-1)
    pixels = np.clip(base + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    if mode == "RGBA":
        alpha = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
        image = image.convert("RGBA")
        image.putalpha(alpha)
        return image
    return image if mode == "RGB" else image.convert(mode)


@pytest.mark.parametrize(
    ("width", "height", "mode"),
    [
        (371, 370, "RGB"),  # odd width: long side int(224*371/370) = 224
        (640, 360, "RGB"),
        (360, 640, "RGB"),  # portrait
        (225, 224, "RGB"),  # crop offset rounds half to even
        (227, 224, "RGB"),
        (224, 224, "RGB"),  # no resize at all
        (100, 57, "RGB"),  # smaller than 224: upscaled
        (5, 3, "RGB"),
        (300, 200, "L"),
        (300, 200, "RGBA"),
        (300, 200, "P"),
    ],
)
def test_clip_crop_then_normalize_matches_torchvision(width: int, height: int, mode: str) -> None:
    image = _random_image(width, height, mode, seed=width * 1000 + height)
    crop = clip_crop(image)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    ours = normalize_uint8(torch.from_numpy(crop).unsqueeze(0))[0]
    assert torch.equal(ours, REFERENCE_TRANSFORM(image))


def test_clip_crop_accepts_rgb_arrays_and_other_sizes() -> None:
    image = _random_image(400, 250, "RGB", seed=7)
    assert np.array_equal(clip_crop(np.asarray(image)), clip_crop(image))
    assert clip_crop(image, size=64).shape == (64, 64, 3)
    with pytest.raises(ValueError):
        clip_crop(np.zeros((10, 10, 3), dtype=np.float32))


def test_normalize_uint8_rejects_non_frames() -> None:
    with pytest.raises(ValueError):
        normalize_uint8(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))  # CHW, not HWC
    with pytest.raises(ValueError):
        normalize_uint8(torch.zeros(1, 224, 224, 3))  # float


# --- tokenizer ----------------------------------------------------------------------------------


def test_tokenizer_matches_openai_conventions(tiny_clip: ClipModel) -> None:
    long_caption = " ".join(f"word{i}" for i in range(500))
    captions = [
        "a \"quoted\" caption with 'single' quotes",
        "first line\nsecond line\tand a tab",
        "a puppy 🐶 at a party 🎉",
        "一只猫坐在窗台上 日本語のキャプション",
        long_caption,
        "",
    ]
    tokens = tokenize(captions)
    assert tokens.shape == (6, 77) and tokens.dtype == torch.long
    assert (tokens[:, 0] == SOT).all()
    for row in tokens:
        assert (row == EOT).sum() == 1
    assert tokens[4, -1] == EOT  # truncated: the end token is kept last
    assert tokens[5, :3].tolist() == [SOT, EOT, 0]
    # Known ids from OpenAI's vocabulary, and its spelling of the special tokens.
    assert tokenize(["a diagram"])[0, :5].tolist() == [SOT, 320, 22697, EOT, 0]
    assert tokenize(["A Diagram"]).equal(tokenize(["a diagram"]))
    special = tokenize(["a <|endoftext|> b"])[0, :5].tolist()
    assert special == [SOT, 320, EOT, 321, EOT]

    emb = tiny_clip.encode_texts(captions)
    assert emb.shape == (6, 768) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=-1), torch.ones(6), atol=1e-6)
    assert tiny_clip.encode_texts([]).shape == (0, 768)


def test_match_scores_are_scaled_cosines(tiny_clip: ClipModel) -> None:
    a = torch.nn.functional.normalize(torch.randn(3, 768), dim=-1)
    scores = tiny_clip.match_scores(a, a)
    assert torch.allclose(scores, torch.full((3,), tiny_clip.logit_scale_exp))
    with pytest.raises(ValueError):
        tiny_clip.match_scores(a, a[:2])


# --- aesthetic head ------------------------------------------------------------------------------


def test_aesthetic_width_mismatch_is_explained(fixtures: Path, tmp_path: Path) -> None:
    weights = fixtures / "weights" / "aesthetic_random_scaled.pth"
    with pytest.raises(ValueError, match=r"expects 768-dim .* gives 512: use the ViT-L/14 weights"):
        load_aesthetic(weights, expected_dim=512)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_aesthetic(tmp_path / "missing.pth")
    torch.save({"layers.0.weight": torch.zeros(1024, 768)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="does not fit"):
        load_aesthetic(tmp_path / "partial.pth")


# --- parity with the reference scores -------------------------------------------------------------


def test_aes_and_match_reproduce_the_reference(fixtures: Path, tiny_clip: ClipModel) -> None:
    mlp = load_aesthetic(
        fixtures / "weights" / "aesthetic_random_scaled.pth", expected_dim=tiny_clip.embed_dim
    )
    captions = {row["path"]: row["text"] for row in read_csv(fixtures / "media" / "meta.csv")}
    counts = {
        row["path"]: int(row["decoded_frames"]) for row in read_csv(fixtures / "reference" / "frames.csv")
    }
    ref_aes = {r["path"]: float(r["aes"]) for r in read_csv(fixtures / "reference" / "aes.csv")}
    ref_match = {r["path"]: float(r["match"]) for r in read_csv(fixtures / "reference" / "match.csv")}
    ref_frames = {
        (r["path"], int(r["frame_index"])): float(r["aes_frame"])
        for r in read_csv(fixtures / "reference" / "aes_frames.csv")
    }

    worst = {"aes": 0.0, "aes_frame": 0.0, "match": 0.0}
    for rel, expected_aes in ref_aes.items():
        if rel in counts:
            n = counts[rel]
            aes_idx = [min(int(p * n), n - 1) for p in (0.1, 0.5, 0.9)]
            match_idx = min(int(0.5 * n), n - 1)
            frames, decoded = decode_frames(fixtures / rel, {*aes_idx, match_idx})
            assert decoded == n
            aes_frames, match_frame = [frames[i] for i in aes_idx], frames[match_idx]
        else:  # an image: one frame, read like torchvision's pil_loader
            aes_idx = [0]
            with Image.open(fixtures / rel) as image:
                rgb = image.convert("RGB")
            aes_frames, match_frame = [rgb], rgb

        crops = torch.from_numpy(np.stack([clip_crop(f, tiny_clip.image_size) for f in aes_frames]))
        emb = tiny_clip.encode_images(tiny_clip.normalize_uint8(crops))
        with torch.inference_mode():
            per_frame = mlp(emb)
        aes = per_frame.mean().item()
        for idx, value in zip(aes_idx, per_frame.tolist(), strict=True):
            worst["aes_frame"] = max(worst["aes_frame"], abs(value - ref_frames[(rel, idx)]))
        worst["aes"] = max(worst["aes"], abs(aes - expected_aes))

        image_emb = tiny_clip.encode_images(
            tiny_clip.normalize_uint8(torch.from_numpy(clip_crop(match_frame)).unsqueeze(0))
        )
        match = tiny_clip.match_scores(image_emb, tiny_clip.encode_texts([captions[rel]])).item()
        worst["match"] = max(worst["match"], abs(match - ref_match[rel]))

    assert worst["aes"] <= 2e-4, worst
    assert worst["aes_frame"] <= 2e-4, worst
    assert worst["match"] <= 1e-3, worst
