"""Stages 1, 4 and 5 of the seeds' pipeline: candidates, the value model, and the rules after it.

Example
-------
>>> from toolkit.rank import surface_config, resolve_weights
>>> resolve_weights("reels", {"audio_page": 0})["audio_page"]
0.0
"""

from toolkit.rank.candidates import candidate_recall, candidates_for
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
from toolkit.rank.policy import compare_policies, evaluate_policy
from toolkit.rank.population import author_followers, compare_metrics, flatten_metrics, population_metrics
from toolkit.rank.ranker import RankingCache, as_time, rank
from toolkit.rank.rules import apply_rules, rule_factors, rule_inputs
from toolkit.rank.value import value_scores

__all__ = [
    "ActionWeight",
    "RankingCache",
    "RuleSpec",
    "SurfaceConfig",
    "apply_rules",
    "as_time",
    "author_followers",
    "candidate_recall",
    "candidates_for",
    "compare_metrics",
    "compare_policies",
    "evaluate_policy",
    "flatten_metrics",
    "load_surfaces",
    "parse_weights",
    "population_metrics",
    "rank",
    "resolve_rules",
    "resolve_weights",
    "rule_factors",
    "rule_inputs",
    "surface_config",
    "value_scores",
]
