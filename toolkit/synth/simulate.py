"""The dynamic part of the simulated world: sessions, candidates, the logging policy, actions.

Time advances an hour at a time. Each hour every viewer opens sessions on each surface at their
own rate (with a daily rhythm); each session gets candidates the way the seeds describe (Feed
and Stories from followed accounts, Explore and Reels mostly from accounts the viewer does not
follow), ordered by a noisy *logging policy* that leans on observed popularity, so positions carry
bias and bought likes buy exposure; the viewer scrolls to a random depth (less than half of their
Feed inventory on average); every action is drawn from :mod:`toolkit.synth.truth`. After the hour,
the engagement counts, the seen set and (once a day) the graph and interaction history advance.

:func:`simulate` yields the world a chunk of days at a time, so a large world never sits in
memory whole; :func:`simulate_world` collects the chunks into one set of tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from toolkit.store.schema import ACTIONS, CONTENT_FLAGS, DEVICES, ENGAGEMENT_ACTIONS, FORMATS, SURFACES, polars_schema
from toolkit.synth.config import SynthConfig
from toolkit.synth.inauthentic import FOLLOW, BoughtEngagement, schedule_bought_engagement
from toolkit.synth.truth import FEATURES as TRUTH_FEATURES
from toolkit.synth.truth import ImpressionFeatures, action_probabilities, examination
from toolkit.synth.world import World, build_static_world, follows_frame, hour_of_day_weights, rng_for, timestamps

_US_PER_S = 1_000_000
_US_PER_HOUR = 3600 * _US_PER_S
_POST_ACTIONS = ("like", "comment", "share", "save")  # labels that become public engagements
_HISTORY_ACTIONS = [ACTIONS.index(a) for a in ("like", "comment", "share", "profile_tap")]
_FEED_FORMATS = [FORMATS.index(f) for f in ("photo", "video", "carousel", "reel")]
_EXPLORE_FORMATS = [FORMATS.index(f) for f in ("photo", "video", "carousel")]
_FLAG = {f: i for i, f in enumerate(CONTENT_FLAGS)}


_INPUT_FEATURES = [f for f in TRUTH_FEATURES if f != "propensity"]  # propensity is per viewer: sim_accounts
_INPUT_SCHEMA = {"impression_id": pl.Int64, **{f: pl.Float64 for f in _INPUT_FEATURES}, "examination": pl.Float64}


class CodeSet:
    """A growing set of int64 codes: a sorted base plus the codes added since the last compaction."""

    def __init__(self):
        self.base = np.zeros(0, np.int64)
        self._recent: list[np.ndarray] = []
        self._recent_sorted = np.zeros(0, np.int64)

    def add(self, codes: np.ndarray) -> None:
        if len(codes):
            self._recent.append(codes)

    def compact(self) -> None:
        self.base = np.union1d(self.base, self._sorted_recent())
        self._recent, self._recent_sorted = [], np.zeros(0, np.int64)

    def _sorted_recent(self) -> np.ndarray:
        if self._recent and (len(self._recent) > 1 or self._recent[0] is not self._recent_sorted):
            self._recent_sorted = np.sort(np.concatenate(self._recent))
            self._recent = [self._recent_sorted]
        return self._recent_sorted

    def contains(self, codes: np.ndarray) -> np.ndarray:
        return _isin_sorted(codes, self.base) | _isin_sorted(codes, self._sorted_recent())


def _isin_sorted(codes: np.ndarray, sorted_arr: np.ndarray) -> np.ndarray:
    if len(sorted_arr) == 0:
        return np.zeros(codes.shape, dtype=bool)
    i = np.minimum(np.searchsorted(sorted_arr, codes), len(sorted_arr) - 1)
    return sorted_arr[i] == codes


class PairCounter:
    """Counts per (a, b) pair code, read from a snapshot that advances once a day."""

    def __init__(self):
        self.codes = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.int64)
        self._pending: list[np.ndarray] = []

    def add(self, codes: np.ndarray) -> None:
        self._pending.append(codes)

    def compact(self) -> None:
        if not self._pending:
            return
        new, new_counts = np.unique(np.concatenate(self._pending), return_counts=True)
        codes = np.concatenate([self.codes, new])
        counts = np.concatenate([self.counts, new_counts])
        self.codes, inverse = np.unique(codes, return_inverse=True)
        self.counts = np.bincount(inverse, weights=counts).astype(np.int64)
        self._pending = []

    def get(self, codes: np.ndarray) -> np.ndarray:
        if len(self.codes) == 0:
            return np.zeros(codes.shape, np.int64)
        i = np.minimum(np.searchsorted(self.codes, codes), len(self.codes) - 1)
        return np.where(self.codes[i] == codes, self.counts[i], 0)


@dataclass
class Graph:
    """The follow graph as sorted pair codes (follower * n + followee) with aligned attributes."""

    n: int
    codes: np.ndarray
    created_us: np.ndarray
    tie: np.ndarray
    close: np.ndarray
    muted: np.ndarray

    @classmethod
    def from_world(cls, w: World) -> "Graph":
        codes = w.f_src * w.n_users + w.f_dst
        order = np.argsort(codes)
        return cls(w.n_users, codes[order], w.f_created_us[order], w.f_tie[order], w.f_close[order], w.f_muted[order])

    def lookup(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, index) of each pair code."""
        if len(self.codes) == 0:
            return np.zeros(codes.shape, bool), np.zeros(codes.shape, np.int64)
        i = np.minimum(np.searchsorted(self.codes, codes), len(self.codes) - 1)
        return self.codes[i] == codes, i

    def add(self, codes: np.ndarray, created_us: np.ndarray, tie: np.ndarray) -> None:
        codes = np.concatenate([self.codes, codes])
        order = np.argsort(codes, kind="stable")
        k = len(created_us)
        self.codes = codes[order]
        self.created_us = np.concatenate([self.created_us, created_us])[order]
        self.tie = np.concatenate([self.tie, tie])[order]
        self.close = np.concatenate([self.close, np.zeros(k, bool)])[order]
        self.muted = np.concatenate([self.muted, np.zeros(k, bool)])[order]

    def frame(self) -> pl.DataFrame:
        """Follow edges usable for Feed and Stories candidates (not muted)."""
        keep = ~self.muted
        return pl.DataFrame(
            {
                "user": self.codes[keep] // self.n,
                "author": self.codes[keep] % self.n,
                "tie": self.tie[keep],
                "close": self.close[keep],
            }
        )


