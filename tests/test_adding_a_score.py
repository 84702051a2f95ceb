"""Adding a score costs its model file, its declaration and tests: nothing else names it.

The test copies the package, adds a throwaway score there exactly as README "Adding a score" says
(a weights registry entry for its model file, a `Score(...)` in scores.py, a module with the model
and its job), and runs the copy's own commands in subprocesses: `vidscore score <name>` and
`score all` write its column, `vidscore filter` takes its bound, `vidscore ingest --materialize`
computes it as a Dagster asset over two torchrun ranks with its checks, and `video_scores` shows it.
Its model file is found through VIDSCORE_<NAME>_WEIGHTS by the CLI, the Dagster step and the ranks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import torch
from fixture_env import fixture_model_env

ROOT = Path(__file__).resolve().parents[1]
VIDSCORE = Path(sys.executable).with_name("vidscore")

# The model: the mean red level of a clip's frames 0 and 5, times the `scale` its weights file holds.
MODEL = '''"""Redness: a throwaway score (tests/test_adding_a_score.py)."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from vidscore_core import weights
from vidscore_core.media.decode import DecodedFrames
from vidscore_core.media.frames import FrameRequest
from vidscore_core.scoring import lineage
from vidscore_core.scoring.score_jobs import ScoreJob
from vidscore_core.scoring.shared_decode import ScorePart


class RedSampler:
    request = FrameRequest(indices=(0, 5))

    def from_frames(self, decoded: DecodedFrames) -> dict:
        return {"red": float(np.mean([frame[..., 0].mean() for frame in decoded.frames]))}

    def collate(self, payloads: list[dict]) -> list[dict]:
        return payloads


class RedScorer:
    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.sampler = RedSampler()

    def run(self, data: list[dict], items) -> list[dict]:
        return [{"red": p["red"] * self.scale} for p in data]


class RednessJob(ScoreJob):
    table = "redness_scores"

    @cached_property
    def path(self):
        return weights.require("redness", self.settings)

    def part(self) -> ScorePart:
        return ScorePart(self.table, RedScorer(float(torch.load(self.path)["scale"])))

    def rows(self, results, batch):
        rows = [{"video_id": r.clip.video_id, "red": None if r.error else r.values["red"], "error": r.error}
                for r in results]
        return self.stamp(rows, batch, model=f"redness:{self.path.name}",
                          shas={"redness": lineage.file_sha256(self.path)}, params={"indices": [0, 5]})


def redness_job(settings, options) -> RednessJob:
    return RednessJob(settings, options)
'''

DECLARATION = '''
REDNESS = Score(
    name="redness",
    table="redness_scores",
    alias="r",
    column="red",
    columns=(("red", "DOUBLE"),),
    unit="mean red level of frames 0 and 5, times the model's scale",
    weights=("redness",),
    code=("vidscore_core.models.redness",),
    job="vidscore_core.models.redness:redness_job",
    lower="redmin",
    checks=(ValueCheck("in_range", "red BETWEEN 0 AND 255", "Red levels lie in [0, 255]."),),
    description="A throwaway score.",
)

