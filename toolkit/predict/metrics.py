"""Scores of a binary action predictor: ranking, probability quality and calibration.

Pure functions of numpy arrays: ``y`` holds the labels (0/1 or booleans), ``p`` the predicted
probabilities. A metric that is undefined for the rows given (AUC of one class only, say)
is NaN rather than an exception, so a table over many actions never stops at a rare one.

Example
-------
>>> import numpy as np
>>> y = np.array([0, 0, 1, 1])
>>> p = np.array([0.1, 0.4, 0.35, 0.8])
>>> roc_auc(y, p)
0.75
>>> sorted(action_metrics(y, p))
['auc', 'base_rate', 'ece', 'logloss', 'n', 'positives', 'pr_auc', 'rce']
"""

from __future__ import annotations

import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.metrics import log_loss as _sk_log_loss

from toolkit.errors import FeedlabError

#: Probabilities are clipped to [EPS, 1 - EPS] before taking logs: one confident miss must not
#: make the whole log loss infinite.
EPS = 1e-15
#: Equal-width calibration bins over [0, 1].
N_BINS = 10

NAN = float("nan")


def _check(y, p) -> tuple[np.ndarray, np.ndarray]:
    """Labels as float 0/1 and probabilities as float64, or a FeedlabError saying what is wrong."""
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1 or y.shape != p.shape:
        raise FeedlabError(f"labels and probabilities must be 1-D arrays of one length (got {y.shape} and {p.shape})")
    y = y.astype(np.float64)
    if not np.isin(y, (0.0, 1.0)).all():
        raise FeedlabError("labels must be 0/1 or booleans (drop null labels before scoring)")
    if p.size and (not np.isfinite(p).all() or p.min() < 0.0 or p.max() > 1.0):
        raise FeedlabError("probabilities must be finite numbers in [0, 1]")
    return y, p


def _two_classes(y: np.ndarray) -> bool:
    return y.size > 0 and 0.0 < y.sum() < y.size


def roc_auc(y, p) -> float:
    """Area under the ROC curve: the chance a random positive is scored above a random negative.

    NaN when ``y`` holds one class only (or nothing). Ties count half.

    Example
    -------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> roc_auc([1, 1], [0.2, 0.3])
    nan
    """
    y, p = _check(y, p)
    if not _two_classes(y):
        return NAN
    return float(roc_auc_score(y, p))


def pr_auc(y, p) -> float:
    """Average precision: the mean of the precision at the rank of each positive.

    This is scikit-learn's step-wise AP (no interpolation), the usual "PR AUC". NaN when ``y``
    holds one class only (or nothing): with no negatives there is nothing to rank against.

    Example
    -------
    >>> round(pr_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)  # (1/1 + 2/3) / 2
    0.8333
    """
    y, p = _check(y, p)
    if not _two_classes(y):
        return NAN
    return float(average_precision_score(y, p))


def log_loss(y, p) -> float:
    """Mean binary cross-entropy (natural log), with ``p`` clipped to [1e-15, 1 - 1e-15].

    Defined for one class too; NaN only for no rows.

    Example
    -------
    >>> round(log_loss([1, 0], [0.8, 0.4]), 6)  # -(ln 0.8 + ln 0.6) / 2
    0.366985
    """
    y, p = _check(y, p)
    if y.size == 0:
        return NAN
    return float(_sk_log_loss(y, np.clip(p, EPS, 1.0 - EPS), labels=[0.0, 1.0]))


def rce(y, p) -> float:
    """Relative cross-entropy (RecSys Challenge 2020): percent of the naive log loss removed.

    ``100 * (1 - CE(y, p) / CE(y, base))`` where ``base`` always predicts the positive rate of
    the rows evaluated. 0 means no better than the base rate, 100 is perfect, negative is worse
    than the base rate. NaN when ``y`` holds one class only (the naive log loss is then 0).

    Example
    -------
    >>> round(rce([1, 0, 0, 0], [0.5, 0.25, 0.25, 0.25]), 3)
    30.816
    """
    y, p = _check(y, p)
    if not _two_classes(y):
        return NAN
    naive = log_loss(y, np.full_like(p, y.mean()))
    return 100.0 * (1.0 - log_loss(y, p) / naive)