class _State:
    """What the world remembers between hours."""

    def __init__(self, world: World):
        n_posts = world.n_posts
        self.observed = np.zeros((len(_POST_ACTIONS), n_posts), np.int64)  # genuine + bought
        self.genuine = np.zeros((len(_POST_ACTIONS), n_posts), np.int64)
        self.shown = np.zeros(n_posts, np.int64)
        self.graph = Graph.from_world(world)
        self.tie_noise = world.config.tie_noise
        self.edges = self.graph.frame()
        self.followers = np.bincount(world.f_dst, minlength=world.n_users)
        self.seen = CodeSet()  # viewer * n_posts + post
        self.not_interested = CodeSet()  # viewer * n_users + author
        self.history = PairCounter()  # viewer * n_users + author -> past interactions
        self.new_follows: list[tuple[np.ndarray, np.ndarray]] = []  # (codes, created) of today
        self.followed_today = CodeSet()

    def end_of_day(self, rng: np.random.Generator) -> None:
        self.seen.compact()
        self.not_interested.compact()
        self.history.compact()
        if self.new_follows:
            codes = np.concatenate([c for c, _ in self.new_follows])
            created = np.concatenate([t for _, t in self.new_follows])
            self.graph.add(codes, created, rng.normal(0, self.tie_noise, size=len(codes)))
            self.new_follows = []
            self.followed_today = CodeSet()
            self.edges = self.graph.frame()
            self.followers = np.bincount(self.graph.codes % self.graph.n, minlength=self.graph.n)

    def following(self, codes: np.ndarray) -> np.ndarray:
        found, _ = self.graph.lookup(codes)
        return found | self.followed_today.contains(codes)


@dataclass
class Chunk:
    """Rows produced by one chunk of simulated days (plus, in the first chunk, the static world)."""

    tables: dict[str, pl.DataFrame]
    days: range


