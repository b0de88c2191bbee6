"""How well the detectors do where labels exist: PR-AUC, precision and recall at the threshold, false positives.

:func:`integrity_metrics` measures :func:`~toolkit.integrity.score_accounts`' output against
``users.is_inauthentic`` (null labels are left out), on the held-out accounts when the scores
carry a ``split`` column, overall and, for simulated stores, per role and strategy of
``sim_accounts`` (bot/buyer/ring; burst/drip/lockstep). Per group, recall is measured at the
detector's own flag and at the threshold that flags 1% of the evaluated genuine accounts.

Example
-------
>>> m = integrity_metrics(scores, "data/feedlab.duckdb")  # doctest: +SKIP
>>> m["overall"]["pr_auc"], m["by_strategy"]["bot/burst"]["recall"]  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import polars as pl

from toolkit.errors import FeedlabError
from toolkit.integrity._common import Store
from toolkit.store import has_table, open_store
from toolkit.integrity.detect import threshold_at_fpr
from toolkit.predict.metrics import pr_auc

#: The false-positive rate at which ``recall_at_1pct_fpr`` is read.
REFERENCE_FPR = 0.01


def _safe(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def _block(y: np.ndarray, score: np.ndarray, flagged: np.ndarray, ref_threshold: float) -> dict:
    pos, neg = y == 1, y == 0
    tp = int((flagged & pos).sum())
    fp = int((flagged & neg).sum())
    return {
        "n": int(len(y)),
        "positives": int(pos.sum()),
        "genuine": int(neg.sum()),
        "pr_auc": pr_auc(y, score) if len(y) else float("nan"),
        "precision": _safe(tp, tp + fp),
        "recall": _safe(tp, int(pos.sum())),
        "false_positive_rate": _safe(fp, int(neg.sum())),
        "flagged": int(flagged.sum()),
        "recall_at_1pct_fpr": _safe(int(((score >= ref_threshold) & pos).sum()), int(pos.sum())),
    }


def integrity_metrics(scores: pl.DataFrame, store: Store, *, split: str | None = "heldout") -> dict:
    """Detection metrics of ``scores`` where ``users.is_inauthentic`` is known: overall, per strategy and per role.

    Evaluates the rows whose ``split`` equals ``split`` (default the held-out accounts) when
    the scores have that column; ``split=None`` evaluates every labelled account. Each block
    holds n, positives, genuine, pr_auc, precision, recall and false_positive_rate at the
    ``flagged`` column, flagged, and recall_at_1pct_fpr (at the score that flags 1% of the
    evaluated genuine accounts). ``by_strategy`` ("bot/burst", "buyer/drip", "ring/lockstep", ...)
    and ``by_role`` compare each group's accounts against all evaluated genuine accounts; they
    are empty without ``sim_accounts``. ``genuine_flagged_share`` is over every labelled
    genuine account, training ones included.

    Example
    -------
    >>> integrity_metrics(scores, "data/feedlab.duckdb")["overall"]["false_positive_rate"]  # doctest: +SKIP
    """
    missing = [c for c in ("user_id", "score", "flagged") if c not in scores.columns]
    if missing:
        raise FeedlabError(f"scores lack the columns {', '.join(missing)} (make them with score_accounts)")
    with open_store(store) as con:
        labels = con.sql("select user_id, is_inauthentic from users where is_inauthentic is not null").pl()
        truth = con.sql("select user_id, role as sim_role, strategy from sim_accounts").pl() if has_table(con, "sim_accounts") else None
    frame = scores.join(labels, on="user_id", how="inner")
    all_genuine = frame.filter(~pl.col("is_inauthentic"))
    if split is not None and "split" in frame.columns:
        frame = frame.filter(pl.col("split") == split)
    if frame.height == 0:
        raise FeedlabError("no labelled accounts to measure on (users.is_inauthentic is null for every scored account)")
    y = frame["is_inauthentic"].cast(pl.Int8).to_numpy()
    s = frame["score"].fill_null(0.0).to_numpy()
    f = frame["flagged"].fill_null(False).to_numpy()
    ref = threshold_at_fpr(s[y == 0], REFERENCE_FPR)
    out = {
        "evaluated_on": split if (split is not None and "split" in scores.columns) else "all labelled",
        "overall": _block(y, s, f, ref),
        "genuine_flagged_share": _safe(int(all_genuine["flagged"].sum()), all_genuine.height),
        "by_strategy": {},
        "by_role": {},
    }
    if truth is not None:
        frame = frame.join(truth, on="user_id", how="left")
        genuine = (frame["is_inauthentic"] == False).to_numpy()  # noqa: E712
        for key, cols in (("by_strategy", ("sim_role", "strategy")), ("by_role", ("sim_role",))):
            groups = frame.filter(pl.col("is_inauthentic")).select(cols).unique().sort(cols).rows()
            for group in groups:
                mask = np.ones(frame.height, dtype=bool)
                for col, value in zip(cols, group):
                    mask &= (frame[col] == value).fill_null(False).to_numpy()
                keep = mask | genuine
                out[key]["/".join(str(v) for v in group)] = _block(y[keep], s[keep], f[keep], ref)
    return out
