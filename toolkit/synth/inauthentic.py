"""Bought engagement: what the burst and drip services and the lockstep rings do, and when.

The services act on their own schedule, independent of what genuine viewers do, so the whole
schedule is drawn up front from its own random stream. Bought likes land in ``engagements``
(never in ``impressions``): they inflate the popularity counts that a ranker sees, but not the
true probabilities of genuine viewers.

Strategies
----------
burst
    Within minutes of each post of a buyer, dozens to hundreds of the service's bots like it;
    bought followers arrive in bursts of dozens within an hour.
drip
    Bought likes trickle in over the three days after a post; bought followers a few a day.
lockstep
    Members of a ring like every post of every other member together, within minutes of one
    another, a few hours after it is posted (CopyCatch's and SynchroTrap's lockstep pattern).

Bots also like a few random posts a day as camouflage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.store.schema import ENGAGEMENT_ACTIONS, FORMATS
from toolkit.synth.world import STRATEGIES, World, rng_for

_US_PER_MIN = 60_000_000
_US_PER_HOUR = 60 * _US_PER_MIN
LIKE = ENGAGEMENT_ACTIONS.index("like")
FOLLOW = ENGAGEMENT_ACTIONS.index("follow")


@dataclass
class BoughtEngagement:
    """Bought engagement events, sorted by time (microseconds since the start)."""

    user: np.ndarray  # who gives it (a bot or a ring member)
    post: np.ndarray  # -1 for follows
    target: np.ndarray  # -1 for likes
    action: np.ndarray  # index into ENGAGEMENT_ACTIONS
    ts_us: np.ndarray
    via_app: np.ndarray

    def window(self, lo_us: int, hi_us: int) -> np.ndarray:
        """Indices of the events in ``[lo_us, hi_us)``."""
        return np.arange(*np.searchsorted(self.ts_us, [lo_us, hi_us]))


def schedule_bought_engagement(world: World) -> BoughtEngagement:
    """Draw every bought like and follow of the simulated window."""
    config = world.config
    rng = rng_for(config, 2)
    end_us = config.n_hours * _US_PER_HOUR
    feed_post = world.p_format != FORMATS.index("story")
    in_window = (world.p_created_us >= 0) & (world.p_created_us < end_us) & feed_post
    bots = {s: np.flatnonzero((world.role == 1) & (world.strategy == STRATEGIES.index(s))) for s in ("burst", "drip")}
    parts: list[tuple[np.ndarray, ...]] = []  # (user, post, target, action, ts, strategy index)

    def likes(givers, post, ts, strategy):
        k = len(givers)
        parts.append((givers, np.full(k, post), np.full(k, -1), np.full(k, LIKE), ts, np.full(k, strategy)))

    def follows(givers, target, ts, strategy):
        k = len(givers)
        parts.append((givers, np.full(k, -1), np.full(k, target), np.full(k, FOLLOW), ts, np.full(k, strategy)))

    for buyer in np.flatnonzero(world.role == 2):
        s = STRATEGIES[world.strategy[buyer]]
        pool = bots[s]
        if len(pool) == 0:
            continue
        for post in np.flatnonzero(in_window & (world.p_author == buyer)):
            t0 = world.p_created_us[post]
            if s == "burst":
                k = min(len(pool), int(rng.integers(*config.burst_likes, endpoint=True)))
                ts = t0 + (rng.exponential(config.burst_minutes, size=k) * _US_PER_MIN).astype(np.int64)
            else:
                k = min(len(pool), int(rng.integers(*config.drip_likes, endpoint=True)))
                ts = t0 + (rng.uniform(0, config.drip_hours, size=k) * _US_PER_HOUR).astype(np.int64)
            likes(rng.choice(pool, size=k, replace=False), post, ts + 1, STRATEGIES.index(s))
        if s == "burst":
            for t0 in rng.uniform(0, end_us, size=2).astype(np.int64):
                k = min(len(pool), int(rng.integers(*config.bought_followers_burst, endpoint=True)))
                ts = t0 + rng.integers(0, _US_PER_HOUR, size=k)
                follows(rng.choice(pool, size=k, replace=False), buyer, ts, 0)
        else:
            for day in range(config.days):
                k = min(len(pool), int(rng.integers(*config.bought_followers_drip_per_day, endpoint=True)))
                ts = day * 24 * _US_PER_HOUR + rng.integers(0, 24 * _US_PER_HOUR, size=k)
                follows(rng.choice(pool, size=k, replace=False), buyer, ts, 1)

    lockstep = STRATEGIES.index("lockstep")
    for members in world.rings:
        for post in np.flatnonzero(in_window & np.isin(world.p_author, members)):
            others = members[members != world.p_author[post]]
            others = others[rng.random(len(others)) < 0.9]
            t0 = world.p_created_us[post] + int(rng.uniform(*config.ring_delay_hours) * _US_PER_HOUR)
            ts = t0 + (rng.uniform(0, config.ring_spread_minutes, size=len(others)) * _US_PER_MIN).astype(np.int64)
            likes(others, post, ts, lockstep)

    # camouflage: bots like random posts of the window now and then
    window_posts = np.flatnonzero(in_window)
    for s, pool in bots.items():
        if len(pool) == 0 or len(window_posts) == 0:
            continue
        k = rng.poisson(config.bot_camouflage_likes_per_day * config.days * len(pool))
        givers = rng.choice(pool, size=k)
        posts = rng.choice(window_posts, size=k)
        ts = world.p_created_us[posts] + (rng.uniform(0, 48, size=k) * _US_PER_HOUR).astype(np.int64)
        parts.append((givers, posts, np.full(k, -1), np.full(k, LIKE), ts, np.full(k, STRATEGIES.index(s))))

    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return BoughtEngagement(empty, empty, empty, empty, empty, np.zeros(0, bool))
    user, post, target, action, ts, strat = (np.concatenate(c).astype(np.int64) for c in zip(*parts))
    report_rate = np.array([config.app_reports_itself[s] for s in STRATEGIES])
    via_app = rng.random(len(user)) < report_rate[strat]
    keep = ts < end_us
    # one like per giver and post, one follow per giver and target
    key_obj = np.where(post >= 0, post, world.n_posts + target)
    _, first = np.unique(user * (world.n_posts + world.n_users) + key_obj + 0 * keep, return_index=True)
    unique = np.zeros(len(user), dtype=bool)
    unique[first] = True
    keep &= unique
    # a bought follow of an account the bot already follows adds nothing
    already = np.isin(user * world.n_users + target, world.f_src * world.n_users + world.f_dst) & (action == FOLLOW)
    keep &= ~already
    order = np.lexsort((user, ts))
    order = order[keep[order]]
    return BoughtEngagement(user[order], post[order], target[order], action[order], ts[order], via_app[order])
