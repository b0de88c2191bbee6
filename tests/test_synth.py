"""The simulated world: determinism, chunking, ground truth, the seeds' structure, bought engagement."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from toolkit.cli import main
from toolkit.errors import FeedlabError
from toolkit.store import ACTIONS, connect, table_digests
from toolkit.synth import SynthConfig, build_world, simulate_world, write_world

from conftest import SMALL

TINY = SynthConfig(n_users=250, days=2, seed=5)


def _digests(path):
    con = connect(path, read_only=True)
    try:
        return table_digests(con)
    finally:
        con.close()


# --- determinism and chunking ----------------------------------------------------------------


def test_same_seed_gives_identical_tables(tmp_path, small_world_path):
    build_world(tmp_path / "again.duckdb", SMALL, progress=False)
    assert _digests(tmp_path / "again.duckdb") == _digests(small_world_path)


def test_other_seed_gives_other_tables(tmp_path, small_world_path):
    other = SynthConfig(n_users=SMALL.n_users, days=SMALL.days, seed=SMALL.seed + 1)
    build_world(tmp_path / "other.duckdb", other, progress=False)
    a, b = _digests(tmp_path / "other.duckdb"), _digests(small_world_path)
    assert a["impressions"] != b["impressions"] and a["users"] != b["users"]


def test_chunked_path_equals_in_memory_path(tmp_path):
    build_world(tmp_path / "chunked.duckdb", TINY, chunk_days=1, progress=False)
    write_world(tmp_path / "memory.duckdb", simulate_world(TINY), TINY)
    chunked, memory = _digests(tmp_path / "chunked.duckdb"), _digests(tmp_path / "memory.duckdb")
    assert set(chunked) >= {"users", "follows", "posts", "impressions", "engagements", "sim_accounts"}
    assert chunked == memory


# --- the store contract ------------------------------------------------------------------------


def test_world_passes_import_validation_and_round_trips(tmp_path, small_world_path):
    from toolkit.store.io import export_dir, import_dir

    export_dir(small_world_path, tmp_path / "export")
    summary = import_dir(tmp_path / "copy.duckdb", tmp_path / "export", progress=False)
    assert summary["rows_added"]["impressions"] > 10_000
    canonical = ["users", "follows", "posts", "impressions", "engagements"]
    con = connect(tmp_path / "copy.duckdb", read_only=True)
    try:
        assert table_digests(con, canonical) == {k: v for k, v in _digests(small_world_path).items() if k in canonical}
    finally:
        con.close()


def test_existing_file_is_not_overwritten_without_asking(tmp_path):
    path = tmp_path / "w.duckdb"
    path.write_bytes(b"precious")
    with pytest.raises(FeedlabError, match="already exists"):
        build_world(path, TINY, progress=False)
    assert path.read_bytes() == b"precious"


def test_interrupted_build_leaves_no_database(tmp_path, monkeypatch):
    import toolkit.synth.build as build

    real = build.simulate

    def interrupted_after_first_chunk(config, **kwargs):
        for i, chunk in enumerate(real(config, **kwargs)):
            if i == 2:
                raise KeyboardInterrupt
            yield chunk

    monkeypatch.setattr(build, "simulate", interrupted_after_first_chunk)
    with pytest.raises(KeyboardInterrupt):
        build_world(tmp_path / "w.duckdb", TINY, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_config_is_a_clear_error():
    with pytest.raises(FeedlabError, match="n_users must be at least 100"):
        SynthConfig(n_users=10)


def test_cli_synth(tmp_path, capsys):
    path = tmp_path / "cli.duckdb"
    assert main(["synth", "--db", str(path), "--users", "200", "--days", "1", "--seed", "3", "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"]["impressions"] > 0 and path.exists()
    assert main(["synth", "--db", str(path), "--users", "10", "--quiet"]) == 2
    assert "n_users must be at least 100" in capsys.readouterr().err


# --- ground truth ------------------------------------------------------------------------------


def test_label_rates_match_true_probabilities(small_world):
    """Each label is a Bernoulli draw of its p_ column: rates agree within 4 standard errors."""
    checked = 0
    for action in ACTIONS:
        rows = small_world.execute(
            f'select surface, count(*), sum("{action}"::int), sum(p_{action}), sum(p_{action} * (1 - p_{action})) '
            f'from impressions where "{action}" is not null group by surface'
        ).fetchall()
        for surface, n, positives, expected, variance in rows:
            if n < 300:
                continue
            tolerance = 4 * math.sqrt(variance) + 1
            assert abs(positives - expected) <= tolerance, (action, surface, positives, expected)
            checked += 1
    assert checked >= 30


def test_p_column_is_null_exactly_where_the_label_is(small_world):
    for action in ACTIONS:
        [(mismatch,)] = small_world.execute(
            f'select count(*) from impressions where ("{action}" is null) != (p_{action} is null)'
        ).fetchall()
        assert mismatch == 0, action


def test_unobservable_labels_are_null(small_world):
    q = small_world.execute
    [(photo_watch,)] = q(
        "select count(*) from impressions i join posts p using (post_id) "
        "where p.format = 'photo' and i.watch_complete is not null"
    ).fetchall()
    [(survey_elsewhere,)] = q("select count(*) from impressions where surface != 'reels' and entertaining is not null").fetchall()
    [(survey_share,)] = q("select avg((entertaining is not null)::int) from impressions where surface = 'reels'").fetchall()
    [(follow_followed,)] = q(
        "select count(*) from impressions i join posts p using (post_id) join follows f "
        "on f.follower_id = i.user_id and f.followee_id = p.author_id and f.created_at < i.ts "
        "where i.follow is not null"
    ).fetchall()
    assert photo_watch == 0 and survey_elsewhere == 0 and follow_followed == 0
    assert 0.02 < survey_share < 0.1


def test_popularity_is_learnable_from_earlier_engagements(small_world):
    """The truth's popularity term is visible in the store: likes logged before the impression."""
    df = small_world.sql(
        """
        select i.p_like, count(e.post_id) as likes_before
        from impressions i left join engagements e
          on e.post_id = i.post_id and e.action = 'like' and e.ts < i.ts and not e.via_third_party_app
        where i.surface = 'explore'
        group by i.impression_id, i.p_like
        """
    ).pl()
    corr = df.select(pl.corr(pl.col("p_like"), pl.col("likes_before").log1p(), method="spearman")).item()
    assert corr > 0.1


