"""TorchScript CLIP archives are read as data: no code in a checkpoint runs when vidscore loads it."""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from vidscore_core.models.clip import load_clip, read_clip_state_dict, read_torchscript_tensors


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.jit warns that it is deprecated; it is still the format OpenAI distributes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.norm = nn.BatchNorm1d(3)  # buffers: running stats and an int64 counter
        self.scale = nn.Parameter(torch.tensor(2.5))
        self.register_buffer("half_buf", torch.arange(6, dtype=torch.float16).view(2, 3))
        self.note = "not a tensor"

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.lin(x)) * self.scale


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_Block(), _Block()])
        self.head = nn.Linear(3, 2, bias=False)
        self.plain = torch.ones(2)  # a tensor attribute that is neither parameter nor buffer

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)[:, :4] if x.shape[1] == 4 else x
        return self.head(x) + self.plain.sum()


def test_archive_tensors_equal_torch_jit_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _Net().eval()
    net.blocks[1].lin.weight.data = net.blocks[1].lin.weight.data.t().contiguous().t()  # non-contiguous
    path = tmp_path / "net.pt"
    with _quiet():
        torch.jit.save(torch.jit.script(net), str(path))
        expected = torch.jit.load(str(path)).state_dict()  # a trusted file: the reference reading
    got = read_torchscript_tensors(path)
    assert list(got) == list(expected)  # same keys, same order: parameters and buffers only
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
    assert "plain" not in got and "blocks.0.norm.num_batches_tracked" in got


class _Evil(nn.Module):
    """Looks like weights; its __setstate__ writes a file, as any code in a checkpoint could."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.weight = nn.Parameter(torch.ones(3))

    @torch.jit.export
    def __getstate__(self) -> tuple[str, Tensor, bool]:
        return (self.marker, self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, Tensor, bool]) -> None:
        self.marker = state[0]
        self.weight = state[1]
        self.training = state[2]
        written = torch.from_file(self.marker, shared=True, size=4, dtype=torch.uint8)
        written.fill_(65)
        self.weight = self.weight + written.float().sum() * 0

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight


class _EvilOuter(nn.Module):
    def __init__(self, marker: str) -> None:
        super().__init__()
        self.inner = _Evil(marker)
        self.proj = nn.Linear(3, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.inner(x))


@pytest.fixture
def evil_archive(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "marker-written-by-the-checkpoint"
    path = tmp_path / "ViT-L-14.pt"
    with _quiet():
        torch.jit.save(torch.jit.script(_EvilOuter(str(marker))), str(path))
        assert not marker.exists()
        # Proof that the archive is hostile: loading it the way clip.load does runs its code.
        torch.jit.load(str(path))
    assert marker.exists()
    marker.unlink()
    return path, marker


def test_setstate_code_in_an_archive_never_runs(evil_archive: tuple[Path, Path]) -> None:
    path, marker = evil_archive
    with pytest.raises(ValueError, match="__setstate__"):
        read_clip_state_dict(path)
    with pytest.raises(ValueError, match="__setstate__"):
        load_clip(path)
    assert not marker.exists()


class _RunsAShellCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):  # what a hand-made pickle does: call any importable function on load
        return (os.system, (self.command,))


def test_foreign_globals_in_data_pkl_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    source = tmp_path / "net.pt"
    with _quiet():
        torch.jit.save(torch.jit.script(_Net()), str(source))
    hostile = tmp_path / "hostile.pt"
    payload = pickle.dumps({"x": _RunsAShellCommand(f"touch {marker}")}, protocol=2)
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(hostile, "w") as dst:
        for info in src.infolist():
            data = payload if info.filename.endswith("/data.pkl") else src.read(info)
            dst.writestr(info, data)
    with pytest.raises(ValueError, match=r"refusing"):
        read_clip_state_dict(hostile)
    assert not marker.exists()


def test_truncated_archive_is_a_clean_error(tmp_path: Path) -> None:
    source = tmp_path / "net.pt"
    with _quiet():
        torch.jit.save(torch.jit.script(_Net()), str(source))
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(broken, "w") as dst:
        for info in src.infolist():
            if "/data/" not in info.filename:  # drop the tensor payloads
                dst.writestr(info, src.read(info))
    with pytest.raises(ValueError, match="broken.pt"):
        read_clip_state_dict(broken)


def test_cli_refuses_a_hostile_clip_file_with_one_error_line(
    evil_archive: tuple[Path, Path], fixtures: Path, tmp_path: Path
) -> None:
    path, marker = evil_archive
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDSCORE_", "DAGSTER_"))}
    env.update(
        HOME=str(tmp_path),
        VIDSCORE_HOME=str(tmp_path / "home"),
        VIDSCORE_MODELS_DIR=str(tmp_path / "models"),
        VIDSCORE_CLIP_WEIGHTS=str(path),
    )
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"path": [str(fixtures / "media/image_colorwheel.jpg")], "text": ["a colour wheel"]}).to_csv(
        meta, index=False
    )
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("vidscore")),
            "score",
            "matching",
            str(meta),
            "--device",
            "cpu",
            "--num-workers",
            "0",
        ],  # fmt: skip
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "__setstate__" in errors[0] and str(path) in errors[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not marker.exists() and not (tmp_path / "meta_match.csv").exists()


def test_fixture_state_dict_still_loads_without_jit(fixtures: Path) -> None:
    # The fixture is a plain torch.save dict (not TorchScript): it goes through weights_only loading.
    with zipfile.ZipFile(fixtures / "weights" / "clip_tiny_openai.pt") as zf:
        assert not any(n.endswith("/constants.pkl") for n in zf.namelist())
    state = read_clip_state_dict(fixtures / "weights" / "clip_tiny_openai.pt")
    assert len(state) == 62 and state["logit_scale"].item() == pytest.approx(2.65926003, abs=1e-7)
