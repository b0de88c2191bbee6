"""The ground-truth action model: the true probability of each action on each impression.

For an impression of post ``p`` by author ``a`` shown to viewer ``u`` on surface ``s`` at
position ``k``::

    P(action) = exam_s(k) * sigmoid( logit(base_rate[action, s])
                                     + sum_f COEFS[action][f] * feature_f
                                     + format, content-flag, device and duration effects )

with ``exam_s(k) = 1 / (1 + k / tau_s) ** power`` the chance that the viewer looks at position k
at all. The features cover the four signal families of the seeds (post, author, viewer,
viewer-author) plus topic match and recency; see :data:`toolkit.synth.config.COEFS`. Every
feature is computed from state strictly before the impression's hour (popularity) or day
(interaction history), so a model can learn it from earlier events in the store.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.store.schema import ACTIONS, CONTENT_FLAGS, DEVICES, FORMATS, SURFACES
from toolkit.synth import config as C

FEATURES = ("quality", "popularity", "age", "author_reach", "propensity", "tie", "history", "mutual", "topic_match")


@dataclass
class ImpressionFeatures:
    """Latent and observable inputs of the truth model, one entry per impression."""

    surface: int  # index into SURFACES (one surface per batch)
    position: np.ndarray
    device: np.ndarray  # index into DEVICES
    fmt: np.ndarray  # index into FORMATS
    flags: np.ndarray  # (n, n_flags) bool
    duration: np.ndarray  # seconds, nan for none
    has_audio: np.ndarray
    already_follows: np.ndarray
    survey_shown: np.ndarray
    values: dict[str, np.ndarray]  # FEATURES -> values; "propensity" is (n, n_actions)


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def examination(position: np.ndarray, surface: str) -> np.ndarray:
    """Probability that a viewer looks at the item at each 0-based position of a surface."""
    return 1.0 / (1.0 + position / C.EXAM_TAU[surface]) ** C.EXAM_POWER


def action_probabilities(x: ImpressionFeatures) -> tuple[np.ndarray, np.ndarray]:
    """True probabilities ``(n, n_actions)`` and an observability mask of the same shape."""
    surface = SURFACES[x.surface]
    n = len(x.position)
    exam = examination(x.position.astype(np.float64), surface)
    probs = np.zeros((n, len(ACTIONS)))
    observable = np.ones((n, len(ACTIONS)), dtype=bool)
    fmt_names = np.array(FORMATS)
    device_names = np.array(DEVICES)
    for j, action in enumerate(ACTIONS):
        base = C.BASE_RATES[action][surface]
        if base is None:
            observable[:, j] = False
            continue
        z = np.full(n, _logit(base))
        for f, w in C.COEFS[action].items():
            if w:
                v = x.values[f][:, j] if f == "propensity" else x.values[f]
                z += w * v
        for fmt, effects in C.FORMAT_EFFECTS.items():
            if action in effects:
                z += effects[action] * (fmt_names[x.fmt] == fmt)
        for i, flag in enumerate(CONTENT_FLAGS):
            w = C.FLAG_EFFECTS.get(flag, {}).get(action)
            if w:
                z += w * x.flags[:, i]
        for device, effects in C.DEVICE_EFFECTS.items():
            if action in effects:
                z += effects[action] * (device_names[x.device] == device)
        if action == "watch_complete":
            z += C.DURATION_EFFECT * np.log2(np.nan_to_num(x.duration, nan=15.0) / 15.0)
        probs[:, j] = exam / (1.0 + np.exp(-z))
    observable[:, ACTIONS.index("watch_complete")] &= ~np.isnan(x.duration)
    observable[:, ACTIONS.index("audio_page")] &= x.has_audio
    observable[:, ACTIONS.index("entertaining")] &= x.survey_shown
    observable[:, ACTIONS.index("follow")] &= ~x.already_follows
    probs[~observable] = np.nan
    return probs, observable
