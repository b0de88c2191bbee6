"""Signals: point-in-time features of impressions (for training) and of candidates (for scoring).

Both paths run the same definitions in :mod:`toolkit.signals.features` over a frame of
*requests* (viewer, post, time, device), so there is no train/serve skew. Every feature of a
request at time t reads only events strictly before t.
"""

from toolkit.signals.features import (
    compute_features,
    iter_training_frames,
    scoring_frame,
    training_frame,
    training_frames,
    write_training_frame,
    write_training_frames,
)
from toolkit.signals.registry import FAMILIES, FEATURES, family_of, feature_names

__all__ = [
    "FAMILIES",
    "FEATURES",
    "compute_features",
    "family_of",
    "feature_names",
    "iter_training_frames",
    "scoring_frame",
    "training_frame",
    "training_frames",
    "write_training_frame",
    "write_training_frames",
]
