"""A plain pandas implementation of every feature of :mod:`toolkit.signals.features`, as a baseline.

The benchmark of the feature pipeline reports feature rows/s and the ratio against this module,
run in the same process on the same requests. It computes exactly the same features (same names,
definitions and point-in-time semantics; ``tests/test_pandas_baseline.py`` checks every column)
the way one would in idiomatic pandas, and never calls polars (only :func:`main`, which times
the pipeline, does; importing the registry loads :mod:`toolkit.signals`, which imports it):

- the event aggregates come from DuckDB with the very same SQL as the polars pipeline
  (``EVENT_QUERIES`` and the entity lookups of :mod:`toolkit.signals.features`), fetched with
  ``.df()`` instead of ``.pl()``, so the DuckDB work is the same;
- running totals per key are ``groupby(...).cumsum()`` over the events sorted by time;
- a total "strictly before t" is ``pandas.merge_asof(..., direction="backward",
  allow_exact_matches=False)``, and a window ``[t - w, t)`` is the difference of two totals;
- the families run one after the other (pandas has no parallel branches), each on its own
  copy of the request frame, and are put side by side at the end.

A by-key that is null (a post without a topic) matches no event, as in a polars join: pandas'
``merge_asof`` would match null to null, so events with a null key are dropped first.

Run as a script it times both implementations in one process on the impressions of a store
(alternating, ``--repeat`` times each) and prints JSON: seconds, feature rows/s and the ratio.
``--memory`` adds the peak resident memory of each implementation run alone in a child process
(the in-process figure, sampled every 10 ms, is blurred by what each allocator keeps)::

    python benchmarks/pandas_features.py /tmp/w5k.duckdb                       # every impression
    python benchmarks/pandas_features.py /tmp/w5k.duckdb --surface feed --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

if __name__ == "__main__":  # run from a checkout without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit.errors import FeedlabError
from toolkit.signals.registry import (
    ENGAGEMENT_PRIOR_INFORMATION,
    FEATURES,
    POPULARITY_ACTIONS,
    POPULARITY_WINDOWS,
    RATE_SMOOTHING,
    TOPIC_LIFT_PSEUDOCOUNT,
    feature_names,
)
from toolkit.signals.features import (
    CROSS_BRANCH,
    EVENT_QUERIES,
    FIXED_POINT,
    FOLLOW_PAIRS_SQL,
    LIFT_FLOOR,
    POSTS_SQL,
    REQUESTS_VIEW,
    VIEWERS_SQL,
)
from toolkit.store.schema import ACTIONS, CONTENT_FLAGS, DEVICES, FORMATS

_DAY_S = 86_400


_US = pd.Timedelta(microseconds=1)


def compute_features_pandas(con: duckdb.DuckDBPyConnection, requests: pd.DataFrame) -> pd.DataFrame:
    """Every registered feature for each request (user_id, post_id, ts, device, position), in input order.

    The pandas twin of :func:`toolkit.signals.compute_features`: the columns of ``requests``
    (with its index; ``position`` moves into the features) followed by the columns of
    :func:`~toolkit.signals.feature_names`, counts as float64 and flags as bool. ``position`` may
    be left out (then 0: the top slot). Unknown posts, and requests for a post before it was
    created, are a :class:`~toolkit.errors.FeedlabError`.
    """
    missing = {"user_id", "post_id", "ts", "device"} - set(requests.columns)
    if missing:
        raise FeedlabError(f"requests need columns user_id, post_id, ts, device; missing {sorted(missing)}")
    names = feature_names()
    if len(requests) == 0:
        return requests.assign(**{n: pd.Series(dtype="float64", index=requests.index) for n in names})
    if "position" not in requests.columns:
        requests = requests.assign(position=np.int32(0))
    req = pd.DataFrame(
        {
            "_row": np.arange(len(requests), dtype=np.int64),
            "user_id": requests["user_id"].to_numpy(),
            "post_id": requests["post_id"].to_numpy(),
            "ts": requests["ts"].astype("datetime64[us]").to_numpy(),
            "device": requests["device"].to_numpy(),
            "position": requests["position"].to_numpy(),
        }
    )
    con.register(REQUESTS_VIEW, req[["_row", "user_id", "post_id", "ts"]])
    try:
        posts = _posts_of_requests(con, req)
        min_ts, max_ts = req["ts"].min(), req["ts"].max()
        base = req.merge(posts, on="post_id", how="left").sort_values(["ts", "_row"])
        frames = [
            family(con, base, min_ts, max_ts)[["_row", *_BRANCH_OUTPUTS[family.__name__]]]
            for family in (_post_features, _author_features, _viewer_features, _viewer_author_features, _context_features)
        ]
    finally:
        con.unregister(REQUESTS_VIEW)
    out = pd.concat(
        [frames[0].reset_index(drop=True), *(f.drop(columns="_row").reset_index(drop=True) for f in frames[1:])],
        axis=1,
    )
    out["va_topic_share"] = out["_topic_shown"] / (out["viewer_impressions_total"] + 1)
    out["va_topic_like_lift"] = out["va_topic_like_rate"] / (out["viewer_rate_like"] + LIFT_FLOOR)
    out = out.sort_values("_row")[names]
    # counts come out of DuckDB as integers; one float dtype keeps model matrices simple
    for name in names:
        if pd.api.types.is_integer_dtype(out[name].dtype):
            out[name] = out[name].astype("float64")
    out.index = requests.index
    # the request's position becomes the (float) context feature of the same name
    return pd.concat([requests.drop(columns="position"), out], axis=1)


# --------------------------------------------------------------------------------------------
# building blocks


def _posts_of_requests(con, req: pd.DataFrame) -> pd.DataFrame:
    posts = con.sql(POSTS_SQL).df()
    unknown = req.loc[~req["post_id"].isin(posts["post_id"]), "post_id"]
    if len(unknown):
        ids = sorted(unknown.unique().tolist())[:5]
        raise FeedlabError(f"{unknown.nunique()} requested post(s) are not in the store, e.g. {ids}")
    both = req[["post_id", "ts"]].merge(posts[["post_id", "post_created_at"]], on="post_id")
    early = both[both["ts"] < both["post_created_at"]]
    if len(early):
        row = early.iloc[0]
        raise FeedlabError(
            f"{len(early)} request(s) for a post before it was created, e.g. post {row['post_id']} "
            f"created {row['post_created_at']} requested at {row['ts']}"
        )
    return posts


def _events(con, name: str, requests_from, requests_to) -> pd.DataFrame:
    """The events of ``EVENT_QUERIES[name]`` that requests in a time range can see, as running totals per key."""
    query = EVENT_QUERIES[name]
    sql, params = query.fetch(requests_from, requests_to)
    df = con.sql(sql, params=params).df()
    return _running_totals(df, by=list(query.by), values=list(query.values))


def _running_totals(df: pd.DataFrame, *, by: list[str], values: list[str]) -> pd.DataFrame:
    # a null key matches nothing in the polars as-of join; merge_asof would match null to null
    df = df.dropna(subset=by).sort_values("ts", kind="stable")
    df[values] = df.groupby(by, sort=False)[values].cumsum()
    df["_event_ts"] = df["ts"]
    return df


def _totals_before(
    left: pd.DataFrame,
    events: pd.DataFrame,
    *,
    left_by: Sequence[str],
    right_by: Sequence[str],
    values: Sequence[str],
    shift_s: int = 0,
    suffix: str,
    keep_last_ts: bool = False,
) -> pd.DataFrame:
    """Join, to each request at t, the running totals of events strictly before ``t - shift_s``."""
    key = f"_at{suffix}"
    right = events[[*right_by, "ts", *values, *(["_event_ts"] if keep_last_ts else [])]].rename(
        columns={"ts": key, **{v: f"{v}{suffix}" for v in values}}
    )
    if list(right_by) != list(left_by):  # the key columns get the left's names (and leave no copy)
        right = right.rename(columns=dict(zip(right_by, left_by)))
    for lb in left_by:  # merge_asof wants the by-keys of one dtype (a topic is int32 or nullable)
        if right[lb].dtype != left[lb].dtype:
            right[lb] = right[lb].astype(left[lb].dtype)
    left = left.assign(**{key: left["ts"] - pd.Timedelta(seconds=shift_s)})
    joined = pd.merge_asof(
        left,
        right,
        on=key,
        by=list(left_by),
        direction="backward",
        allow_exact_matches=False,  # strictly before: an event at t is not known at t
    )
    joined = joined.drop(columns=key)
    for v in values:
        joined[f"{v}{suffix}"] = joined[f"{v}{suffix}"].fillna(0).astype("int64")
    return joined


def _window_counts(lf, events, *, left_by, right_by, values, windows, prefix):
    """Counts of events in ``[t - w, t)`` for each window, plus totals before t (``_total``)."""
    lf = _totals_before(lf, events, left_by=left_by, right_by=right_by, values=values, suffix="_total")
    for name, seconds in windows:
        lf = _totals_before(lf, events, left_by=left_by, right_by=right_by, values=values, shift_s=seconds, suffix=f"_before_{name}")
        for v in values:
            lf[f"{prefix}{v}_{name}"] = lf[f"{v}_total"] - lf[f"{v}_before_{name}"]
        lf = lf.drop(columns=[f"{v}_before_{name}" for v in values])
    return lf


def _rate(df: pd.DataFrame, pos: str, obs: str) -> pd.Series:
    return df[pos] / (df[obs] + RATE_SMOOTHING)


def _hours(df: pd.DataFrame, a: str, b: str) -> pd.Series:
    # whole microseconds / 3.6e9, the same float operations as polars' total_microseconds() / 3.6e9
    return (df[a] - df[b]) / _US / 3.6e9


# --------------------------------------------------------------------------------------------
# the four families


def _post_features(con, df: pd.DataFrame, min_ts, max_ts) -> pd.DataFrame:
    df = df.copy()
    df["post_age_h"] = _hours(df, "ts", "post_created_at")
    for fmt in FORMATS:
        df[f"post_format_{fmt}"] = df["format"] == fmt
    df["post_duration_s"] = df["duration_s"]
    df["post_has_location"] = df["has_location"]
    df["post_is_reshare"] = df["is_reshare"]
    df["post_topic"] = df["topic"]
    df["post_has_audio"] = df["audio_id"].notna()
    for flag in CONTENT_FLAGS:
        df[f"post_flag_{flag}"] = df[flag]
    values = [f"{a}s" for a in POPULARITY_ACTIONS]
    eng = _events(con, "post_engagements", min_ts, max_ts)
    df = _window_counts(df, eng, left_by=["post_id"], right_by=["post_id"], values=values, windows=POPULARITY_WINDOWS, prefix="post_")
    df = df.rename(columns={f"{v}_total": f"post_{v}_total" for v in values})
    label_values = ["shown", *(f"pos_{a}" for a in ACTIONS), *(f"obs_{a}" for a in ACTIONS)]
    imp = _events(con, "post_impressions", min_ts, max_ts)
    df = _totals_before(df, imp, left_by=["post_id"], right_by=["post_id"], values=label_values, suffix="_p")
    df["post_likes_per_hour"] = df["post_likes_total"] / df["post_age_h"].clip(lower=1.0)
    df["post_impressions"] = df["shown_p"].astype("float64")
    df["post_likes_per_impression"] = df["post_likes_total"] / (df["shown_p"] + 1)
    for a in ACTIONS:
        df[f"post_rate_{a}"] = _rate(df, f"pos_{a}_p", f"obs_{a}_p")
    return df


def _author_features(con, df: pd.DataFrame, min_ts, max_ts) -> pd.DataFrame:
    followers = _events(con, "author_followers", min_ts, max_ts)
    df = _totals_before(df, followers, left_by=["author_id"], right_by=["author_id"], values=["followers"], suffix="_a")
    received = _events(con, "author_engagements", min_ts, max_ts)
    df = _window_counts(df, received, left_by=["author_id"], right_by=["author_id"], values=["received"], windows=[("28d", 28 * _DAY_S)], prefix="author_")
    posted = _events(con, "author_posts", min_ts, max_ts)
    df = _window_counts(df, posted, left_by=["author_id"], right_by=["author_id"], values=["posted", "misinfo"], windows=[("7d", 7 * _DAY_S)], prefix="author_")
    rate_values = ["shown", *(f"pos_{a}" for a in ACTIONS), *(f"obs_{a}" for a in ACTIONS)]
    shown = _events(con, "author_impressions", min_ts, max_ts)
    df = _totals_before(df, shown, left_by=["author_id"], right_by=["author_id"], values=rate_values, suffix="_ar")
    df["author_impressions"] = df["shown_ar"].astype("float64")
    for a in ACTIONS:
        df[f"author_rate_{a}"] = _rate(df, f"pos_{a}_ar", f"obs_{a}_ar")
    df["author_followers"] = df["followers_a"].astype("float64")
    df["author_interactions_28d"] = df["author_received_28d"].astype("float64")
    df["author_posts_7d"] = df["author_posted_7d"].astype("float64")
    df["author_misinfo_posts"] = df["misinfo_total"].astype("float64")
    df["author_account_age_d"] = _hours(df, "ts", "author_created_at") / 24
    return _unknown_where_null(df, "author_id", _BRANCH_OUTPUTS["_author_features"])


def _unknown_where_null(df: pd.DataFrame, key: str, names: list[str]) -> pd.DataFrame:
    """Features of a post whose author (or topic) is not known are missing, as in the polars path."""
    unknown = df[key].isna()
    if unknown.any():
        for name in names:
            df[name] = df[name].where(~unknown)
    return df


def _viewer_features(con, df: pd.DataFrame, min_ts, max_ts) -> pd.DataFrame:
    values = list(EVENT_QUERIES["viewer_impressions"].values)  # the rate counts and the engagement terms
    imp = _events(con, "viewer_impressions", min_ts, max_ts)
    df = _totals_before(df, imp, left_by=["user_id"], right_by=["user_id"], values=values, suffix="_v")
    recent = _events(con, "viewer_recent", min_ts, max_ts)
    df = _totals_before(df, recent, left_by=["user_id"], right_by=["user_id"], values=["seen"], suffix="_v")
    for name, seconds in (("24h", _DAY_S), ("7d", 7 * _DAY_S)):
        df = _totals_before(df, recent, left_by=["user_id"], right_by=["user_id"], values=["seen"], shift_s=seconds, suffix=f"_v{name}")
        df[f"viewer_impressions_{name}"] = (df["seen_v"] - df[f"seen_v{name}"]).astype("float64")
    viewers = con.sql(VIEWERS_SQL).df()
    df = df.merge(viewers, on="user_id", how="left")
    df["viewer_impressions_total"] = df["shown_v"].astype("float64")
    df["viewer_engagement_level"] = (df["engagement_residual_v"] / FIXED_POINT) / (
        df["engagement_information_v"] / FIXED_POINT + ENGAGEMENT_PRIOR_INFORMATION
    )
    for a in ACTIONS:
        df[f"viewer_rate_{a}"] = _rate(df, f"pos_{a}_v", f"obs_{a}_v")
    for d in DEVICES:
        df[f"viewer_device_{d}"] = df["device"].eq(d).fillna(False).astype(bool)
    df["viewer_account_age_d"] = _hours(df, "ts", "viewer_created_at") / 24
    return df


def _viewer_author_features(con, df: pd.DataFrame, min_ts, max_ts) -> pd.DataFrame:
    follows = con.sql(FOLLOW_PAIRS_SQL).df()
    forward = follows.rename(columns={"follower_id": "user_id", "followee_id": "author_id"})
    backward = follows[["followee_id", "follower_id", "follow_created_at"]].rename(
        columns={"followee_id": "user_id", "follower_id": "author_id", "follow_created_at": "back_created_at"}
    )
    df = df.merge(forward, on=["user_id", "author_id"], how="left")
    df = df.merge(backward, on=["user_id", "author_id"], how="left")
    follows_now = (df["follow_created_at"] < df["ts"]).fillna(False).astype(bool)  # NaT: no follow
    df["va_follows"] = follows_now
    df["va_followed_back"] = (df["back_created_at"] < df["ts"]).fillna(False).astype(bool)
    df["va_close_friend"] = follows_now & df["close_friend"].eq(True).fillna(False).astype(bool)
    df["va_muted"] = follows_now & df["muted"].eq(True).fillna(False).astype(bool)
    shown = _events(con, "va_impressions", min_ts, max_ts)
    df = _totals_before(df, shown, left_by=["user_id", "author_id"], right_by=["user_id", "author_id"], values=["shown", "taps", "interacted"], suffix="_va")
    engaged = _events(con, "va_engagements", min_ts, max_ts)
    df = _totals_before(
        df, engaged, left_by=["user_id", "author_id"], right_by=["user_id", "author_id"],
        values=["likes", "comments", "interactions"], suffix="_va", keep_last_ts=True,
    )  # fmt: skip
    mutual = _events(con, "va_mutual_comments", min_ts, max_ts)
    df = _totals_before(df, mutual, left_by=["author_id", "user_id"], right_by=["commenter", "post_author"], values=["mutual"], suffix="_va")
    interacted_back = _events(con, "va_mutual_interactions", min_ts, max_ts)
    df = _totals_before(
        df, interacted_back, left_by=["author_id", "user_id"], right_by=["interactor", "post_author"],
        values=["mutual_interactions"], suffix="_va",
    )  # fmt: skip
    query = EVENT_QUERIES["viewer_topics"]
    sql, params = query.fetch(min_ts, max_ts)
    topic_events = con.sql(sql, params=params).df()
    values = list(query.values)
    for by, suffix in ((["user_id", "topic"], "_t"), (["user_id"], "_u")):  # per topic, and over all topics
        totals = _running_totals(topic_events.copy(), by=by, values=values)
        df = _totals_before(df, totals, left_by=by, right_by=by, values=values, suffix=suffix)
    df["va_impressions"] = df["shown_va"].astype("float64")
    df["va_likes"] = df["likes_va"].astype("float64")
    df["va_comments"] = df["comments_va"].astype("float64")
    df["va_profile_taps"] = df["taps_va"].astype("float64")
    df["va_mutual_comments"] = df["mutual_va"].astype("float64")
    df["va_interactions"] = df["interacted_va"].astype("float64")
    df["va_mutual_interactions"] = df["mutual_interactions_va"].astype("float64")
    df["va_days_since_interaction"] = _hours(df, "ts", "_event_ts") / 24
    df["va_topic_like_rate"] = _rate(df, "topic_likes_t", "topic_like_obs_t")
    df["va_topic_dwell_rate"] = _rate(df, "topic_dwells_t", "topic_dwell_obs_t")
    df["va_topic_engagement_rate"] = _rate(df, "topic_engaged_t", "topic_shown_t")
    df["_topic_shown"] = df["topic_shown_t"]  # va_topic_share needs the viewer's total
    for v, name in (("recommended", "recommended"), ("dwells", "dwell"), ("engaged", "engaged")):
        df[f"va_topic_{name}_share"] = df[f"topic_{v}_t"] / (df[f"topic_{v}_u"] + 1)
    df["va_topic_dwell_lift"] = _lift(df, "topic_dwells", "topic_dwell_obs")
    df["va_topic_engagement_lift"] = _lift(df, "topic_engaged", "topic_shown")
    outputs = _BRANCH_OUTPUTS["_viewer_author_features"]
    by_topic = [n for n in outputs if n.startswith(("va_topic_", "_topic_"))]
    df = _unknown_where_null(df, "author_id", [n for n in outputs if n not in by_topic])
    return _unknown_where_null(df, "topic", by_topic)


def _lift(df: pd.DataFrame, pos: str, obs: str) -> pd.Series:
    overall = (df[f"{pos}_u"] + 1) / (df[f"{obs}_u"] + 2)
    return (df[f"{pos}_t"] + TOPIC_LIFT_PSEUDOCOUNT * overall) / (df[f"{obs}_t"] + TOPIC_LIFT_PSEUDOCOUNT) / overall


def _context_features(con, df: pd.DataFrame, min_ts, max_ts) -> pd.DataFrame:
    return df.assign(position=df["position"].astype("float64"))


def _family_outputs() -> dict[str, list[str]]:
    out = {
        f"_{family}_features": [f.name for f in FEATURES.values() if f.family == family]
        for family in ("post", "author", "viewer", "context")
    }
    out["_viewer_author_features"] = [
        f.name for f in FEATURES.values() if f.family == "viewer_author" and f.name not in CROSS_BRANCH
    ] + ["_topic_shown"]
    return out


_BRANCH_OUTPUTS = _family_outputs()


# --------------------------------------------------------------------------------------------
# the benchmark


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    """This process's high-water resident memory (VmHWM; unlike ru_maxrss, not inherited over fork/exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def _timed(fn, *args) -> tuple[float, float]:
    """Seconds of ``fn(*args)`` and the most resident memory it added, in MiB (sampled)."""
    start_rss, peak, done = _rss_bytes(), [0], threading.Event()

    def sample():
        while not done.wait(0.01):
            peak[0] = max(peak[0], _rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _rss_bytes())
    del result
    return seconds, (peak[0] - start_rss) / 2**20