def test_position_carries_bias(small_world):
    rows = small_world.execute(
        'select position < 3 as top, avg(p_like), avg("like"::int) from impressions '
        "where surface = 'feed' and position < 20 group by 1 order by 1"
    ).fetchall()
    (_, p_lower, like_lower), (_, p_top, like_top) = rows
    assert p_top > 1.2 * p_lower and like_top > like_lower


# --- the seeds' structure ----------------------------------------------------------------------


def test_candidates_follow_the_seeds(small_world):
    q = small_world.execute
    [(stories_ok, stories_n)] = q(
        "select sum((p.format = 'story' and i.ts - p.created_at < interval 24 hour)::int), count(*) "
        "from impressions i join posts p using (post_id) where i.surface = 'stories'"
    ).fetchall()
    followed = (
        "select i.surface, avg((f.follower_id is not null)::int) from impressions i join posts p using (post_id) "
        "left join follows f on f.follower_id = i.user_id and f.followee_id = p.author_id and f.created_at < i.ts "
        "group by 1"
    )
    share_followed = dict(q(followed).fetchall())
    assert stories_n > 0 and stories_ok == stories_n
    assert share_followed["feed"] == 1.0 and share_followed["stories"] == 1.0
    assert share_followed["explore"] < 0.05 and share_followed["reels"] < 0.05
    [(bad_formats,)] = q(
        "select count(*) from impressions i join posts p using (post_id) "
        "where (i.surface = 'reels' and p.format != 'reel') or (i.surface = 'explore' and p.format not in ('photo', 'video', 'carousel'))"
    ).fetchall()
    assert bad_formats == 0


