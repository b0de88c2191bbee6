"""The supervised detector, the combination with the lockstep detector, and storing the scores.

:func:`train_detector` fits XGBoost on :func:`~toolkit.integrity.account_signals` of the
accounts whose ``users.is_inauthentic`` is known (null means unknown: such accounts are scored,
never trained or measured on). A seeded, stratified share of the labelled accounts (``holdout``)
is kept out of training for :func:`~toolkit.integrity.integrity_metrics`; the flagging threshold
is the lowest score that flags at most ``target_fpr`` of the genuine training accounts by their
out-of-fold scores, so the held-out accounts measure it honestly.

:func:`score_accounts` scores every account with both detectors and combines them:
``score`` is the supervised probability (it already sees the lockstep signals as features), or
the lockstep score when the store has too few labels to train; ``flagged`` is the supervised
flag **or** the lockstep flag. Both detectors' own scores and flags are kept as columns.

Example
-------
>>> scores = score_accounts("data/feedlab.duckdb", seed=0)  # doctest: +SKIP
>>> write_scores("data/feedlab.duckdb", scores)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import date, datetime

import duckdb
import numpy as np
import polars as pl
import xgboost as xgb

from toolkit.errors import FeedlabError
from toolkit.integrity._common import Store, resolve_at
from toolkit.store import open_store
from toolkit.integrity.lockstep import LockstepConfig, lockstep_scores
from toolkit.integrity.signals import GIVER_SIGNALS, RECEIVER_SIGNALS, account_signals

#: XGBoost parameters of the supervised detector (``seed`` and ``nthread`` are added per run).
DETECTOR_PARAMS: dict = {
    "objective": "binary:logistic",
    "eval_metric": "aucpr",
    "max_depth": 4,
    "eta": 0.1,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 1.0,
}
DETECTOR_ROUNDS = 150
#: Fewest labelled accounts of each class for the supervised detector to train.
MIN_LABELLED = 5
#: Reasons given per account.
TOP_REASONS = 3

#: Columns of :func:`score_accounts` (and of the ``integrity_scores`` table), with their types.
SCORE_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.Int64,
    "role": pl.String,
    "score": pl.Float64,
    "flagged": pl.Boolean,
    "top_reasons": pl.List(pl.String),
    "score_supervised": pl.Float64,
    "flagged_supervised": pl.Boolean,
    "score_lockstep": pl.Float64,
    "flagged_lockstep": pl.Boolean,
    "split": pl.String,
}


@dataclass
class Detector:
    """A trained supervised detector: booster, features, flagging threshold and the split it was trained on.

    ``split`` maps every labelled user_id to ``train`` or ``heldout``.

    Example
    -------
    >>> det = train_detector(signals, labels, seed=0)  # doctest: +SKIP
    >>> det.predict(signals)[:3]  # doctest: +SKIP
    """

    booster: xgb.Booster
    features: list[str]
    threshold: float
    target_fpr: float
    seed: int
    split: dict[int, str] = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def _matrix(self, signals: pl.DataFrame) -> xgb.DMatrix:
        missing = [f for f in self.features if f not in signals.columns]
        if missing:
            raise FeedlabError(f"the signals lack the detector's features: {', '.join(missing)}")
        return xgb.DMatrix(signals.select(self.features).to_numpy().astype(np.float32), feature_names=self.features)

    def predict(self, signals: pl.DataFrame) -> np.ndarray:
        """Probability of being inauthentic for each row of ``signals``."""
        return self.booster.predict(self._matrix(signals))

    def contributions(self, signals: pl.DataFrame) -> np.ndarray:
        """TreeSHAP contributions in log-odds, one column per feature (the bias column dropped)."""
        return self.booster.predict(self._matrix(signals), pred_contribs=True)[:, :-1]


def _labels(con: duckdb.DuckDBPyConnection, when: datetime) -> pl.DataFrame:
    return con.sql("select user_id, is_inauthentic from users where created_at < $1 order by user_id", params=[when]).pl()


def _split(labels: pl.DataFrame, *, holdout: float, seed: int) -> dict[int, str]:
    """A seeded split of the labelled accounts, stratified by label: ``holdout`` of each class held out."""
    rng = np.random.default_rng(seed)
    split: dict[int, str] = {}
    for value in (False, True):
        ids = np.sort(labels.filter(pl.col("is_inauthentic") == value)["user_id"].to_numpy())
        rng.shuffle(ids)
        n_out = int(round(holdout * len(ids)))
        split.update({int(u): "heldout" for u in ids[:n_out]})
        split.update({int(u): "train" for u in ids[n_out:]})
    return split


def threshold_at_fpr(genuine_scores: np.ndarray, target_fpr: float) -> float:
    """The lowest threshold (score >= threshold flags) that flags at most ``target_fpr`` of ``genuine_scores``.

    Example
    -------
    >>> threshold_at_fpr(np.array([0.1, 0.2, 0.3, 0.9]), 0.25) > 0.3   # 1 of 4 may be flagged: 0.9
    True
    >>> threshold_at_fpr(np.array([0.1, 0.2, 0.3, 0.9]), 0.0) > 0.9
    True
    """
    s = np.sort(np.asarray(genuine_scores, dtype=float))[::-1]
    if len(s) == 0:
        return 0.5
    k = int(math.floor(target_fpr * len(s) + 1e-9))  # genuine accounts that may be flagged
    if k >= len(s):
        return float(s[-1])
    # just above the (k+1)-th highest genuine score: it and everything below stays unflagged
    return float(np.nextafter(s[k], np.inf))


def _fit(x: np.ndarray, y: np.ndarray, names: list[str], params: dict, rounds: int) -> xgb.Booster:
    return xgb.train(params, xgb.DMatrix(x, label=y, feature_names=names), num_boost_round=rounds)


def train_detector(
    signals: pl.DataFrame,
    labels: pl.DataFrame,
    *,
    seed: int = 0,
    holdout: float = 0.3,
    target_fpr: float = 0.01,
    folds: int = 5,
    rounds: int = DETECTOR_ROUNDS,
    params: dict | None = None,
) -> Detector:
    """Train the supervised detector on the accounts whose label is known; null labels are left out.

    ``labels`` has user_id and is_inauthentic (nullable). ``holdout`` of each class is held
    out; the threshold is the one that flags at most ``target_fpr`` of the genuine training
    accounts by their out-of-fold scores (``folds``-fold), and the final model is fit on all
    training accounts. Raises a FeedlabError with fewer than 5 labelled accounts of a class.

    Example
    -------
    >>> det = train_detector(account_signals(con), con.sql("select user_id, is_inauthentic from users").pl())  # doctest: +SKIP
    >>> det.threshold  # doctest: +SKIP
    """
    if not 0 <= holdout < 1:
        raise FeedlabError(f"holdout must be in [0, 1) (got {holdout})")
    if not 0 <= target_fpr < 1:
        raise FeedlabError(f"target_fpr must be in [0, 1) (got {target_fpr})")
    if folds < 2:
        raise FeedlabError(f"folds must be at least 2 (got {folds})")
    known = labels.filter(pl.col("is_inauthentic").is_not_null()).select("user_id", "is_inauthentic")
    split = _split(known, holdout=holdout, seed=seed)
    train = signals.join(known, on="user_id").filter(
        pl.col("user_id").replace_strict(split, default="", return_dtype=pl.String) == "train"
    ).sort("user_id")  # fmt: skip
    y = train["is_inauthentic"].cast(pl.Int8).to_numpy()
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if min(n_pos, n_neg) < MIN_LABELLED:
        raise FeedlabError(
            f"too few labelled accounts to train the supervised detector: {n_pos} inauthentic and {n_neg} "
            f"genuine in the training split (need {MIN_LABELLED} of each); label more accounts in "
            "users.is_inauthentic, or use the lockstep detector, which needs no labels"
        )
    features = [c for c in signals.columns if c != "user_id"]
    x = train.select(features).to_numpy().astype(np.float32)
    booster_params = {**DETECTOR_PARAMS, "seed": seed, "nthread": min(4, os.cpu_count() or 1), **(params or {})}

    # out-of-fold scores of the training accounts choose the threshold: in-sample scores of
    # boosted trees are overconfident and would set it too low
    rng = np.random.default_rng(seed + 1)
    fold = np.empty(len(y), dtype=int)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % folds
    oof = np.zeros(len(y))
    for f in range(folds):
        inside = fold != f
        if len(np.unique(y[inside])) < 2:
            continue
        booster = _fit(x[inside], y[inside], features, booster_params, rounds)
        oof[~inside] = booster.predict(xgb.DMatrix(x[~inside], feature_names=features))
    threshold = threshold_at_fpr(oof[y == 0], target_fpr)
    booster = _fit(x, y, features, booster_params, rounds)
    return Detector(
        booster=booster, features=features, threshold=threshold, target_fpr=target_fpr, seed=seed,
        split=split, params={**booster_params, "rounds": rounds, "folds": folds, "holdout": holdout},
    )  # fmt: skip


def _side(name: str) -> str | None:
    if name in GIVER_SIGNALS or name.startswith("given_"):
        return "giver"
    if name in RECEIVER_SIGNALS or name.startswith("recv_"):
        return "receiver"
    return None


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 100 or float(value).is_integer() else f"{value:.2f}"


def explain_rows(detector: Detector, signals: pl.DataFrame, *, k: int = TOP_REASONS) -> tuple[list[list[str]], list[str]]:
    """Per row: the ``k`` signals that pushed the score up most (short text) and the side they speak for.

    The side is ``giver`` or ``receiver``, whichever side's signals add more log-odds, or
    ``account`` when neither adds any.
    """
    contrib = detector.contributions(signals)
    values = signals.select(detector.features).to_numpy()
    sides = np.array([_side(f) for f in detector.features], dtype=object)
    giver = np.where(sides == "giver", np.clip(contrib, 0, None), 0).sum(axis=1)
    receiver = np.where(sides == "receiver", np.clip(contrib, 0, None), 0).sum(axis=1)
    order = np.argsort(-contrib, axis=1)[:, :k]
    reasons, roles = [], []
    for i in range(len(contrib)):
        reasons.append(
            [f"{detector.features[j]}={_fmt(values[i, j])} ({contrib[i, j]:+.2f})" for j in order[i] if contrib[i, j] > 0]
        )
        roles.append("account" if giver[i] == receiver[i] == 0 else ("giver" if giver[i] >= receiver[i] else "receiver"))
    return reasons, roles


def score_accounts(
    store: Store,
    *,
    at: str | date | datetime | None = None,
    seed: int = 0,
    holdout: float = 0.3,
    target_fpr: float = 0.01,
    lockstep: LockstepConfig = LockstepConfig(),
    signals: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Score every account created before ``at`` with both detectors, flag it, and say why.

    Returns :data:`SCORE_SCHEMA`: ``score`` and ``flagged`` combine the detectors (see the
    module docstring), ``role`` is the side the evidence is about (``giver``: it gives
    inauthentic likes or follows; ``receiver``: its posts or profile receive them; ``account``:
    not flagged), ``top_reasons`` the strongest signals (SHAP contributions in log-odds, or the
    lockstep detector's finding), ``split`` is ``train``, ``heldout`` or ``unlabelled``. With
    fewer than 5 labelled accounts of a class only the lockstep detector scores (supervised
    columns null). ``signals`` may pass precomputed :func:`account_signals` at the same ``at``.

    Example
    -------
    >>> scores = score_accounts("data/feedlab.duckdb", seed=0)  # doctest: +SKIP
    >>> scores.filter("flagged").select("user_id", "role", "score", "top_reasons").head()  # doctest: +SKIP
    """
    with open_store(store) as con:
        when = resolve_at(con, at)
        if signals is None:
            signals = account_signals(con, at=when, lockstep=lockstep)
        labels = _labels(con, when)
        lock = lockstep_scores(con, at=when, config=lockstep)
    signals = signals.sort("user_id")
    out = lock.select(
        "user_id", score_lockstep="score", flagged_lockstep="flagged", _lrole="role", _lreason="reason"
    ).join(labels, on="user_id", how="left")
    n_pos = labels.filter(pl.col("is_inauthentic") == True).height  # noqa: E712
    n_neg = labels.filter(pl.col("is_inauthentic") == False).height  # noqa: E712
    trainable = min(n_pos, n_neg) * (1 - holdout) >= MIN_LABELLED
    if trainable:
        det = train_detector(signals, labels, seed=seed, holdout=holdout, target_fpr=target_fpr)
        p = det.predict(signals)
        reasons, roles = explain_rows(det, signals)
        sup = pl.DataFrame(
            {"user_id": signals["user_id"], "score_supervised": p.astype(np.float64), "_sreasons": reasons, "_srole": roles},
            schema={"user_id": pl.Int64, "score_supervised": pl.Float64, "_sreasons": pl.List(pl.String), "_srole": pl.String},
        ).with_columns(flagged_supervised=pl.col("score_supervised") >= det.threshold)
        split = det.split
    else:
        sup = pl.DataFrame(
            schema={"user_id": pl.Int64, "score_supervised": pl.Float64, "_sreasons": pl.List(pl.String), "_srole": pl.String,
                    "flagged_supervised": pl.Boolean}
        )  # fmt: skip
        split = {}
    out = out.join(sup, on="user_id", how="left")
    lock_reason = pl.when(pl.col("flagged_lockstep")).then(pl.concat_list(pl.col("_lreason"))).otherwise(pl.lit([], dtype=pl.List(pl.String)))
    flagged = (pl.col("flagged_supervised").fill_null(False) | pl.col("flagged_lockstep"))
    out = out.with_columns(
        score=pl.coalesce("score_supervised", "score_lockstep"),
        flagged=flagged,
        role=pl.when(~flagged).then(pl.lit("account"))
        .when(pl.col("flagged_supervised").fill_null(False)).then(pl.col("_srole"))
        .otherwise(pl.col("_lrole")),
        top_reasons=pl.concat_list(lock_reason, pl.col("_sreasons").fill_null(pl.lit([], dtype=pl.List(pl.String)))).list.head(TOP_REASONS),
        split=pl.when(pl.col("is_inauthentic").is_null()).then(pl.lit("unlabelled"))
        .otherwise(pl.col("user_id").replace_strict(split, default="train", return_dtype=pl.String)),
    )  # fmt: skip
    # an unflagged account gets role "account": there is nothing to enforce on either side
    return out.select(list(SCORE_SCHEMA)).cast(SCORE_SCHEMA).sort("user_id")


def write_scores(store_path: str | os.PathLike, scores: pl.DataFrame) -> int:
    """Replace the store's ``integrity_scores`` table with ``scores``, in one transaction; returns the rows written.

    Opens the store read-write (the only write integrity detection makes); a reader never
    sees a half-written table: on any error the old table stays as it was.

    Example
    -------
    >>> write_scores("data/w.duckdb", score_accounts("data/w.duckdb"))  # doctest: +SKIP
    5000
    """
    from toolkit.store import connect

    missing = [c for c in ("user_id", "role", "score", "flagged", "top_reasons") if c not in scores.columns]
    if missing:
        raise FeedlabError(f"scores lack the columns {', '.join(missing)} (make them with score_accounts)")
    if scores["user_id"].is_duplicated().any():
        raise FeedlabError("scores hold a user_id more than once")
    con = connect(store_path)
    try:
        con.register("_feedlab_integrity_scores", scores.to_arrow())
        con.execute("begin transaction")
        try:
            con.execute("create or replace table integrity_scores as select * from _feedlab_integrity_scores order by user_id")
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        finally:
            con.unregister("_feedlab_integrity_scores")
    finally:
        con.close()
    return scores.height
