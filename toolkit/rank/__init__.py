"""Stages 1, 4 and 5 of the seeds' pipeline: candidates, the value model, and the rules after it."""

from toolkit.rank.config import (
    ActionWeight,
    RuleSpec,
    SurfaceConfig,
    load_surfaces,
    parse_weights,
    resolve_rules,
    resolve_weights,
    surface_config,
)

from toolkit.rank.ranker import RankingCache, rank

__all__ = [
    "RankingCache",
    "rank",
    "ActionWeight",
    "RuleSpec",
    "SurfaceConfig",
    "load_surfaces",
    "parse_weights",
    "resolve_rules",
    "resolve_weights",
    "surface_config",
]
