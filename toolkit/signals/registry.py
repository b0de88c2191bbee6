"""Every signal feedlab computes, with the family the seeds put it in.

The seeds group ranking signals into four families: information about the post, about the person
who posted (author), the viewer's own activity, and the viewer's history with the author
(viewer_author). A fifth, context, holds where the item is shown: its position, which changes
how likely anyone is to even look at it (at scoring time, the slot being filled; 0 by default,
so predictions read "if shown on top"). Each feature is registered here once with its family and a one-line meaning,
so charts and explanations can group by family and the docs cannot drift from the code.

Example
-------
>>> from toolkit.signals.registry import FEATURES, family_of
>>> family_of("post_likes_1h"), family_of("va_close_friend")
('post', 'viewer_author')
>>> sorted({f.family for f in FEATURES.values()})
['author', 'context', 'post', 'viewer', 'viewer_author']
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.store.schema import ACTIONS, CONTENT_FLAGS, DEVICES, FORMATS

FAMILIES: tuple[str, ...] = ("post", "author", "viewer", "viewer_author", "context")
#: Windows of popularity counts (name, seconds).
POPULARITY_WINDOWS: tuple[tuple[str, int], ...] = (("1h", 3600), ("24h", 86_400), ("7d", 7 * 86_400))
POPULARITY_ACTIONS: tuple[str, ...] = ("like", "comment", "share", "save")
#: Pseudo-count that shrinks a rate towards 0 when it rests on few impressions.
RATE_SMOOTHING = 5.0
#: Prior information (1 / variance, logit scale) of a viewer's engagement level: a level read from
#: few labels stays near 0, an average viewer (the simulator spreads levels by about +-0.45).
ENGAGEMENT_PRIOR_INFORMATION = 5.0
#: Labels of an action on a surface, on the days before, needed to expect its rate there.
ENGAGEMENT_MIN_OBSERVATIONS = 20
#: Pseudo-impressions of a topic at the viewer's overall rate: a topic lift on a handful of
#: impressions stays near 1 instead of swinging to 0 or 5.
TOPIC_LIFT_PSEUDOCOUNT = 10.0


@dataclass(frozen=True)
class Feature:
    """One signal: its column name, signal family and meaning."""

    name: str
    family: str
    doc: str


def _features() -> dict[str, Feature]:
    out: list[Feature] = []

    def add(name: str, family: str, doc: str) -> None:
        out.append(Feature(name, family, doc))

    # --- post ----------------------------------------------------------------------------------
    add("post_age_h", "post", "hours since the post was created")
    for fmt in FORMATS:
        add(f"post_format_{fmt}", "post", f"the post is a {fmt}")
    add("post_duration_s", "post", "length of a video, reel or story in seconds (null for photos)")
    add("post_has_location", "post", "a location is attached")
    add("post_is_reshare", "post", "a story resharing a feed post")
    add("post_topic", "post", "topic id of the post")
    add("post_has_audio", "post", "the post carries an audio track")
    for flag in CONTENT_FLAGS:
        add(f"post_flag_{flag}", "post", f"the post is labelled {flag.replace('_', ' ')} (a content classifier or fact-check)")
    for action in POPULARITY_ACTIONS:
        for window, _ in POPULARITY_WINDOWS:
            add(f"post_{action}s_{window}", "post", f"{action}s in engagements over the last {window}")
        add(f"post_{action}s_total", "post", f"{action}s in engagements since posting")
    add("post_likes_per_hour", "post", "like velocity: likes since posting per hour of age")
    add("post_impressions", "post", "times the post was shown (logged impressions) before")
    add("post_likes_per_impression", "post", "engagement likes per logged impression")
    for action in ACTIONS:
        add(f"post_rate_{action}", "post", f"share of earlier impressions of the post with {action} (smoothed)")

    # --- author --------------------------------------------------------------------------------
    add("author_followers", "author", "accounts following the author")
    add("author_interactions_28d", "author", "likes, comments, shares and saves received over the last 28 days")
    add("author_posts_7d", "author", "posts created over the last 7 days (posting rate)")
    add("author_misinfo_posts", "author", "earlier posts labelled misinformation")
    add("author_account_age_d", "author", "days since the author's account was created")
    add("author_impressions", "author", "times the author's posts were shown (logged impressions) before")
    for action in ACTIONS:
        add(f"author_rate_{action}", "author", f"share of earlier impressions of the author's posts with {action} (smoothed)")

    # --- viewer --------------------------------------------------------------------------------
    add("viewer_impressions_24h", "viewer", "impressions the viewer had over the last 24 h")
    add("viewer_impressions_7d", "viewer", "impressions the viewer had over the last 7 days")
    add("viewer_impressions_total", "viewer", "impressions the viewer had before")
    for action in ACTIONS:
        add(f"viewer_rate_{action}", "viewer", f"share of the viewer's earlier impressions with {action} (smoothed)")
    add(
        "viewer_engagement_level", "viewer",
        "how much more the viewer acts than expected: their earlier labels of every action minus each action's rate "
        "on that surface over the days before, one logistic step from 0 (shrunk towards 0 on few labels)",
    )  # fmt: skip
    for device in DEVICES:
        add(f"viewer_device_{device}", "viewer", f"the impression is on {device}")
    add("viewer_account_age_d", "viewer", "days since the viewer's account was created")

    # --- viewer x author -------------------------------------------------------------------------
    add("va_follows", "viewer_author", "the viewer follows the author")
    add("va_followed_back", "viewer_author", "the author follows the viewer")
    add("va_close_friend", "viewer_author", "the author is on the viewer's Close Friends")
    add("va_muted", "viewer_author", "the viewer muted the author")
    add("va_impressions", "viewer_author", "times the viewer was shown the author's posts")
    add("va_likes", "viewer_author", "the viewer's likes on the author's posts")
    add("va_comments", "viewer_author", "the viewer's comments on the author's posts")
    add("va_profile_taps", "viewer_author", "the viewer's taps on the author's profile")
    add("va_mutual_comments", "viewer_author", "the author's comments on the viewer's posts")
    add("va_interactions", "viewer_author", "the viewer's earlier impressions of the author's posts with a like, comment, share or profile tap")
    add("va_mutual_interactions", "viewer_author", "the author's earlier impressions of the viewer's posts with a like, comment, share or profile tap")
    add("va_days_since_interaction", "viewer_author", "days since the viewer last liked, commented, shared or saved the author's posts (null: never)")
    add("va_topic_like_rate", "viewer_author", "the viewer's like rate on earlier impressions of the post's topic (smoothed)")
    add("va_topic_dwell_rate", "viewer_author", "the viewer's dwell rate on earlier impressions of the post's topic (smoothed)")
    add("va_topic_engagement_rate", "viewer_author", "share of the viewer's earlier impressions of the post's topic with a like, comment, share or save (smoothed)")
    add("va_topic_like_lift", "viewer_author", "the viewer's like rate on the post's topic over their like rate overall")
    add("va_topic_share", "viewer_author", "share of the viewer's earlier impressions that were of the post's topic")
    add("va_topic_recommended_share", "viewer_author", "share of the viewer's earlier Explore and Reels impressions that were of the post's topic (what recommendations have learned of their taste)")
    add("va_topic_dwell_share", "viewer_author", "share of the viewer's earlier dwells that were on the post's topic")
    add("va_topic_engaged_share", "viewer_author", "share of the viewer's earlier liked, commented, shared or saved impressions that were of the post's topic")
    add("va_topic_dwell_lift", "viewer_author", f"the viewer's dwell rate on the post's topic over their dwell rate on every topic, shrunk towards 1 by {TOPIC_LIFT_PSEUDOCOUNT:g} pseudo-impressions")
    add("va_topic_engagement_lift", "viewer_author", f"the viewer's like/comment/share/save rate on the post's topic over their rate on every topic, shrunk towards 1 by {TOPIC_LIFT_PSEUDOCOUNT:g} pseudo-impressions")

    # --- context -------------------------------------------------------------------------------
    add("position", "context", "0-based slot the item is shown in (0 when scoring a candidate for the top)")
    return {f.name: f for f in out}


FEATURES: dict[str, Feature] = _features()


def family_of(name: str) -> str:
    """The signal family of a feature column."""
    return FEATURES[name].family


def feature_names(families: tuple[str, ...] = FAMILIES) -> list[str]:
    """Feature columns in registry order, optionally of some families only."""
    return [f.name for f in FEATURES.values() if f.family in families]


_FAMILY_TITLES = {
    "post": "Post (information about the post)",
    "author": "Author (information about the person who posted)",
    "viewer": "Viewer (your activity)",
    "viewer_author": "Viewer x author (your history with the poster)",
    "context": "Context (where the item is shown)",
}


def features_markdown() -> str:
    """The feature tables of ``docs/signals.md``, one per family, rendered from the registry."""
    lines = []
    for family in FAMILIES:
        lines += ["", f"### {_FAMILY_TITLES[family]}", "", "| feature | meaning |", "| --- | --- |"]
        lines += [f"| `{f.name}` | {f.doc} |" for f in FEATURES.values() if f.family == family]
    return "\n".join(lines).strip() + "\n"