def main(argv: list[str] | None = None) -> dict:
    import polars as pl  # the pipeline being measured; the baseline above never uses it

    from toolkit.signals import compute_features
    from toolkit.store import connect

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("db", help="a feedlab store (opened read-only)")
    parser.add_argument("--surface", help="only this surface's impressions (default: all)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each implementation (default 2)")
    parser.add_argument("--memory", action="store_true", help="also peak RSS of each run alone in a child process")
    parser.add_argument("--only", choices=("polars", "pandas"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    con = connect(args.db, read_only=True)
    sql = "select impression_id, user_id, post_id, ts, device, position from impressions"
    params = []
    if args.surface:
        sql += " where surface = ?"
        params.append(args.surface)
    sql += " order by ts, impression_id"
    requests_pl = con.sql(sql, params=params).pl() if args.only != "pandas" else None
    requests_pd = con.sql(sql, params=params).df() if args.only != "polars" else None
    if args.only:  # a child of --memory: one run, then the parent reads this process's peak RSS
        baseline = _rss_bytes()
        fn, reqs = (compute_features, requests_pl) if args.only == "polars" else (compute_features_pandas, requests_pd)
        seconds, _ = _timed(fn, con, reqs)
        print(json.dumps({"seconds": seconds, "rss_before_mib": baseline / 2**20, "peak_rss_mib": _peak_rss_bytes() / 2**20}))
        return {}
    runs: dict[str, list[tuple[float, float]]] = {"polars": [], "pandas": []}
    for _ in range(args.repeat):
        runs["polars"].append(_timed(compute_features, con, requests_pl))
        runs["pandas"].append(_timed(compute_features_pandas, con, requests_pd))
    con.close()
    rows = requests_pl.height
    report = {"db": str(args.db), "surface": args.surface or "all", "rows": rows, "cores": os.cpu_count(),
              "versions": {"pandas": pd.__version__, "polars": pl.__version__, "duckdb": duckdb.__version__}}
    for name, timings in runs.items():
        best = min(s for s, _ in timings)
        report[name] = {"seconds": [round(s, 3) for s, _ in timings], "best_s": round(best, 3),
                        "rows_per_s": round(rows / best), "peak_added_mib": round(max(m for _, m in timings))}
    report["pandas_over_polars"] = round(report["pandas"]["best_s"] / report["polars"]["best_s"], 2)
    if args.memory:
        for name in ("polars", "pandas"):
            child = [sys.executable, __file__, args.db, "--only", name, *(["--surface", args.surface] if args.surface else [])]
            proc = subprocess.run(child, stdout=subprocess.PIPE, text=True, check=True)
            out = json.loads(proc.stdout)
            report[name]["alone_s"] = round(out["seconds"], 3)
            report[name]["alone_peak_rss_mib"] = round(out["peak_rss_mib"])
            report[name]["alone_rss_before_mib"] = round(out["rss_before_mib"])
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