def simulate(config: SynthConfig, *, chunk_days: int = 1, on_hour=None) -> Iterator[Chunk]:
    """Yield the simulated world chunk by chunk: the static tables first, then ``chunk_days`` at a time.

    The rows do not depend on ``chunk_days``: it only sets how much is held in memory at once.
    ``on_hour`` is called after each simulated hour (for progress bars).

    Example
    -------
    >>> from toolkit.synth import SynthConfig, simulate
    >>> chunks = list(simulate(SynthConfig(n_users=200, days=1, seed=1)))
    >>> sorted(chunks[0].tables)
    ['follows', 'posts', 'sim_accounts', 'sim_posts', 'users']
    """
    if chunk_days < 1:
        raise ValueError("chunk_days must be at least 1")
    world = build_static_world(config)
    bought = schedule_bought_engagement(world)
    yield Chunk(
        {
            "users": world.users_frame(),
            "follows": world.follows_frame(),
            "posts": world.posts_frame(),
            "sim_accounts": world.accounts_frame(),
            "sim_posts": world.sim_posts_frame(),
        },
        range(0),
    )
    state = _State(world)
    next_id = 0
    for first_day in range(0, config.days, chunk_days):
        days = range(first_day, min(first_day + chunk_days, config.days))
        parts: dict[str, list[pl.DataFrame]] = {"impressions": [], "engagements": [], "follows": [], "sim_impression_inputs": []}
        for day in days:
            for hour in range(day * 24, (day + 1) * 24):
                imp, eng, fol, inputs = _simulate_hour(world, state, bought, hour, next_id)
                next_id += imp.height
                parts["impressions"].append(imp)
                parts["engagements"].append(eng)
                parts["follows"].append(fol)
                parts["sim_impression_inputs"].append(inputs)
                if on_hour is not None:
                    on_hour(imp.height)
            state.end_of_day(rng_for(config, 4, day))
        yield Chunk({k: pl.concat(v, how="vertical") for k, v in parts.items()}, days)


def simulate_world(config: SynthConfig) -> dict[str, pl.DataFrame]:
    """The whole simulated world in memory, one polars DataFrame per table.

    Example
    -------
    >>> from toolkit.synth import SynthConfig, simulate_world
    >>> tables = simulate_world(SynthConfig(n_users=200, days=1, seed=1))
    >>> tables["impressions"].height > 0
    True
    """
    parts: dict[str, list[pl.DataFrame]] = {}
    for chunk in simulate(config, chunk_days=config.days):
        for name, df in chunk.tables.items():
            parts.setdefault(name, []).append(df)
    return {name: pl.concat(dfs, how="vertical") for name, dfs in parts.items()}


# --------------------------------------------------------------------------------------------
# one hour


def _simulate_hour(world: World, state: _State, bought: BoughtEngagement, hour: int, first_id: int):
    config = world.config
    rng = rng_for(config, 3, hour)
    t0 = hour * _US_PER_HOUR
    diurnal = hour_of_day_weights()[hour % 24]
    batches = []
    for s, surface in enumerate(SURFACES):
        rate = world.activity * config.sessions_per_day[surface] * diurnal / 24.0
        n_sessions = rng.poisson(rate)
        viewers = np.repeat(np.arange(world.n_users), n_sessions)
        if len(viewers) == 0:
            continue
        depth = 1 + rng.geometric(1.0 / config.session_depth[surface], size=len(viewers)) - 1
        start = t0 + rng.integers(0, int(0.9 * _US_PER_HOUR), size=len(viewers))
        if surface in ("feed", "stories"):
            sess, post, pos = _followed_candidates(world, state, rng, surface, viewers, depth, t0)
        else:
            sess, post, pos = _recommended_candidates(world, state, rng, surface, viewers, depth, t0)
        if len(post) == 0:
            continue
        # a few seconds per item, never past the end of the hour
        step = rng.uniform(2, 8, size=len(post)) * _US_PER_S
        ts = np.minimum(start[sess] + (pos * step).astype(np.int64), t0 + _US_PER_HOUR - 1)
        batches.append((s, viewers[sess], post, pos, ts))
    imp_frames, eng_parts, follow_parts, input_frames = [], [], [], []
    next_id = first_id
    for s, viewer, post, pos, ts in batches:
        frame, eng, fol, inputs = _act(world, state, rng, s, viewer, post, pos, ts, next_id, t0)
        input_frames.append(inputs)
        next_id += frame.height
        imp_frames.append(frame)
        eng_parts.append(eng)
        follow_parts.append(fol)
    # the services deliver whatever was bought for this hour
    idx = bought.window(t0, t0 + _US_PER_HOUR)
    eng_parts.append(
        _engagement_frame(
            world, bought.user[idx], bought.post[idx], bought.target[idx],
            bought.action[idx], bought.ts_us[idx], bought.via_app[idx],
        )
    )  # fmt: skip
    is_like = (bought.action[idx] == ENGAGEMENT_ACTIONS.index("like")) & (bought.post[idx] >= 0)
    np.add.at(state.observed[0], bought.post[idx][is_like], 1)
    is_follow = bought.action[idx] == FOLLOW
    follow_parts.append(_new_follows(world, state, bought.user[idx][is_follow], bought.target[idx][is_follow], bought.ts_us[idx][is_follow]))
    impressions = pl.concat(imp_frames) if imp_frames else _empty_impressions()
    inputs = pl.concat(input_frames) if input_frames else pl.DataFrame(schema=_INPUT_SCHEMA)
    return impressions, pl.concat(eng_parts), pl.concat(follow_parts), inputs