'''

WEIGHT_ENTRY = '''
    "redness": WeightFile(
        name="redness",
        description="the throwaway score's scale",
        relative_path="redness.pt",
        url="https://example.invalid/redness.pt",
    ),'''


def _add_the_score(repo: Path) -> list[str]:
    """Copy the package and add the score; returns the files it took, relative to the repo root."""
    for package in ("vidscore_core", "vidscore_dagster"):
        shutil.copytree(ROOT / package, repo / package, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "vidscore_core/models/redness.py").write_text(MODEL, encoding="utf-8")
    scores = repo / "vidscore_core/scores.py"
    text = scores.read_text(encoding="utf-8")
    anchor = "# In Open-Sora datautil's order"
    old = re.search(r"^SCORES: tuple\[Score, \.\.\.\] = \(.*\)$", text, re.MULTILINE)
    assert anchor in text and old
    text = text.replace(anchor, DECLARATION + anchor).replace(old[0], old[0].removesuffix(")") + ", REDNESS)")
    scores.write_text(text, encoding="utf-8")
    registry = repo / "vidscore_core/weights.py"
    text = registry.read_text(encoding="utf-8")
    anchor = "REGISTRY: dict[str, WeightFile] = {"
    assert anchor in text
    registry.write_text(text.replace(anchor, anchor + WEIGHT_ENTRY), encoding="utf-8")
    return ["vidscore_core/weights.py", "vidscore_core/scores.py", "vidscore_core/models/redness.py"]


@pytest.fixture(scope="module")
def added(tmp_path_factory, fixtures):
    tmp = tmp_path_factory.mktemp("added")
    changed = _add_the_score(tmp / "repo")
    media = fixtures / "media"
    clips = ["pan_hubble_right_5px.mp4", "pan_retina_portrait_down_3px.mp4", "image_colorwheel.jpg", "bad_truncated.mp4"]
    meta = tmp / "meta.csv"
    pd.DataFrame({"path": [str(media / c) for c in clips], "text": ["one", "two", "three", "four"]}).to_csv(meta, index=False)
    scale = tmp / "scale.pt"
    torch.save({"scale": torch.tensor(0.5)}, scale)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDSCORE_", "DAGSTER_"))}
    env.update(fixture_model_env(fixtures), PYTHONPATH=str(tmp / "repo"), VIDSCORE_HOME=str(tmp / "home"),
               VIDSCORE_MODELS_DIR=str(tmp / "models"), VIDSCORE_REDNESS_WEIGHTS=str(scale))  # fmt: skip
    return tmp, meta, env, changed


def vidscore(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    # Run outside the repository: `python -m` (the torchrun ranks) puts the working folder first on the path.
    cwd = Path(env["VIDSCORE_HOME"]).parent
    proc = subprocess.run([str(VIDSCORE), *args], env={**env, **extra}, cwd=cwd, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    problems = [line for line in proc.stderr.splitlines() if "Error" in line or "error" in line or "rank" in line]
    assert proc.returncode == 0, "\n".join(problems[-40:]) + proc.stderr[-2000:]
    return proc


def test_the_readme_lists_the_files_a_score_needs(added) -> None:
    _, _, _, changed = added
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Adding a score", 1)[1].split("\n## ", 1)[0]
    for path in changed:
        assert f"`{path.replace('redness', '<name>')}`" in section, path


def test_the_cli_scores_it_alone_and_with_all_and_filters_on_it(added) -> None:
    tmp, meta, env, _ = added
    alone = pd.read_csv(vidscore(env, "score", "redness", str(meta)).stdout and tmp / "meta_red.csv")
    red = alone["red"]
    assert red[:3].between(0.5, 127.5).all() and pd.isna(red[3]) and alone["red_error"][3]
    # Its weights file is the one VIDSCORE_REDNESS_WEIGHTS names: another scale, other values.
    scale = tmp / "scale_one.pt"
    torch.save({"scale": torch.tensor(1.0)}, scale)
    doubled = pd.read_csv(vidscore(env, "score", "redness", str(meta), "--output", str(tmp / "one.csv"),
                                   VIDSCORE_REDNESS_WEIGHTS=str(scale)).stdout and tmp / "one.csv")  # fmt: skip
    assert doubled["red"][:3].tolist() == pytest.approx((2 * red[:3]).tolist())
    everything = vidscore(env, "score", "all", str(meta), "--backend", "dis")
    assert "redness: 3 scored, 1 with errors" in everything.stdout
    together = pd.read_csv(tmp / "meta_scores.csv")
    assert together["red"].fillna(-1).tolist() == red.fillna(-1).tolist()  # the same bits
    bound = float(red[:3].median())
    vidscore(env, "filter", str(tmp / "meta_scores.csv"), "--redmin", str(bound), "--output", str(tmp / "kept.csv"))
    kept = pd.read_csv(tmp / "kept.csv")
    assert sorted(kept["red"].tolist()) == sorted(v for v in red[:3] if v >= bound) and len(kept) == 2


def test_dagster_computes_it_over_torchrun_ranks_with_its_checks_and_the_view_shows_it(added, monkeypatch) -> None:
    tmp, meta, env, _ = added
    vidscore(env, "ingest", str(meta), "--materialize", "--assets", "videos,redness_scores",
             VIDSCORE_NUM_PROCESSES="2", DAGSTER_HOME=str(tmp / "dagster"))  # fmt: skip
    listed = vidscore(env, "sql", "SELECT path, red, red_error FROM video_scores ORDER BY path", "--format", "csv")
    viewed = pd.read_csv(__import__("io").StringIO(listed.stdout)).set_index("path")
    vidscore(env, "score", "redness", str(meta), "--output", str(tmp / "cli_red.csv"))
    alone = pd.read_csv(tmp / "cli_red.csv").set_index("path")
    assert viewed.loc[alone.index, "red"].fillna(-1).tolist() == pytest.approx(alone["red"].fillna(-1).tolist())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp / "dagster"))
    instance = dg.DagsterInstance.get()
    try:
        # The ranks reported through dagster-pipes: in the run's log (the terminal shows Dagster's logs
        # only with VIDSCORE_DEBUG=1).
        messages = [event.message for run in instance.get_runs() for event in instance.all_logs(run.run_id)]
        assert any("rank 1:" in m for m in messages), messages[-20:]
        for check in ("redness_scores_in_range", "redness_scores_complete"):
            record = instance.get_latest_asset_check_evaluation_record(
                dg.AssetCheckKey(dg.AssetKey("redness_scores"), check)
            )
            assert record is not None and record.event.asset_check_evaluation.passed, check
    finally:
        instance.dispose()
