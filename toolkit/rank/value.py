"""The value model: a candidate's score is the weighted sum of its predicted action probabilities.

    score = sum over actions a of weight[a] * p_a

Each term is kept as ``contribution_<action>`` so that an explanation can say which predicted
actions put a post where it is.

Example
-------
>>> import polars as pl
>>> preds = pl.DataFrame({"post_id": [1, 2], "p_like": [0.1, 0.3], "p_comment": [0.05, 0.0]})
>>> scored = value_scores(preds, {"like": 2.0, "comment": 5.0})
>>> scored["score"].round(3).to_list()
[0.45, 0.6]
>>> scored["contribution_comment"].to_list()
[0.25, 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from toolkit.errors import FeedlabError


def value_scores(predictions: pl.DataFrame, weights: Mapping[str, float]) -> pl.DataFrame:
    """``predictions`` with ``contribution_<action>`` per weighted action and their sum ``score``.

    ``predictions`` holds one ``p_<action>`` column per weighted action (an action whose model
    was not trained, too rare in the data, say, must be left out of ``weights``). A null
    probability contributes 0.
    """
    if not weights:
        raise FeedlabError("no action weights: the value model needs at least one weighted action")
    missing = [a for a in weights if f"p_{a}" not in predictions.columns]
    if missing:
        have = sorted(c.removeprefix("p_") for c in predictions.columns if c.startswith("p_"))
        raise FeedlabError(
            f"no predictions for {', '.join(missing)} (predicted: {', '.join(have) or 'none'}); "
            "drop those weights or train models for them"
        )
    contributions = [(pl.col(f"p_{a}").fill_null(0.0) * float(w)).alias(f"contribution_{a}") for a, w in weights.items()]
    return predictions.with_columns(contributions).with_columns(
        pl.sum_horizontal(f"contribution_{a}" for a in weights).alias("score")
    )


def weight_vector(weights: Mapping[str, float], actions: list[str] | tuple[str, ...]) -> np.ndarray:
    """``weights`` as a float32 vector in the order of ``actions`` (0 for actions not weighted)."""
    unknown = [a for a in weights if a not in actions]
    if unknown:
        raise FeedlabError(f"no predictions for {', '.join(unknown)} (predicted: {', '.join(actions)})")
    return np.array([weights.get(a, 0.0) for a in actions], dtype=np.float32)