def _followed_candidates(world, state, rng, surface, viewers, depth, t0):
    """Feed: recent posts of followed, unmuted accounts; Stories: their stories of the last 24 h."""
    config = world.config
    window = config.feed_window_hours if surface == "feed" else config.stories_window_hours
    # posts younger than the window at the end of the hour: a 24 h story is never shown at 24 h 30 min
    lo, hi = np.searchsorted(world.p_created_us, [t0 + _US_PER_HOUR - int(window * _US_PER_HOUR), t0])
    recent = np.arange(lo, hi)
    if surface == "feed":
        recent = recent[np.isin(world.p_format[recent], _FEED_FORMATS)]
    else:
        recent = recent[world.p_format[recent] == FORMATS.index("story")]
    posts = pl.DataFrame({"author": world.p_author[recent], "post": recent})
    sessions = pl.DataFrame({"sess": np.arange(len(viewers)), "user": viewers})
    cand = sessions.join(state.edges, on="user").join(posts, on="author")
    if cand.height == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    sess = cand["sess"].to_numpy()
    post = cand["post"].to_numpy()
    user = cand["user"].to_numpy()
    fresh = ~state.seen.contains(user * world.n_posts + post)
    sess, post, user = sess[fresh], post[fresh], user[fresh]
    tie = cand["tie"].to_numpy()[fresh]
    close = cand["close"].to_numpy()[fresh]
    age_days = (t0 - world.p_created_us[post]) / (24 * _US_PER_HOUR)
    # An older production ranker: closeness, Close Friends, recency and observed like rate.
    score = (
        0.5 * tie
        + 0.8 * close
        - 0.6 * age_days
        + 0.4 * np.log1p(state.observed[0, post])
        + 2.0 * state.observed[0, post] / (state.shown[post] + 10)
        - 4.0 * world.p_flags[post, _FLAG["guideline_violation"]]
        - 1.0 * world.p_flags[post, _FLAG["misinformation"]]
        + config.logging_noise * rng.gumbel(size=len(post))
    )
    return _top_per_session(sess, post, score, depth)


def _recommended_candidates(world, state, rng, surface, viewers, depth, t0):
    """Explore and Reels: popular and topical recent posts of accounts the viewer does not follow."""
    config = world.config
    lo, hi = np.searchsorted(world.p_created_us, [t0 - int(config.explore_window_hours * _US_PER_HOUR), t0])
    recent = np.arange(lo, hi)
    formats = _EXPLORE_FORMATS if surface == "explore" else [FORMATS.index("reel")]
    recent = recent[np.isin(world.p_format[recent], formats) & ~world.p_flags[recent, _FLAG["guideline_violation"]]]
    if len(recent) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    engagement = state.observed[:, recent].sum(axis=0)
    popular = recent[np.argsort(-engagement, kind="stable")[: config.explore_pool]]
    rest = np.setdiff1d(recent, popular)
    extra = rng.choice(rest, size=min(len(rest), config.explore_random_pool), replace=False) if len(rest) else rest
    pool = np.concatenate([popular, extra])
    authors = world.p_author[pool]
    # The logging policy reads observed popularity (bought likes included) and topic interest.
    interest = world.interest[viewers][:, world.p_topic[pool]] * world.config.n_topics
    score = (
        0.45 * np.log1p(state.observed[0, pool])[None, :]
        + 0.25 * np.log1p(state.observed[1:, pool].sum(axis=0))[None, :]
        + 0.8 * np.log(interest + 0.05)
        + config.logging_noise * rng.gumbel(size=(len(viewers), len(pool)))
    )
    if surface == "reels":
        audio = world.p_audio[pool]
        score += 0.15 * np.where(audio >= 0, np.log1p(world.audio_popularity[np.maximum(audio, 0)]), 0)[None, :]
    pair_user = viewers[:, None] * world.n_users + authors[None, :]
    blocked = (
        (viewers[:, None] == authors[None, :])
        | state.following(pair_user.ravel()).reshape(pair_user.shape)
        | state.not_interested.contains(pair_user.ravel()).reshape(pair_user.shape)
        | state.seen.contains((viewers[:, None] * world.n_posts + pool[None, :]).ravel()).reshape(pair_user.shape)
    )
    score[blocked] = -np.inf
    k = min(int(depth.max()), len(pool))
    top = np.argpartition(-score, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(score, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    top_scores = np.take_along_axis(top_scores, order, axis=1)
    pos = np.broadcast_to(np.arange(k), top.shape)
    keep = (pos < depth[:, None]) & np.isfinite(top_scores)
    sess = np.broadcast_to(np.arange(len(viewers))[:, None], top.shape)[keep]
    return sess, pool[top[keep]], pos[keep]


def _top_per_session(sess, post, score, depth):
    """Order each session's candidates by score and keep the first ``depth`` of them."""
    order = np.lexsort((-score, sess))
    sess, post = sess[order], post[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sess)) + 1]
    counts = np.diff(np.r_[starts, len(sess)])
    pos = np.arange(len(sess)) - np.repeat(starts, counts)
    keep = pos < depth[sess]
    return sess[keep], post[keep], pos[keep]