def _feed_share_seen(con) -> float:
    """Share of each viewer's Feed inventory (posts of followed, unmuted accounts in the window) shown."""
    [(share,)] = con.execute(
        """
        with window_ as (select min(ts) as lo, max(ts) as hi from impressions),
        viewers as (select distinct user_id from impressions where surface = 'feed'),
        inventory as (
          select f.follower_id as user_id, p.post_id
          from follows f join posts p on p.author_id = f.followee_id, window_ w
          where not f.muted and f.follower_id in (select user_id from viewers)
            and p.format in ('photo', 'video', 'carousel', 'reel')
            and p.created_at between w.lo and w.hi - interval 1 day and f.created_at < p.created_at
        ),
        seen as (select distinct user_id, post_id from impressions where surface = 'feed')
        select avg((s.user_id is not null)::int) from inventory i left join seen s using (user_id, post_id)
        """
    ).fetchall()
    return share


def test_users_look_at_less_than_half_of_their_feed(small_world):
    assert 0.05 < _feed_share_seen(small_world) < 0.5


def test_follower_counts_are_heavy_tailed(small_world):
    counts = np.sort(small_world.sql("select count(*) from follows group by followee_id").pl().to_series().to_numpy())
    assert counts[-1] >= 10 * np.median(counts)
    top = counts[-max(1, len(counts) // 100) :].sum()
    assert top / counts.sum() > 0.05


def test_content_flags_are_present_at_low_rates(small_world):
    from toolkit.store.schema import CONTENT_FLAGS

    rates = small_world.execute(
        "select " + ", ".join(f"avg({f}::int)" for f in CONTENT_FLAGS) + " from posts"
    ).fetchall()[0]
    for flag, rate in zip(CONTENT_FLAGS, rates):
        assert 0 < rate < 0.12, flag
    [(reels_with_audio,)] = small_world.execute("select avg((audio_id is not null)::int) from posts where format = 'reel'").fetchall()
    [(photo_durations,)] = small_world.execute("select count(duration_s) from posts where format = 'photo'").fetchall()
    assert reels_with_audio > 0.8 and photo_durations == 0


# --- inauthentic activity ----------------------------------------------------------------------


def test_inauthentic_labels_and_strategies(small_world):
    rows = small_world.execute(
        "select a.role, a.strategy, count(*), bool_and(u.is_inauthentic = (a.role != 'genuine')) "
        "from sim_accounts a join users u using (user_id) group by all"
    ).fetchall()
    assert all(ok for *_, ok in rows)
    strategies = {s for _, s, _, _ in rows if s}
    assert strategies == {"burst", "drip", "lockstep"}


def _bought_like_delays(con):
    return con.sql(
        """
        select a.strategy, epoch(e.ts - p.created_at) / 60 as minutes, e.post_id, e.ts, e.via_third_party_app
        from engagements e join posts p using (post_id) join sim_accounts a on a.user_id = e.user_id
        join sim_accounts author on author.user_id = p.author_id
        where e.action = 'like' and a.role in ('bot', 'ring') and author.role in ('buyer', 'ring')
          -- ring members also browse: their likes from an impression are genuine, not bought
          and not exists (select 1 from impressions i where i.user_id = e.user_id and i.post_id = e.post_id and i."like")
        """
    ).pl()


def test_bought_likes_follow_their_strategy(small_world):
    df = _bought_like_delays(small_world)
    median = dict(df.group_by("strategy").agg(pl.col("minutes").median()).iter_rows())
    assert median["burst"] < 30 and median["drip"] > 6 * 60
    spread = df.filter(pl.col("strategy") == "lockstep").group_by("post_id").agg(
        (pl.col("ts").max() - pl.col("ts").min()).dt.total_minutes().alias("spread"), pl.len().alias("n")
    )
    assert spread.height > 0 and (spread.filter(pl.col("n") >= 3)["spread"] <= 5).all()
    # the apps report themselves only sometimes
    assert 0.05 < df["via_third_party_app"].mean() < 0.95


def test_bought_likes_are_outside_impressions_and_truth(small_world):
    q = small_world.execute
    [(bot_impressions,)] = q(
        "select count(*) from impressions i join sim_accounts a using (user_id) where a.role = 'bot'"
    ).fetchall()
    assert bot_impressions == 0
    [(genuine_app_share,)] = q(
        "select avg(e.via_third_party_app::int) from engagements e join sim_accounts a using (user_id) where a.role = 'genuine'"
    ).fetchall()
    assert genuine_app_share < 0.02
    # Bought likes inflate what a ranker sees for burst buyers' posts far beyond what viewers give them.
    [(bought, genuine)] = q(
        """
        select sum((a.role = 'bot')::int), sum((a.role != 'bot')::int)
        from engagements e join posts p using (post_id) join sim_accounts author on author.user_id = p.author_id
        join sim_accounts a on a.user_id = e.user_id
        where e.action = 'like' and author.role = 'buyer' and author.strategy = 'burst'
        """
    ).fetchall()
    assert bought > 3 * genuine


# --- the default world (what `make data` builds) -----------------------------------------------


@pytest.mark.slow
def test_default_world_matches_the_brief(default_world_path):
    con = connect(default_world_path, read_only=True)
    try:
        [(impressions, users)] = con.execute("select count(*), count(distinct user_id) from impressions").fetchall()
        [(accounts,)] = con.execute("select count(*) from users").fetchall()
        assert 800_000 <= impressions <= 1_500_000 and accounts == 5000 and users > 4000
        assert _feed_share_seen(con) < 0.5
        surfaces = dict(con.execute("select surface, count(*) from impressions group by 1").fetchall())
        assert set(surfaces) == {"feed", "stories", "explore", "reels"} and min(surfaces.values()) > 50_000
    finally:
        con.close()


def test_p_columns_are_the_documented_truth_model_of_the_stored_inputs(small_world):
    """Recompute every p_ column from sim_impression_inputs with toolkit.synth.truth: same numbers."""
    from toolkit.store.schema import CONTENT_FLAGS, DEVICES, FORMATS, SURFACES
    from toolkit.synth.truth import FEATURES, ImpressionFeatures, action_probabilities

    df = small_world.sql(
        "select i.*, x.* exclude (impression_id), p.format, p.duration_s, p.audio_id, "
        + ", ".join(f"p.{f}" for f in CONTENT_FLAGS)
        + ", " + ", ".join(f"a.propensity_{a}" for a in ACTIONS)
        + " from impressions i join sim_impression_inputs x using (impression_id) join posts p using (post_id) "
        "join sim_accounts a on a.user_id = i.user_id where i.surface = 'reels'"
    ).pl()
    assert df.height > 1000
    x = ImpressionFeatures(
        surface=SURFACES.index("reels"),
        position=df["position"].to_numpy(),
        device=np.array([DEVICES.index(d) for d in df["device"]]),
        fmt=np.array([FORMATS.index(f) for f in df["format"]]),
        flags=df.select(CONTENT_FLAGS).to_numpy(),
        duration=df["duration_s"].fill_null(float("nan")).to_numpy(),
        has_audio=df["audio_id"].is_not_null().to_numpy(),
        already_follows=df["follow"].is_null().to_numpy(),
        survey_shown=df["entertaining"].is_not_null().to_numpy(),
        values={
            **{f: df[f].to_numpy() for f in FEATURES if f != "propensity"},
            "propensity": df.select(f"propensity_{a}" for a in ACTIONS).to_numpy(),
        },
    )
    probs, observable = action_probabilities(x)
    for j, action in enumerate(ACTIONS):
        stored = df[f"p_{action}"].to_numpy().astype(float)
        assert np.array_equal(np.isnan(stored), ~observable[:, j]), action
        np.testing.assert_allclose(probs[observable[:, j], j], stored[observable[:, j]], rtol=1e-6, err_msg=action)
