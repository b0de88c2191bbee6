"""Inauthentic-engagement detection: account signals, a lockstep detector and a supervised detector.

Two detectors score every account, on the giving side (accounts that deliver likes and follows)
and on the receiving side (accounts whose posts receive them):

- :func:`lockstep_scores` needs no labels: accounts that like the same posts within minutes of
  one another, again and again (CopyCatch, SynchroTrap), and the accounts they like together;
- :func:`train_detector` fits XGBoost on :func:`account_signals` of the accounts whose
  ``users.is_inauthentic`` is known (null is unknown, not negative).

:func:`score_accounts` runs both and combines them; :func:`integrity_metrics` measures the
result where labels exist; :func:`write_scores` stores it as the ``integrity_scores`` table.
:func:`enforce` writes a copy of a store where, from a cutoff on, flagged accounts' engagements
no longer count (not retroactively), and :func:`enforcement_effect` measures what that does to a
surface's rankings. See ``docs/integrity.md``.

Example
-------
>>> from toolkit.integrity import score_accounts, integrity_metrics
>>> scores = score_accounts("data/feedlab.duckdb", seed=0)  # doctest: +SKIP
>>> integrity_metrics(scores, "data/feedlab.duckdb")["overall"]["pr_auc"]  # doctest: +SKIP
"""

from toolkit.integrity.detect import (
    SCORE_SCHEMA,
    Detector,
    score_accounts,
    train_detector,
    write_scores,
)
from toolkit.integrity.enforcement import (
    boosted_posts,
    counterfactual_store,
    enforce,
    enforcement_effect,
    flagged_accounts,
    removed_engagements,
    truth_scores,
)
from toolkit.integrity.lockstep import LockstepConfig, lockstep_pairs, lockstep_scores
from toolkit.integrity.metrics import integrity_metrics
from toolkit.integrity.signals import GIVER_SIGNALS, RECEIVER_SIGNALS, SIGNALS, account_signals

__all__ = [
    "GIVER_SIGNALS",
    "RECEIVER_SIGNALS",
    "SCORE_SCHEMA",
    "SIGNALS",
    "Detector",
    "LockstepConfig",
    "account_signals",
    "boosted_posts",
    "counterfactual_store",
    "enforce",
    "enforcement_effect",
    "flagged_accounts",
    "integrity_metrics",
    "lockstep_pairs",
    "lockstep_scores",
    "removed_engagements",
    "score_accounts",
    "train_detector",
    "truth_scores",
    "write_scores",
]