def _act(world, state, rng, s, viewer, post, pos, ts, first_id, t0):
    """Draw every action on a batch of impressions of one surface; update the state."""
    config = world.config
    surface = SURFACES[s]
    n = len(post)
    author = world.p_author[post]
    pair = viewer * world.n_users + author
    found, edge = state.graph.lookup(pair)
    tie = np.where(found, state.graph.tie[edge], 0.0)
    already = state.following(pair)
    device = np.where(rng.random(n) < 0.9, world.device[viewer], rng.integers(0, 3, size=n)).astype(np.int8)
    interest = world.interest[viewer, world.p_topic[post]] * config.n_topics
    features = ImpressionFeatures(
        surface=s,
        position=pos,
        device=device,
        fmt=world.p_format[post],
        flags=world.p_flags[post],
        duration=world.p_duration[post],
        has_audio=world.p_audio[post] >= 0,
        already_follows=already,
        survey_shown=np.full(n, surface == "reels") & (rng.random(n) < config.survey_rate),
        values={
            "quality": world.p_quality[post],
            "popularity": np.log1p(state.genuine[0, post]) - 1.5,
            "age": (ts - world.p_created_us[post]) / (24 * _US_PER_HOUR),
            "author_reach": np.log1p(state.followers[author]) - 3.5,
            "propensity": world.propensity[viewer],
            "tie": tie,
            "history": np.log1p(state.history.get(pair)),
            "mutual": np.log1p(state.history.get(author * world.n_users + viewer)),
            "topic_match": np.clip(np.log(interest + config.topic_floor), -3, 2),
        },
    )
    probs, observable = action_probabilities(features)
    labels = rng.random(probs.shape) < np.nan_to_num(probs)
    hour_end = t0 + _US_PER_HOUR - 1
    follow_ts = np.minimum(ts + rng.integers(_US_PER_S, 60 * _US_PER_S, size=n), hour_end)
    _drop_follows_after_following(pair, ts, follow_ts, labels, probs, observable)

    cols: dict[str, object] = {
        "impression_id": np.arange(first_id, first_id + n, dtype=np.int64),
        "user_id": viewer.astype(np.int64),
        "post_id": post.astype(np.int64),
        "surface": pl.Series([surface] * n, dtype=pl.String),
        "ts": timestamps(world.config.start, ts),
        "position": pos.astype(np.int32),
        "device": pl.Series(np.array(DEVICES)[device]),
    }
    for j, action in enumerate(ACTIONS):
        cols[action] = _with_nulls(pl.Series(action, labels[:, j]), ~observable[:, j])
    for j, action in enumerate(ACTIONS):
        cols[f"p_{action}"] = pl.Series(f"p_{action}", probs[:, j], dtype=pl.Float64, nan_to_null=True)
    frame = pl.DataFrame(cols)

    # state: what was shown, what was done
    state.shown[post] += 1
    state.seen.add(viewer * world.n_posts + post)
    for j, action in enumerate(_POST_ACTIONS):
        done = labels[:, ACTIONS.index(action)]
        np.add.at(state.observed[j], post[done], 1)
        np.add.at(state.genuine[j], post[done], 1)
    state.history.add(pair[labels[:, _HISTORY_ACTIONS].any(axis=1)])
    state.not_interested.add(pair[labels[:, ACTIONS.index("not_interested")]])

    # public engagement: a few seconds after the impression, within the hour
    users, posts, actions, times = [], [], [], []
    for action in _POST_ACTIONS:
        done = labels[:, ACTIONS.index(action)]
        users.append(viewer[done])
        posts.append(post[done])
        actions.append(np.full(done.sum(), ENGAGEMENT_ACTIONS.index(action)))
        times.append(np.minimum(ts[done] + rng.integers(_US_PER_S, 60 * _US_PER_S, size=done.sum()), hour_end))
    user_e = np.concatenate(users)
    eng = _engagement_frame(
        world, user_e, np.concatenate(posts), np.full(len(user_e), -1), np.concatenate(actions),
        np.concatenate(times), world.third_party_client[user_e],
    )  # fmt: skip
    followed = labels[:, ACTIONS.index("follow")]
    fol = _new_follows(world, state, viewer[followed], author[followed], follow_ts[followed])
    follow_eng = _engagement_frame(
        world, fol["follower_id"].to_numpy(), np.full(fol.height, -1), fol["followee_id"].to_numpy(),
        np.full(fol.height, FOLLOW), _us(world, fol["created_at"]), world.third_party_client[fol["follower_id"].to_numpy()],
    )  # fmt: skip
    # the truth's own inputs, so a model can be trained on them as a reference (what signals lose)
    inputs = pl.DataFrame(
        {
            "impression_id": cols["impression_id"],
            **{f: features.values[f] for f in _INPUT_FEATURES},
            "examination": examination(pos.astype(np.float64), surface),
        },
        schema=_INPUT_SCHEMA,
    )
    return frame, pl.concat([eng, follow_eng]), fol, inputs


