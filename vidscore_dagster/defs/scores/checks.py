"""Checks on the score tables."""


import dagster as dg

from vidscore_core import weights
from vidscore_dagster.defs.checks import standard_checks, value_check


def _logit_scale_bound(context: dg.AssetCheckExecutionContext) -> list:
    """exp(logit_scale) of the CLIP checkpoint in use: |match| can never exceed it."""
    from vidscore_core.models.clip import load_clip

    path = weights.require("clip", context.resources.vidscore.settings())
    return [load_clip(path).logit_scale_exp * (1 + 1e-6)]


score_checks: list[dg.AssetChecksDefinition] = [
    *standard_checks("clip_embeddings", upstream="videos", unique_by=("video_id", "frame_point")),
    *standard_checks("aesthetic_scores", upstream="videos"),
    value_check("aesthetic_scores", "aesthetic_scores_in_range", "aes BETWEEN 0 AND 10",
                "Aesthetic scores lie in [0, 10] (warning).", blocking=False),
    *standard_checks("matching_scores", upstream="videos"),
    value_check("matching_scores", "matching_scores_bounded", 'abs("match") <= ?',
                "|match| <= exp(logit_scale) of the checkpoint.", blocking=True, params_fn=_logit_scale_bound),
    *standard_checks("flow_scores", upstream="videos"),
    value_check("flow_scores", "flow_scores_non_negative", "flow >= 0", "Flow scores are >= 0.", blocking=True),
]  # fmt: skip
