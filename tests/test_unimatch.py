"""UniMatch network: strict weight compatibility with the official checkpoint, loading errors, and
inference behaviour users rely on (shapes, size checks, batching, autocast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidscore_core.models.unimatch import UniMatch, build_unimatch, load_unimatch

MANIFEST = "manifests/unimatch_gmflow-scale2-regrefine6.tsv"
CHECKPOINT = "weights/unimatch_random.pth"


def _read_manifest(path: Path) -> dict[str, tuple[list[int], str]]:
    entries = {}
    for line in path.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        entries[key] = ([int(d) for d in shape.strip("[]").split(",") if d.strip()], dtype)
    return entries


@pytest.fixture(scope="module")
def random_model() -> UniMatch:
    torch.manual_seed(0)
    return build_unimatch().eval()


def test_state_dict_matches_official_manifest(fixtures: Path) -> None:
    manifest = _read_manifest(fixtures / MANIFEST)
    ours = {
        k: (list(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in build_unimatch().state_dict().items()
    }
    assert ours == manifest


def test_load_fixture_checkpoint_strictly(fixtures: Path) -> None:
    model = load_unimatch(fixtures / CHECKPOINT)
    assert not model.training
    saved = torch.load(fixtures / CHECKPOINT, weights_only=True)["model"]
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())


def test_bare_state_dict_is_accepted(fixtures: Path, tmp_path: Path) -> None:
    saved = torch.load(fixtures / CHECKPOINT, weights_only=True)["model"]
    torch.save(saved, tmp_path / "bare.pth")
    model = load_unimatch(str(tmp_path / "bare.pth"))
    assert torch.equal(model.refine_proj.weight, saved["refine_proj.weight"])


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "gmflow.pth"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_unimatch(missing)


def test_checkpoint_with_missing_key_fails_clearly(fixtures: Path, tmp_path: Path) -> None:
    state = torch.load(fixtures / CHECKPOINT, weights_only=True)["model"]
    del state["refine.gru.convq2.weight"]
    state["upsampler.0.weight"] = torch.zeros(1)
    torch.save({"model": state}, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="missing keys: refine.gru.convq2.weight") as err:
        load_unimatch(tmp_path / "broken.pth")
    assert "unexpected keys: upsampler.0.weight" in str(err.value)


def test_checkpoint_with_wrong_shape_fails_clearly(fixtures: Path, tmp_path: Path) -> None:
    state = torch.load(fixtures / CHECKPOINT, weights_only=True)["model"]
    state["refine_proj.bias"] = torch.zeros(128)
    torch.save({"model": state}, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"refine_proj.bias \(128,\) != \(256,\)"):
        load_unimatch(tmp_path / "shape.pth")


def test_non_checkpoint_file_is_a_value_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pth"):
        load_unimatch(junk)


def test_sizes_not_multiple_of_32_are_rejected(random_model: UniMatch) -> None:
    img = torch.zeros(1, 3, 100, 96)
    with pytest.raises(ValueError, match="multiple of 32"):
        random_model.estimate_flow(img, img)


def test_flow_shape_and_batch_independence(random_model: UniMatch) -> None:
    # Each pair's flow must not depend on what else is in the batch.
    gen = torch.Generator().manual_seed(1)
    img0 = torch.rand(2, 3, 64, 96, generator=gen) * 255
    img1 = torch.roll(img0, shifts=3, dims=-1)
    both = random_model.estimate_flow(img0, img1)
    first = random_model.estimate_flow(img0[:1], img1[:1])
    assert both.shape == (2, 2, 64, 96) and both.dtype == torch.float32
    assert torch.isfinite(both).all()
    torch.testing.assert_close(both[:1], first, rtol=1e-4, atol=1e-3)


def test_runs_under_bfloat16_autocast(random_model: UniMatch) -> None:
    gen = torch.Generator().manual_seed(2)
    # Smallest legal size: bf16 kernels are slow on CPUs without native bf16 support.
    img0 = torch.rand(1, 3, 32, 64, generator=gen) * 255
    with torch.autocast("cpu", dtype=torch.bfloat16):
        flow = random_model.estimate_flow(img0, torch.roll(img0, 2, dims=-1))
    assert flow.shape == (1, 2, 32, 64) and flow.dtype == torch.float32
    assert torch.isfinite(flow).all()
