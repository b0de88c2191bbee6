"""Parameters of the simulated world, and the coefficients of its ground-truth action model.

Everything the simulator draws is set here as data, so a study can change one knob and rebuild.
See ``docs/simulation.md`` for the generative model these numbers drive.

Example
-------
>>> from toolkit.synth import SynthConfig
>>> small = SynthConfig(n_users=300, days=3, seed=7)
>>> small.n_hours
72
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime

from toolkit.errors import FeedlabError
from toolkit.store.schema import ACTIONS, SURFACES

# Base rate of each action on each surface for an average viewer, post and position 0, before
# examination. None = the action cannot happen there (the label is null): no saving a story.
BASE_RATES: dict[str, dict[str, float | None]] = {
    #                 feed    stories explore reels
    "dwell":          dict(feed=0.40, stories=0.55, explore=0.35, reels=0.45),
    "like":           dict(feed=0.09, stories=0.03, explore=0.06, reels=0.08),
    "comment":        dict(feed=0.015, stories=0.008, explore=0.005, reels=0.008),
    "share":          dict(feed=0.012, stories=0.004, explore=0.012, reels=0.02),
    "save":           dict(feed=0.012, stories=None, explore=0.025, reels=0.012),
    "profile_tap":    dict(feed=0.02, stories=0.01, explore=0.035, reels=0.03),
    "follow":         dict(feed=0.01, stories=0.01, explore=0.008, reels=0.01),
    "watch_complete": dict(feed=0.30, stories=0.60, explore=0.25, reels=0.35),
    "audio_page":     dict(feed=0.004, stories=0.003, explore=0.006, reels=0.025),
    "entertaining":   dict(feed=None, stories=None, explore=None, reels=0.45),
    "not_interested": dict(feed=0.004, stories=None, explore=0.012, reels=0.012),
    "report":         dict(feed=0.0006, stories=0.0004, explore=0.001, reels=0.001),
}  # fmt: skip

# Ground-truth logit coefficients: action -> feature -> weight. Features (see truth.py):
#   quality      the post's latent quality (post family; learnable from its genuine engagement)
#   popularity   log1p(genuine likes before the hour), centred (post family: social proof)
#   age          days since the post was created (post family: recency)
#   author_reach log1p(author's followers), centred (author family)
#   propensity   the viewer's own latent taste for this action (viewer family)
#   tie          latent closeness of a follow pair, 0 when not following (viewer-author family)
#   history      log1p(viewer's past interactions with the author) (viewer-author family)
#   mutual       log1p(author's past interactions with the viewer) (viewer-author family)
#   topic_match  log of the viewer's interest in the post's topic relative to uniform
# Format, content-flag, device and duration effects are in the dicts below.
COEFS: dict[str, dict[str, float]] = {
    "dwell":          dict(quality=0.5, popularity=0.05, age=-0.10, author_reach=0.05, propensity=1.0, tie=0.5, history=0.15, mutual=0.05, topic_match=0.45),
    "like":           dict(quality=0.7, popularity=0.08, age=-0.15, author_reach=0.04, propensity=1.0, tie=0.8, history=0.25, mutual=0.15, topic_match=0.55),
    "comment":        dict(quality=0.4, popularity=0.05, age=-0.25, author_reach=-0.05, propensity=1.0, tie=1.0, history=0.35, mutual=0.45, topic_match=0.35),
    "share":          dict(quality=0.7, popularity=0.10, age=-0.20, author_reach=0.05, propensity=1.0, tie=0.5, history=0.15, mutual=0.10, topic_match=0.45),
    "save":           dict(quality=0.6, popularity=0.05, age=-0.05, author_reach=0.05, propensity=1.0, tie=0.2, history=0.10, mutual=0.00, topic_match=0.60),
    "profile_tap":    dict(quality=0.4, popularity=0.05, age=-0.10, author_reach=-0.05, propensity=1.0, tie=0.3, history=0.30, mutual=0.20, topic_match=0.40),
    "follow":         dict(quality=0.6, popularity=0.05, age=-0.10, author_reach=0.05, propensity=1.0, tie=0.0, history=0.40, mutual=0.30, topic_match=0.50),
    "watch_complete": dict(quality=0.6, popularity=0.03, age=-0.05, author_reach=0.02, propensity=1.0, tie=0.3, history=0.10, mutual=0.00, topic_match=0.40),
    "audio_page":     dict(quality=0.4, popularity=0.02, age=-0.05, author_reach=0.00, propensity=1.0, tie=0.0, history=0.05, mutual=0.00, topic_match=0.25),
    "entertaining":   dict(quality=0.9, popularity=0.05, age=0.00, author_reach=0.02, propensity=1.0, tie=0.1, history=0.05, mutual=0.00, topic_match=0.50),
    "not_interested": dict(quality=-0.7, popularity=-0.05, age=0.05, author_reach=0.00, propensity=1.0, tie=-0.8, history=-0.30, mutual=-0.20, topic_match=-0.70),
    "report":         dict(quality=-0.5, popularity=-0.05, age=0.00, author_reach=0.00, propensity=1.0, tie=-0.5, history=-0.20, mutual=-0.10, topic_match=-0.30),
}  # fmt: skip

FORMAT_EFFECTS: dict[str, dict[str, float]] = {
    "carousel": dict(dwell=0.35, save=0.45, like=0.05),
    "video": dict(dwell=0.2, share=0.1),
    "reel": dict(share=0.25, audio_page=0.4),
    "story": dict(comment=0.2),
}
FLAG_EFFECTS: dict[str, dict[str, float]] = {
    "misinformation": dict(share=0.3, comment=0.3, report=2.0, not_interested=0.8),
    "guideline_violation": dict(report=3.0, not_interested=1.2, like=-0.3),
    "sensitive": dict(dwell=0.2, report=1.2, not_interested=0.6),
    "political": dict(comment=0.5, share=0.2, not_interested=0.6, entertaining=-0.4),
    "low_resolution": dict(watch_complete=-0.6, entertaining=-0.6, like=-0.2, dwell=-0.2),
    "watermarked": dict(entertaining=-0.4, like=-0.1),
    "muted_audio": dict(watch_complete=-0.4, audio_page=-2.0, entertaining=-0.3),
    "has_borders": dict(entertaining=-0.3, watch_complete=-0.2),
    "mostly_text": dict(dwell=0.3, watch_complete=-0.5, entertaining=-0.4),
}
DEVICE_EFFECTS: dict[str, dict[str, float]] = {
    "ios": dict(watch_complete=0.1, like=0.05),
    "android": dict(),
    "web": dict(dwell=-0.3, watch_complete=-0.4, share=-0.3, audio_page=-0.5),
}
# Effect on watch_complete per unit of log2(duration / 15 s): long videos are finished less.
DURATION_EFFECT = -0.45
# A close friend's posts: extra closeness on top of the tie.
CLOSE_FRIEND_TIE = 1.0

# Examination (attention): the probability that a viewer looks at the item at position k is
# 1 / (1 + k / tau) ** EXAM_POWER; every action needs examination first, so positions carry bias.
EXAM_TAU: dict[str, float] = dict(feed=6.0, stories=30.0, explore=10.0, reels=25.0)
EXAM_POWER = 0.8


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of a simulated world; every field has a documented default.

    ``n_users`` counts every account, genuine or not. Inauthentic accounts are fractions of it:
    bot accounts that deliver bought engagement (split between a *burst* and a *drip* service),
    accounts that buy from those services, and members of lockstep rings that like each other's
    posts together.
    """

    n_users: int = 5000
    days: int = 14
    # The first history_days of the days are history only: features read them, but models never
    # train or test on their impressions (toolkit.store.history_until), as in a real log where
    # every viewer has a past before the period studied.
    history_days: int = 0
    seed: int = 0
    start: datetime = datetime(2026, 1, 5)
    prehistory_days: int = 3  # posts exist this long before the first impression
    n_topics: int = 20
    topic_concentration: float = 0.25  # Dirichlet alpha of a viewer's interests: lower = pickier
    # Floor of interest (relative to uniform) in the truth's topic match, log(interest + floor):
    # below it, topics a viewer does not care for all look alike, as they would to any observer.
    topic_floor: float = 0.05

    # Social graph
    follow_median: float = 45.0  # median accounts a genuine user follows
    follow_sigma: float = 0.8
    attractiveness_pareto: float = 1.2  # tail index of who gets followed: heavy-tailed followers
    same_topic_follow_share: float = 0.6  # share of follows chosen within the follower's main topic
    tie_noise: float = 0.4  # spread of a follow's closeness that no logged signal explains
    close_friend_share: float = 0.08  # of a user's follows, preferring the closest ties
    mute_share: float = 0.02

    # Activity
    sessions_per_day: dict[str, float] = field(
        default_factory=lambda: dict(feed=0.70, stories=0.45, explore=0.18, reels=0.32)
    )
    activity_sigma: float = 0.8  # lognormal spread of how active viewers are
    # A viewer's latent taste per action: a shared engagement level (revealed by every action they
    # take) plus an action-specific part (revealed only by that action, so hard to learn for rare ones).
    propensity_shared: float = 0.45
    propensity_specific: float = 0.2
    session_depth: dict[str, float] = field(
        default_factory=lambda: dict(feed=12.0, stories=8.0, explore=15.0, reels=10.0)
    )
    feed_window_hours: float = 72.0  # Feed shows recent posts of followed accounts
    stories_window_hours: float = 24.0
    explore_window_hours: float = 168.0
    explore_pool: int = 600  # popular recent posts the logging policy draws from each hour
    explore_random_pool: int = 300  # plus this many random recent ones (exploration)
    survey_rate: float = 0.05  # share of Reels impressions with the "entertaining?" survey
    logging_noise: float = 1.0  # scale of the Gumbel noise in the logging policy

    # Posting
    posts_per_day: float = 0.3  # median feed posts (photo/video/carousel/reel) per author per day
    stories_per_day: float = 0.35
    posting_sigma: float = 1.0
    format_mix: dict[str, float] = field(
        default_factory=lambda: dict(photo=0.45, carousel=0.2, video=0.1, reel=0.25)
    )
    post_quality_noise: float = 0.4  # spread of a post's quality around its author's
    reshare_story_share: float = 0.15
    flag_rates: dict[str, float] = field(
        default_factory=lambda: dict(
            misinformation=0.004,
            guideline_violation=0.004,
            sensitive=0.03,
            political=0.03,
            low_resolution=0.04,
            watermarked=0.04,
            muted_audio=0.03,
            has_borders=0.04,
            mostly_text=0.04,
        )
    )
    misinfo_offender_share: float = 0.03  # authors who post misinformation repeatedly
    misinfo_offender_rate: float = 0.2
    n_audio_per_user: float = 0.1

    # Inauthentic activity
    bot_share: float = 0.04
    buyer_share: float = 0.012
    n_rings: int = 3
    ring_size: tuple[int, int] = (8, 16)
    burst_likes: tuple[int, int] = (60, 160)  # bought likes per post, within minutes of posting
    burst_minutes: float = 10.0
    drip_likes: tuple[int, int] = (30, 90)  # bought likes per post, spread over days
    drip_hours: float = 72.0
    bought_followers_burst: tuple[int, int] = (40, 120)  # per purchase, within an hour
    bought_followers_drip_per_day: tuple[int, int] = (3, 10)
    ring_delay_hours: tuple[float, float] = (0.5, 6.0)  # a ring fires this long after a post
    ring_spread_minutes: float = 4.0  # ... and all members like within minutes of one another
    bot_camouflage_likes_per_day: float = 2.0  # bots also like random popular posts
    app_reports_itself: dict[str, float] = field(
        default_factory=lambda: dict(burst=0.7, drip=0.35, lockstep=0.1, genuine=1.0)
    )
    genuine_third_party_share: float = 0.005  # genuine users on a self-reporting scheduling app

    def __post_init__(self) -> None:
        problems = []
        if self.n_users < 100:
            problems.append(f"n_users must be at least 100 (got {self.n_users})")
        if self.days < 1:
            problems.append(f"days must be at least 1 (got {self.days})")
        if not 0 <= self.history_days < self.days:
            problems.append(
                f"history_days must be at least 0 and fewer than days ({self.days}), so that some days are studied "
                f"(got {self.history_days})"
            )
        if not 0 <= self.seed < 2**63:
            problems.append(f"seed must be a non-negative integer (got {self.seed})")
        if set(self.sessions_per_day) != set(SURFACES) or set(self.session_depth) != set(SURFACES):
            problems.append(f"sessions_per_day and session_depth need one entry per surface {SURFACES}")
        if self.n_rings * self.ring_size[1] + (self.bot_share + self.buyer_share) * self.n_users > self.n_users / 2:
            problems.append("inauthentic accounts would be more than half of the users")
        if problems:
            raise FeedlabError("invalid simulation config: " + "; ".join(problems))

    @property
    def n_hours(self) -> int:
        return self.days * 24

    def to_json(self) -> str:
        """The config as JSON (stored with the world so it can be rebuilt)."""
        d = dataclasses.asdict(self)
        d["start"] = self.start.isoformat()
        return json.dumps(d, sort_keys=True)


assert set(BASE_RATES) == set(ACTIONS) == set(COEFS)
