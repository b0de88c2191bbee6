"""The static part of the simulated world: accounts, their latent traits, the social graph, posts.

Everything here is drawn once from the seed before the first hour is simulated. Ids are
0-based indexes into the arrays, so ``user_id == index`` and ``post_id == index``.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import polars as pl

from toolkit.store.schema import ACTIONS, CONTENT_FLAGS, FORMATS
from toolkit.synth.config import CLOSE_FRIEND_TIE, SynthConfig

ROLES = ("genuine", "bot", "buyer", "ring")
STRATEGIES = ("burst", "drip", "lockstep")
_US_PER_HOUR = 3_600_000_000


def rng_for(config: SynthConfig, *stream: int) -> np.random.Generator:
    """An independent random stream for one part of the world, derived from the seed.

    Separate streams (world, each hour, bought engagement) keep every part reproducible on its own:
    generating day 5 does not depend on how many numbers day 4 drew in another part of the code.
    """
    return np.random.default_rng([config.seed, *stream])


@dataclass
class World:
    """Accounts, graph and posts as numpy arrays (times in microseconds since ``config.start``)."""

    config: SynthConfig
    # accounts
    role: np.ndarray  # int8 index into ROLES
    strategy: np.ndarray  # int8 index into STRATEGIES, -1 for genuine accounts
    created_us: np.ndarray  # account creation (negative: before the start)
    interest: np.ndarray  # (n_users, n_topics) float32, rows sum to 1
    main_topic: np.ndarray
    activity: np.ndarray  # multiplier of sessions per day (0 for bots)
    propensity: np.ndarray  # (n_users, n_actions) float32 viewer taste per action
    author_quality: np.ndarray
    attractiveness: np.ndarray
    device: np.ndarray  # int8 index into DEVICES: the viewer's main device
    third_party_client: np.ndarray  # bool: genuine user whose scheduling app reports itself
    rings: list[np.ndarray]  # members of each lockstep ring
    # follow graph at the start (sorted by follower, then followee)
    f_src: np.ndarray
    f_dst: np.ndarray
    f_created_us: np.ndarray
    f_tie: np.ndarray  # latent closeness
    f_close: np.ndarray
    f_muted: np.ndarray
    # posts (sorted by created time)
    p_author: np.ndarray
    p_created_us: np.ndarray
    p_format: np.ndarray  # int8 index into FORMATS
    p_duration: np.ndarray  # float64, nan for none
    p_topic: np.ndarray
    p_audio: np.ndarray  # int64, -1 for none
    p_has_location: np.ndarray
    p_is_reshare: np.ndarray
    p_flags: np.ndarray  # (n_posts, n_flags) bool
    p_quality: np.ndarray
    audio_popularity: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.role)

    @property
    def n_posts(self) -> int:
        return len(self.p_author)

    def users_frame(self) -> pl.DataFrame:
        start = self.config.start
        return pl.DataFrame(
            {
                "user_id": np.arange(self.n_users, dtype=np.int64),
                "created_at": timestamps(start, self.created_us),
                "is_inauthentic": self.role != 0,
            }
        )

    def accounts_frame(self) -> pl.DataFrame:
        """Simulation ground truth per account (the ``sim_accounts`` table)."""
        strategy = np.array([None, *STRATEGIES], dtype=object)[self.strategy + 1]
        return pl.DataFrame(
            {
                "user_id": np.arange(self.n_users, dtype=np.int64),
                "role": pl.Series(np.array(ROLES)[self.role]),
                "strategy": pl.Series(strategy.tolist(), dtype=pl.String),
                "activity": self.activity.astype(np.float64),
                "author_quality": self.author_quality.astype(np.float64),
                "main_topic": self.main_topic.astype(np.int32),
                "third_party_client": self.third_party_client,
                **{f"propensity_{a}": self.propensity[:, j].astype(np.float64) for j, a in enumerate(ACTIONS)},
            }
        )

    def follows_frame(self) -> pl.DataFrame:
        return follows_frame(self.config, self.f_src, self.f_dst, self.f_created_us, self.f_close, self.f_muted)

    def posts_frame(self) -> pl.DataFrame:
        fmt = np.array(FORMATS)[self.p_format]
        cols = {
            "post_id": np.arange(self.n_posts, dtype=np.int64),
            "author_id": self.p_author.astype(np.int64),
            "created_at": timestamps(self.config.start, self.p_created_us),
            "format": pl.Series(fmt.astype(str)),
            "duration_s": pl.Series(self.p_duration, dtype=pl.Float64, nan_to_null=True),
            "topic": self.p_topic.astype(np.int32),
            "audio_id": pl.Series(np.where(self.p_audio >= 0, self.p_audio, 0)).cast(pl.Int64),
            "has_location": self.p_has_location,
            "is_reshare": self.p_is_reshare,
        }
        df = pl.DataFrame(cols).with_columns(
            pl.when(pl.Series(self.p_audio >= 0)).then(pl.col("audio_id")).otherwise(None).alias("audio_id")
        )
        return df.with_columns(
            pl.Series(name, self.p_flags[:, i]) for i, name in enumerate(CONTENT_FLAGS)
        )

    def sim_posts_frame(self) -> pl.DataFrame:
        """Simulation ground truth per post (the ``sim_posts`` table)."""
        return pl.DataFrame(
            {
                "post_id": np.arange(self.n_posts, dtype=np.int64),
                "quality": self.p_quality.astype(np.float64),
            }
        )


def timestamps(start, us: np.ndarray) -> pl.Series:
    """Microseconds since ``start`` as a polars datetime series."""
    base = np.datetime64(start, "us")
    return pl.Series((base + us.astype("timedelta64[us]")).astype("datetime64[us]"))


def follows_frame(config, src, dst, created_us, close, muted) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "follower_id": src.astype(np.int64),
            "followee_id": dst.astype(np.int64),
            "created_at": timestamps(config.start, created_us),
            "close_friend": close.astype(bool),
            "muted": muted.astype(bool),
        }
    )


def build_static_world(config: SynthConfig) -> World:
    """Draw accounts, the follow graph and every post of the simulated window."""
    rng = rng_for(config, 1)
    n = config.n_users
    n_topics = config.n_topics
    day_us = 24 * _US_PER_HOUR

    # --- accounts and roles ------------------------------------------------------------------
    n_bots = max(2, round(config.bot_share * n))
    n_buyers = max(2, round(config.buyer_share * n))
    ring_sizes = rng.integers(config.ring_size[0], config.ring_size[1] + 1, size=config.n_rings)
    role = np.zeros(n, dtype=np.int8)
    strategy = np.full(n, -1, dtype=np.int8)
    order = rng.permutation(n)
    cursor = 0
    bots = order[cursor : cursor + n_bots]
    cursor += n_bots
    role[bots] = 1
    strategy[bots] = np.where(np.arange(n_bots) % 2 == 0, 0, 1)  # burst / drip services
    buyers = order[cursor : cursor + n_buyers]
    cursor += n_buyers
    role[buyers] = 2
    strategy[buyers] = np.where(np.arange(n_buyers) % 2 == 0, 0, 1)
    rings = []
    for size in ring_sizes:
        members = order[cursor : cursor + size]
        cursor += size
        role[members] = 3
        strategy[members] = 2
        rings.append(np.sort(members))
    is_bot = role == 1

    created_us = -(rng.uniform(30, 3000, size=n) * day_us).astype(np.int64)
    created_us[is_bot] = -(rng.uniform(1, 25, size=is_bot.sum()) * day_us).astype(np.int64)

    interest = rng.dirichlet(np.full(n_topics, config.topic_concentration), size=n).astype(np.float32)
    main_topic = interest.argmax(axis=1)
    activity = rng.lognormal(-0.5 * config.activity_sigma**2, config.activity_sigma, size=n)
    activity[is_bot] = 0.0  # bots do not browse; they only act through the services
    engagement_level = rng.normal(0, 1, size=n)
    propensity = (
        config.propensity_shared * engagement_level[:, None]
        + config.propensity_specific * rng.normal(0, 1, size=(n, len(ACTIONS)))
    ).astype(np.float32)
    attractiveness = (rng.pareto(config.attractiveness_pareto, size=n) + 1.0)
    attractiveness[is_bot] *= 0.05
    author_quality = rng.normal(0, 0.5, size=n) + 0.15 * np.log(attractiveness)
    author_quality[role == 2] -= 0.4  # buyers buy because their content does not carry itself
    author_quality[is_bot] -= 1.0
    device = rng.choice(3, size=n, p=[0.45, 0.45, 0.10]).astype(np.int8)
    third_party_client = (role == 0) & (rng.random(n) < config.genuine_third_party_share)

    # --- follow graph ------------------------------------------------------------------------
    out_deg = np.minimum(
        rng.lognormal(np.log(config.follow_median), config.follow_sigma, size=n), n / 3
    ).astype(np.int64)
    out_deg[is_bot] = rng.integers(20, 200, size=is_bot.sum())  # bots follow at random
    src = np.repeat(np.arange(n), out_deg)
    same_topic = rng.random(len(src)) < config.same_topic_follow_share
    same_topic &= ~is_bot[src]
    dst = np.empty(len(src), dtype=np.int64)
    # across topics: anyone, weighted by attractiveness
    global_cdf = np.cumsum(attractiveness) / attractiveness.sum()
    k = (~same_topic).sum()
    dst[~same_topic] = np.minimum(np.searchsorted(global_cdf, rng.random(k)), n - 1)
    # within the follower's main topic: authors of that topic, weighted by attractiveness
    author_topic = main_topic
    by_topic = np.argsort(author_topic, kind="stable")
    topic_start = np.searchsorted(author_topic[by_topic], np.arange(n_topics + 1))
    idx = np.flatnonzero(same_topic)
    want_topic = main_topic[src[idx]]
    for t in range(n_topics):
        sel = idx[want_topic == t]
        members = by_topic[topic_start[t] : topic_start[t + 1]]
        if len(sel) == 0 or len(members) == 0:
            dst[sel] = np.minimum(np.searchsorted(global_cdf, rng.random(len(sel))), n - 1)
            continue
        cdf = np.cumsum(attractiveness[members]) / attractiveness[members].sum()
        dst[sel] = members[np.minimum(np.searchsorted(cdf, rng.random(len(sel))), len(members) - 1)]
    # ring members follow each other
    rs, rd = [], []
    for members in rings:
        a, b = np.meshgrid(members, members)
        rs.append(a.ravel())
        rd.append(b.ravel())
    src = np.concatenate([src, *rs])
    dst = np.concatenate([dst, *rd])
    keep = src != dst
    codes = np.unique(src[keep] * n + dst[keep])
    src, dst = codes // n, codes % n
    m = len(src)
    # a follow happens some time after both accounts exist, before the start
    lo = np.maximum(created_us[src], created_us[dst])
    f_created = lo + 1 + (rng.random(m) * (-lo - 2)).astype(np.int64)
    # closeness: mutual follows and shared interests make closer ties
    mutual = np.isin(dst * n + src, codes)
    shared = (interest[src] * interest[dst]).sum(axis=1) * n_topics
    tie = rng.normal(0, config.tie_noise, size=m) + 0.8 * mutual + 0.3 * np.log1p(shared) - 0.3 * np.log(attractiveness[dst])
    # close friends: each user's top ties, about close_friend_share of their follows
    close = np.zeros(m, dtype=bool)
    tie_rank = _rank_within(src, -tie)
    deg = np.bincount(src, minlength=n)[src]
    close = (tie_rank < np.maximum(1, np.round(config.close_friend_share * deg))) & mutual & ~is_bot[src]
    muted = (rng.random(m) < config.mute_share) & ~close & ~is_bot[src]

    # --- posts -------------------------------------------------------------------------------
    span_h = (config.prehistory_days + config.days) * 24
    post_rate = rng.lognormal(np.log(config.posts_per_day), config.posting_sigma, size=n)
    post_rate *= np.clip(attractiveness, 1, 10) ** 0.3  # bigger creators post more
    post_rate[role == 2] = np.maximum(post_rate[role == 2], 0.5)
    post_rate[role == 3] = np.maximum(post_rate[role == 3], 0.4)
    post_rate[is_bot] = 0.02
    story_rate = rng.lognormal(np.log(config.stories_per_day), config.posting_sigma, size=n)
    story_rate[is_bot] = 0.0
    total_days = span_h / 24
    n_feed_posts = rng.poisson(post_rate * total_days)
    n_stories = rng.poisson(story_rate * total_days)
    p_author = np.concatenate([np.repeat(np.arange(n), n_feed_posts), np.repeat(np.arange(n), n_stories)])
    is_story = np.concatenate([np.zeros(n_feed_posts.sum(), bool), np.ones(n_stories.sum(), bool)])
    n_posts = len(p_author)
    # Posting times follow the same daily rhythm as viewing.
    hours = rng.choice(int(span_h), size=n_posts, p=_hour_weights(int(span_h)))
    p_created = (
        (hours - config.prehistory_days * 24) * _US_PER_HOUR + rng.integers(0, _US_PER_HOUR, size=n_posts)
    ).astype(np.int64)
    p_created = np.maximum(p_created, created_us[p_author] + 1)
    fmt_names = list(config.format_mix)
    fmt_p = np.array([config.format_mix[f] for f in fmt_names])
    p_format = np.array([FORMATS.index(f) for f in fmt_names], dtype=np.int8)[
        rng.choice(len(fmt_names), size=n_posts, p=fmt_p / fmt_p.sum())
    ]
    p_format[is_story] = FORMATS.index("story")
    fmt = np.array(FORMATS)[p_format]
    duration = np.full(n_posts, np.nan)
    v = fmt == "video"
    duration[v] = np.clip(rng.lognormal(np.log(45), 0.8, size=v.sum()), 3, 600)
    r = fmt == "reel"
    duration[r] = np.clip(rng.lognormal(np.log(18), 0.6, size=r.sum()), 3, 90)
    s = fmt == "story"
    story_video = rng.random(n_posts) < 0.4
    duration[s] = np.where(story_video[s], np.clip(rng.lognormal(np.log(10), 0.4, size=s.sum()), 2, 15), 5.0)
    # a post's topic: usually the author's main topic
    own = rng.random(n_posts) < 0.75
    p_topic = np.where(own, main_topic[p_author], rng.integers(0, n_topics, size=n_posts)).astype(np.int32)
    n_audio = max(20, int(config.n_audio_per_user * n))
    audio_popularity = rng.zipf(1.6, size=n_audio).astype(np.float64)
    audio_cdf = np.cumsum(audio_popularity) / audio_popularity.sum()
    has_audio = r & (rng.random(n_posts) < 0.95) | v & (rng.random(n_posts) < 0.3) | s & (rng.random(n_posts) < 0.2)
    p_audio = np.where(
        has_audio, np.minimum(np.searchsorted(audio_cdf, rng.random(n_posts)), n_audio - 1), -1
    ).astype(np.int64)
    p_has_location = rng.random(n_posts) < np.where(fmt == "photo", 0.2, 0.1)
    p_is_reshare = s & (rng.random(n_posts) < config.reshare_story_share)
    flags = np.zeros((n_posts, len(CONTENT_FLAGS)), dtype=bool)
    video_like = np.isin(fmt, ["video", "reel"]) | (s & story_video)
    for i, flag in enumerate(CONTENT_FLAGS):
        rate = np.full(n_posts, config.flag_rates[flag])
        if flag == "misinformation":
            offenders = rng.random(n) < config.misinfo_offender_share
            rate = np.where(offenders[p_author], config.misinfo_offender_rate, rate)
        elif flag == "political":
            rate = np.where(p_topic == 0, 0.5, rate * 0.5)  # topic 0 is news and politics
        elif flag in ("watermarked", "has_borders"):
            rate = np.where(fmt == "reel", rate * 2, rate * 0.25)
        elif flag == "muted_audio":
            rate = np.where(video_like, rate, 0.0)
        flags[:, i] = rng.random(n_posts) < rate
    p_quality = author_quality[p_author] + rng.normal(0, config.post_quality_noise, size=n_posts)
    # quality flags are signs of low effort
    qi = [CONTENT_FLAGS.index(f) for f in ("low_resolution", "watermarked", "has_borders", "mostly_text")]
    p_quality -= 0.3 * flags[:, qi].sum(axis=1)

    order = np.argsort(p_created, kind="stable")
    return World(
        config=config,
        role=role,
        strategy=strategy,
        created_us=created_us,
        interest=interest,
        main_topic=main_topic,
        activity=activity,
        propensity=propensity,
        author_quality=author_quality,
        attractiveness=attractiveness,
        device=device,
        third_party_client=third_party_client,
        rings=rings,
        f_src=src,
        f_dst=dst,
        f_created_us=f_created,
        f_tie=tie + CLOSE_FRIEND_TIE * close,
        f_close=close,
        f_muted=muted,
        p_author=p_author[order],
        p_created_us=p_created[order],
        p_format=p_format[order],
        p_duration=duration[order],
        p_topic=p_topic[order],
        p_audio=p_audio[order],
        p_has_location=p_has_location[order],
        p_is_reshare=p_is_reshare[order],
        p_flags=flags[order],
        p_quality=p_quality[order],
        audio_popularity=audio_popularity,
    )


def _rank_within(group: np.ndarray, value: np.ndarray) -> np.ndarray:
    """0-based rank of each value within its group (ascending), for a group-sorted input."""
    order = np.lexsort((value, group))
    ranks = np.empty(len(group), dtype=np.int64)
    g = group[order]
    start = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
    counts = np.diff(np.r_[start, len(g)])
    ranks[order] = np.arange(len(g)) - np.repeat(start, counts)
    return ranks


def hour_of_day_weights() -> np.ndarray:
    """Relative activity per hour of the day: quiet at night, peaking in the evening."""
    h = np.arange(24)
    w = 1.0 + 0.8 * np.cos((h - 20) / 24 * 2 * np.pi) + 0.3 * np.cos((h - 12) / 12 * 2 * np.pi)
    w = np.clip(w, 0.15, None)
    return w / w.mean()


def _hour_weights(n_hours: int) -> np.ndarray:
    w = np.tile(hour_of_day_weights(), n_hours // 24 + 1)[:n_hours]
    return w / w.sum()