def _bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    # bin b holds [b/n, (b+1)/n); p == 1 goes to the last bin
    return np.minimum((p * n_bins).astype(np.int64), n_bins - 1)


def reliability_table(y, p, *, n_bins: int = N_BINS) -> pl.DataFrame:
    """Calibration per probability bin: mean prediction against the observed positive rate.

    ``n_bins`` equal-width bins over [0, 1] (bin b holds ``b/n <= p < (b+1)/n``; p = 1 goes to the
    last one). Every bin is listed; an empty one has count 0 and null means.

    Example
    -------
    >>> t = reliability_table([0, 1, 0, 1], [0.05, 0.15, 0.15, 0.95])
    >>> t.filter(t["count"] > 0).rows()
    [(0, 0.05, 0.0, 1), (1, 0.15, 0.5, 2), (9, 0.95, 1.0, 1)]
    """
    y, p = _check(y, p)
    if n_bins < 1:
        raise FeedlabError("n_bins must be at least 1")
    b = _bins(p, n_bins)
    count = np.bincount(b, minlength=n_bins)
    sum_p = np.bincount(b, weights=p, minlength=n_bins)
    sum_y = np.bincount(b, weights=y, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p, frac = sum_p / count, sum_y / count
    return pl.DataFrame(
        {
            "bin": np.arange(n_bins, dtype=np.int64),
            "mean_predicted": mean_p,
            "fraction_positive": frac,
            "count": count.astype(np.int64),
        },
        nan_to_null=True,
    )


def expected_calibration_error(y, p, *, n_bins: int = N_BINS) -> float:
    """Expected calibration error: the count-weighted mean gap between prediction and outcome.

    Binning: ``n_bins`` (10) equal-width bins over [0, 1], as in :func:`reliability_table`;
    ``ECE = sum_b (n_b / n) * |mean p in b - positive rate in b|``. NaN for no rows.

    Example
    -------
    >>> round(expected_calibration_error([0, 1, 0, 1], [0.05, 0.15, 0.15, 0.95]), 6)
    0.2
    """
    y, p = _check(y, p)
    if y.size == 0:
        return NAN
    t = reliability_table(y, p, n_bins=n_bins).filter(pl.col("count") > 0)
    gap = (t["mean_predicted"] - t["fraction_positive"]).abs()
    return float((gap * t["count"]).sum() / y.size)


def action_metrics(y, p, oracle=None) -> dict[str, float]:
    """Every score of one action's predictions, optionally beside the true probabilities.

    Keys: auc, pr_auc, logloss, rce, ece, base_rate, n, positives; with ``oracle`` (the
    probabilities that generated the labels, the ``p_<action>`` column of a simulated world) also
    oracle_auc and oracle_rce (the best any model could do on these rows) and
    auc_gap = oracle_auc - auc.

    Example
    -------
    >>> m = action_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], oracle=[0.1, 0.2, 0.7, 0.9])
    >>> m["auc"], m["oracle_auc"], m["auc_gap"], m["n"], m["positives"]
    (0.75, 1.0, 0.25, 4, 2)
    """
    y, p = _check(y, p)
    out: dict[str, float] = {
        "auc": roc_auc(y, p),
        "pr_auc": pr_auc(y, p),
        "logloss": log_loss(y, p),
        "rce": rce(y, p),
        "ece": expected_calibration_error(y, p),
        "base_rate": float(y.mean()) if y.size else NAN,
        "n": int(y.size),
        "positives": int(y.sum()),
    }
    if oracle is not None:
        y, o = _check(y, oracle)
        out["oracle_auc"] = roc_auc(y, o)
        out["oracle_rce"] = rce(y, o)
        out["auc_gap"] = out["oracle_auc"] - out["auc"]
    return out