def _drop_follows_after_following(pair, ts, follow_ts, labels, probs, observable) -> None:
    """Within one batch, a viewer who followed an author cannot follow them again on a later item."""
    j = ACTIONS.index("follow")
    done = labels[:, j]
    if not done.any():
        return
    codes, first = _earliest_per_code(pair[done], follow_ts[done])
    i = np.minimum(np.searchsorted(codes, pair), len(codes) - 1)
    later = (codes[i] == pair) & (ts > first[i])
    labels[later, j] = False
    probs[later, j] = np.nan
    observable[later, j] = False


def _earliest_per_code(codes: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique sorted codes and the earliest time of each."""
    order = np.lexsort((ts, codes))
    codes, ts = codes[order], ts[order]
    first = np.r_[True, codes[1:] != codes[:-1]] if len(codes) else np.zeros(0, bool)
    return codes[first], ts[first]


def _new_follows(world, state, src, dst, ts):
    """Record follows made this hour (first one per pair wins); returns them as ``follows`` rows."""
    codes, ts = _earliest_per_code(src * world.n_users + dst, ts)
    fresh = ~state.following(codes) & (codes // world.n_users != codes % world.n_users)
    codes, ts = codes[fresh], ts[fresh]
    if len(codes):
        state.new_follows.append((codes, ts))
        state.followed_today.add(codes)
    k = len(codes)
    return follows_frame(world.config, codes // world.n_users, codes % world.n_users, ts, np.zeros(k, bool), np.zeros(k, bool))


def _engagement_frame(world, user, post, target, action, ts, via_app) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": user.astype(np.int64),
            "post_id": _with_nulls(pl.Series(post.astype(np.int64)), post < 0),
            "target_user_id": _with_nulls(pl.Series(target.astype(np.int64)), target < 0),
            "action": pl.Series(np.array(ENGAGEMENT_ACTIONS)[action.astype(np.int64)]),
            "ts": timestamps(world.config.start, ts),
            "via_third_party_app": via_app.astype(bool),
        }
    )


def _with_nulls(series: pl.Series, null: np.ndarray) -> pl.Series:
    return series.scatter(np.flatnonzero(null), None) if null.any() else series


def _us(world: World, s: pl.Series) -> np.ndarray:
    base = np.datetime64(world.config.start, "us")
    return (s.to_numpy().astype("datetime64[us]") - base).astype(np.int64)


def _empty_impressions() -> pl.DataFrame:
    return pl.DataFrame(schema=polars_schema("impressions"))
