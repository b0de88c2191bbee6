"""Import, validation, export and summary of the interaction store (toolkit.store.io)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import polars as pl
import pytest

from toolkit.cli import main
from toolkit.errors import FeedlabError, StoreLockedError, ValidationError
from toolkit.store import connect
from toolkit.store.io import export_dir, import_dir, store_info
from toolkit.store.schema import ACTIONS, CONTENT_FLAGS, TABLE_ORDER, TABLES

ROOT = Path(__file__).resolve().parents[1]

Frames = dict[str, tuple[pl.DataFrame, str]]  # table -> (rows, "parquet" | "csv")


def T(day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(2024, 5, day, hour, minute)


def _impression(iid: int, user: int, post: int, surface: str, ts: dt.datetime, pos: int, **labels) -> dict:
    row = {
        "impression_id": iid,
        "user_id": user,
        "post_id": post,
        "surface": surface,
        "ts": ts,
        "position": pos,
        "device": "ios" if iid % 2 else None,
    }
    for a in ACTIONS:
        row[a] = labels.get(a, False)
        # Ground-truth probabilities on some rows only, so nulls round-trip too.
        row[f"p_{a}"] = (0.1 + 0.01 * ACTIONS.index(a)) if iid % 3 else None
    return row


def base_frames() -> Frames:
    """A tiny valid world: 4 users, 3 follows, 3 posts, 6 impressions, 4 engagements."""
    users = pl.DataFrame(
        {
            "user_id": [1, 2, 3, 4],
            "created_at": [T(1), T(1, 1), T(1, 2), T(2)],
            "is_inauthentic": [False, None, None, True],
        }
    )
    follows = pl.DataFrame(
        {
            "follower_id": [1, 2, 3],
            "followee_id": [2, 1, 1],
            "created_at": [T(1, 5), T(1, 6), T(1, 7)],
            "close_friend": [True, False, False],
            "muted": [False, False, True],
        }
    )
    posts = pl.DataFrame(
        {
            "post_id": [10, 11, 12],
            "author_id": [1, 2, 3],
            "created_at": [T(2, 8), T(2, 9), T(2, 10)],
            "format": ["photo", "reel", "story"],
            "duration_s": [None, 15.5, 5.0],
            "topic": [3, 7, None],
            "audio_id": [None, 700, None],
            "has_location": [True, False, False],
            "is_reshare": [False, False, True],
            **{f: [f == "political", False, False] for f in CONTENT_FLAGS},
        },
        schema_overrides={"topic": pl.Int32},
    )
    impressions = pl.DataFrame(
        [
            # watch_complete is null on a photo, entertaining null where no survey was shown,
            # follow null where the viewer already follows the author.
            _impression(100, 2, 10, "feed", T(3, 9), 0, like=True, watch_complete=None, follow=None),
            _impression(101, 3, 10, "explore", T(3, 9, 5), 4, watch_complete=None, entertaining=None),
            _impression(102, 1, 11, "reels", T(3, 10), 0, dwell=True, watch_complete=True),
            _impression(103, 4, 11, "reels", T(3, 10, 1), 1, entertaining=None),
            _impression(104, 1, 12, "stories", T(3, 11), 2, like=True),
            _impression(105, 2, 11, "feed", T(3, 12), 3, save=True, follow=None),
        ],
        schema_overrides={"position": pl.Int32},
    )
    engagements = pl.DataFrame(
        {
            "user_id": [2, 4, 4, 1],
            "post_id": [10, 11, None, 12],
            "target_user_id": [None, None, 1, None],
            "action": ["like", "like", "follow", "like"],
            "ts": [T(3, 9, 1), T(3, 10, 2), T(3, 10, 3), T(3, 11, 1)],
            # user 4 bought a like outside any logged impression: it reports its app.
            "via_third_party_app": [False, True, False, False],
        }
    )
    return {
        "users": (users, "csv"),
        "follows": (follows, "parquet"),
        "posts": (posts, "csv"),
        "impressions": (impressions, "parquet"),
        "engagements": (engagements, "csv"),
    }


def write_frames(frames: Frames, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, (df, fmt) in frames.items():
        path = directory / f"{name}.{fmt}"
        df.write_parquet(path) if fmt == "parquet" else df.write_csv(path)
    return directory


def add_row(frames: Frames, table: str, **values) -> None:
    """Append a copy of the table's first row with ``values`` changed."""
    df, fmt = frames[table]
    row = {**df.row(0, named=True), **values}
    frames[table] = (pl.concat([df, pl.DataFrame([row], schema=df.schema)]), fmt)


def as_text(frames: Frames, table: str) -> None:
    """Turn a table into all-text CSV, so a value of the wrong type can be written into it."""
    df, _ = frames[table]
    frames[table] = (df.select(pl.all().cast(pl.String)), "csv")


def set_value(frames: Frames, table: str, column: str, value, row: int = 0) -> None:
    df, fmt = frames[table]
    values = df[column].to_list()
    values[row] = value
    frames[table] = (df.with_columns(pl.Series(column, values, dtype=df.schema[column])), fmt)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def table_rows(db: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.sql(f'select * from "{t}" order by all').fetchall() for t in TABLE_ORDER}
    finally:
        con.close()


def table_types(db: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {
            t: con.execute(
                "select column_name, data_type, is_nullable from information_schema.columns "
                "where table_name = ? order by ordinal_position",
                [t],
            ).fetchall()
            for t in TABLE_ORDER
        }
    finally:
        con.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_frames(base_frames(), tmp_path / "in")


@pytest.fixture(scope="module")
def base_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the valid world; tests copy it rather than import again."""
    d = tmp_path_factory.mktemp("base")
    db = d / "base.duckdb"
    import_dir(db, write_frames(base_frames(), d / "in"), progress=False)
    return db


@pytest.fixture
def store(base_store: Path, tmp_path: Path) -> Path:
    db = tmp_path / "store.duckdb"
    shutil.copyfile(base_store, db)
    return db


COUNTS = {"users": 4, "follows": 3, "posts": 3, "impressions": 6, "engagements": 4}


# ------------------------------------------------------------------------------ valid input


def test_valid_import_counts_and_second_import_adds_nothing(source: Path, tmp_path: Path) -> None:
    db = tmp_path / "new.duckdb"
    summary = import_dir(db, source, progress=False)
    assert summary == {
        "database": str(db),
        "source": str(source),
        "rows_added": COUNTS,
        "rows_already_present": {t: 0 for t in TABLE_ORDER},
    }
    before = table_rows(db)
    again = import_dir(db, source, progress=False)
    assert again["rows_added"] == {t: 0 for t in TABLE_ORDER}
    assert again["rows_already_present"] == COUNTS
    assert table_rows(db) == before


def test_import_adds_only_new_rows(store: Path, tmp_path: Path) -> None:
    frames = base_frames()
    add_row(frames, "users", user_id=5, created_at=T(4))
    add_row(frames, "impressions", impression_id=106, user_id=5, position=9)
    summary = import_dir(store, write_frames(frames, tmp_path / "more"), progress=False)
    assert summary["rows_added"] == {"users": 1, "follows": 0, "posts": 0, "impressions": 1, "engagements": 0}
    assert summary["rows_already_present"]["impressions"] == 6


def test_values_are_typed_and_labels_keep_their_nulls(store: Path) -> None:
    con = connect(store, read_only=True)
    try:
        row = con.sql(
            "select surface, ts, position, watch_complete, follow, p_like, device from impressions where impression_id = 100"
        ).fetchall()[0]
        assert row == ("feed", T(3, 9), 0, None, None, pytest.approx(0.11), None)
        assert con.sql("select is_inauthentic from users order by user_id").fetchall() == [
            (False,), (None,), (None,), (True,)
        ]
        assert con.sql("select count(*) from engagements where post_id is null").fetchall() == [(1,)]
    finally:
        con.close()


def test_follows_and_engagements_may_be_absent(tmp_path: Path) -> None:
    frames = base_frames()
    del frames["follows"], frames["engagements"]
    summary = import_dir(tmp_path / "db.duckdb", write_frames(frames, tmp_path / "in"), progress=False)
    assert summary["rows_added"]["follows"] == 0
    assert summary["rows_added"]["engagements"] == 0
    assert summary["rows_added"]["impressions"] == 6


def test_timestamp_with_offset_is_converted_to_utc(tmp_path: Path) -> None:
    frames = base_frames()
    as_text(frames, "users")
    set_value(frames, "users", "created_at", "2024-05-01T02:00:00+02:00")
    db = tmp_path / "db.duckdb"
    import_dir(db, write_frames(frames, tmp_path / "in"), progress=False)
    assert table_rows(db)["users"][0][1] == T(1, 0)


# ------------------------------------------------------------------------------ bad input

Mutation = Callable[[Frames], None]


def _drop(table: str, column: str) -> Mutation:
    def mutate(frames: Frames) -> None:
        df, fmt = frames[table]
        frames[table] = (df.drop(column), fmt)

    return mutate


def _add(table: str, **values) -> Mutation:
    return lambda frames: add_row(frames, table, **values)


def _text_value(table: str, column: str, value: str, **key) -> Mutation:
    def mutate(frames: Frames) -> None:
        add_row(frames, table, **key)
        as_text(frames, table)
        set_value(frames, table, column, value, row=-1)

    return mutate


def _parquet_strings(frames: Frames) -> None:
    df, _ = frames["users"]
    frames["users"] = (df.with_columns(pl.col("user_id").cast(pl.String)), "parquet")
    add_row(frames, "users", user_id="x5")


def _both_formats(frames: Frames) -> None:
    frames["users_twin"] = frames["users"]


def _conflict(frames: Frames) -> None:
    set_value(frames, "users", "created_at", T(9))


def _duplicate_follow_engagement(frames: Frames) -> None:
    df, fmt = frames["engagements"]
    frames["engagements"] = (pl.concat([df, df.filter(pl.col("action") == "follow")]), fmt)


def _missing_posts(frames: Frames) -> None:
    del frames["posts"]


NEW_IMP = {"impression_id": 200}
NEW_ENG = {"ts": T(5)}

BAD_INPUTS: list[tuple[str, Mutation, list[str]]] = [
    ("missing column", _drop("impressions", "surface"), ["impressions.surface", "required column missing"]),
    ("missing posts file", _missing_posts, ["posts", "missing"]),
    ("table given twice", _both_formats, ["users", "given twice", "users.csv", "users.parquet"]),
    ("unknown column", lambda f: f.__setitem__("posts", (f["posts"][0].with_columns(colour=pl.lit("red")), "csv")),
     ["posts.colour", "unknown column"]),
    ("wrong type csv", _text_value("impressions", "post_id", "abc", **NEW_IMP),
     ["impressions.post_id", "not a valid BIGINT", "'abc'", "impression_id=200"]),
    ("wrong type parquet", _parquet_strings, ["users.user_id", "not a valid BIGINT", "'x5'"]),
    ("fraction in integer", _text_value("impressions", "position", "1.5", **NEW_IMP),
     ["impressions.position", "not a valid INTEGER", "'1.5'"]),
    ("bad boolean", _text_value("posts", "has_location", "maybe", post_id=13),
     ["posts.has_location", "not a valid BOOLEAN", "'maybe'", "post_id=13"]),
    ("unparseable timestamp", _text_value("posts", "created_at", "2024-13-45", post_id=13),
     ["posts.created_at", "not a valid TIMESTAMP", "'2024-13-45'"]),
    ("null key", _add("impressions", impression_id=None), ["impressions.impression_id", "null"]),
    ("null required value", _add("posts", post_id=13, format=None), ["posts.format", "null", "post_id=13"]),
    ("duplicate key", _add("users"), ["users.user_id", "more than once", "user_id=1"]),
    ("duplicate event with null key part", _duplicate_follow_engagement,
     ["engagements.user_id,action,post_id,target_user_id,ts", "more than once", "post_id=NULL"]),
    ("conflict with the store", _conflict, ["users.user_id", "already in the store", "differs in=[created_at]"]),
    ("unknown enum value", _add("impressions", impression_id=200, surface="tv"),
     ["impressions.surface", "outside {feed, stories, explore, reels}", "surface='tv'"]),
    ("unknown nullable enum value", _add("impressions", impression_id=200, device="symbian"),
     ["impressions.device", "'symbian'"]),
    ("unknown engagement action", _add("engagements", action="poke", **NEW_ENG), ["engagements.action", "'poke'"]),
    ("impression of a missing post", _add("impressions", impression_id=200, post_id=999),
     ["impressions.post_id", "posts.post_id", "post_id=999"]),
    ("impression by a missing user", _add("impressions", impression_id=200, user_id=999),
     ["impressions.user_id", "users.user_id", "user_id=999"]),
    ("follow of a missing user", _add("follows", followee_id=999), ["follows.followee_id", "followee_id=999"]),
    ("follow by a missing user", _add("follows", follower_id=999), ["follows.follower_id", "follower_id=999"]),
    ("post by a missing author", _add("posts", post_id=13, author_id=999), ["posts.author_id", "author_id=999"]),
    ("engagement on a missing post", _add("engagements", post_id=999, **NEW_ENG), ["engagements.post_id", "post_id=999"]),
    ("engagement by a missing user", _add("engagements", user_id=999, **NEW_ENG), ["engagements.user_id", "user_id=999"]),
    ("follow of a missing target", _add("engagements", action="follow", post_id=None, target_user_id=999, **NEW_ENG),
     ["engagements.target_user_id", "target_user_id=999"]),
    ("self-follow", _add("follows", follower_id=4, followee_id=4), ["follows.follower_id,followee_id", "themselves"]),
    ("impression before post created", _add("impressions", impression_id=200, ts=T(2, 7)),
     ["impressions.ts", "before their post was created", "posts.created_at='2024-05-02 08:00:00'"]),
    ("engagement before post created", _add("engagements", ts=T(1, 3)), ["engagements.ts", "before their post"]),
    ("probability above 1", _add("impressions", impression_id=200, p_like=1.5), ["impressions.p_like", "outside [0, 1]", "1.5"]),
    ("probability below 0", _add("impressions", impression_id=200, p_report=-0.1), ["impressions.p_report", "outside [0, 1]"]),
    ("negative position", _add("impressions", impression_id=200, position=-1), ["impressions.position", "negative"]),
    ("negative duration", _add("posts", post_id=13, duration_s=-3.0), ["posts.duration_s", "negative"]),
    ("follow engagement without target", _add("engagements", action="follow", post_id=None, **NEW_ENG),
     ["engagements.action,target_user_id,post_id", "'follow'", "target_user_id=NULL"]),
    ("follow engagement with a post", _add("engagements", action="follow", target_user_id=2, **NEW_ENG),
     ["engagements.action,target_user_id,post_id", "'follow'"]),
    ("like without post", _add("engagements", post_id=None, **NEW_ENG), ["engagements.action,post_id", "no post_id"]),
]


@pytest.mark.parametrize(("mutation", "expected"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_reported_and_store_is_unchanged(
    store: Path, tmp_path: Path, mutation: Mutation, expected: list[str]
) -> None:
    frames = base_frames()
    mutation(frames)
    twin = frames.pop("users_twin", None)
    src = write_frames(frames, tmp_path / "bad")
    if twin is not None:
        twin[0].write_parquet(src / "users.parquet")
    digest = sha256(store)
    with pytest.raises(ValidationError) as info:
        import_dir(store, src, progress=False)
    err = info.value
    # Exactly one problem: a bad value is reported once, not again by every later check.
    assert len(err.problems) == 1, err.problems
    for text in expected:
        assert text in err.problems[0], (text, err.problems[0])
    assert str(src) in str(err) and "nothing was written" in str(err)
    assert sha256(store) == digest


def test_bad_input_does_not_create_the_database(tmp_path: Path) -> None:
    frames = base_frames()
    add_row(frames, "impressions", impression_id=200, surface="tv")
    db = tmp_path / "sub" / "never.duckdb"
    with pytest.raises(ValidationError):
        import_dir(db, write_frames(frames, tmp_path / "bad"), progress=False)
    assert not db.exists()
    assert not db.parent.exists()


def test_every_problem_is_listed(store: Path, tmp_path: Path) -> None:
    frames = base_frames()
    _drop("posts", "topic")(frames)
    add_row(frames, "impressions", impression_id=200, surface="tv")
    add_row(frames, "impressions", impression_id=201, surface="tv", position=-1)
    add_row(frames, "impressions", impression_id=202, surface="radio")
    add_row(frames, "impressions", impression_id=203, surface="tv")
    add_row(frames, "follows", follower_id=4, followee_id=4)
    add_row(frames, "engagements", user_id=999, ts=T(5))
    digest = sha256(store)
    with pytest.raises(ValidationError) as info:
        import_dir(store, write_frames(frames, tmp_path / "bad"), progress=False)
    problems = info.value.problems
    assert len(problems) == 5, problems
    text = "\n".join(problems)
    for needle in ("posts.topic", "follows.follower_id,followee_id", "impressions.position", "engagements.user_id"):
        assert needle in text
    surface = next(p for p in problems if p.startswith("impressions.surface"))
    # Counts every bad row, quotes at most three.
    assert "4 row(s)" in surface and surface.count("impression_id=") == 3
    assert sha256(store) == digest


def test_source_must_be_a_directory_with_tables(tmp_path: Path) -> None:
    db = tmp_path / "db.duckdb"
    with pytest.raises(FeedlabError, match="no such directory"):
        import_dir(db, tmp_path / "nowhere", progress=False)
    (tmp_path / "file.csv").write_text("a\n1\n")
    with pytest.raises(FeedlabError, match="not a directory"):
        import_dir(db, tmp_path / "file.csv", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeedlabError, match="empty"):
        import_dir(db, tmp_path / "empty", progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello")
    with pytest.raises(FeedlabError, match="none of the canonical table files"):
        import_dir(db, tmp_path / "other", progress=False)
    assert not db.exists()


def test_unknown_format(source: Path, tmp_path: Path) -> None:
    with pytest.raises(FeedlabError, match="unknown format 'parquet-zip'; known: canonical, kuairand"):
        import_dir(tmp_path / "db.duckdb", source, format="parquet-zip", progress=False)


def test_unreadable_file_is_a_problem(store: Path, tmp_path: Path) -> None:
    src = write_frames(base_frames(), tmp_path / "in")
    (src / "impressions.parquet").write_bytes(b"not parquet at all")
    digest = sha256(store)
    with pytest.raises(ValidationError, match="impressions: cannot read impressions.parquet"):
        import_dir(store, src, progress=False)
    assert sha256(store) == digest


# ------------------------------------------------------------------------------ export


def test_export_then_import_round_trips(store: Path, tmp_path: Path) -> None:
    con = connect(store)
    con.execute("create table sim_truth as select 1 as x")
    con.close()
    out = tmp_path / "out" / "nested"
    summary = export_dir(store, out)
    assert summary == {"database": str(store), "directory": str(out), "rows": COUNTS}
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}.parquet" for t in TABLE_ORDER)
    # Ordered by key: the files are deterministic.
    ids = pl.read_parquet(out / "impressions.parquet")["impression_id"].to_list()
    assert ids == sorted(ids)
    again = export_dir(store, tmp_path / "again")
    for name in TABLE_ORDER:
        assert sha256(out / f"{name}.parquet") == sha256(Path(again["directory"]) / f"{name}.parquet")
    fresh = tmp_path / "fresh.duckdb"
    imported = import_dir(fresh, out, progress=False)
    assert imported["rows_added"] == COUNTS
    assert table_rows(fresh) == table_rows(store)
    assert table_types(fresh) == table_types(store)
    with pytest.raises(FeedlabError, match="no such database"):
        export_dir(tmp_path / "missing.duckdb", tmp_path / "x")


# ------------------------------------------------------------------------------ info


def test_store_info(store: Path) -> None:
    con = connect(store)
    con.execute("create table sim_accounts as select 1 as x")
    try:
        info = store_info(con)
    finally:
        con.close()
    assert json.loads(json.dumps(info)) == info
    assert info["rows"] == COUNTS
    assert info["schema_version"] == 1
    assert info["database"] == str(store)
    assert info["time_span"]["impressions.ts"] == {"min": "2024-05-03T09:00:00", "max": "2024-05-03T12:00:00"}
    assert info["time_span"]["posts.created_at"]["min"] == "2024-05-02T08:00:00"
    assert info["time_span"]["engagements.ts"]["max"] == "2024-05-03T11:01:00"
    assert info["impressions_per_surface"] == {"feed": 2, "stories": 1, "explore": 1, "reels": 2}
    assert info["extra_tables"] == ["sim_accounts"]


def test_store_info_of_an_empty_store(tmp_path: Path) -> None:
    con = connect(tmp_path / "empty.duckdb")
    try:
        info = store_info(con)
    finally:
        con.close()
    assert info["rows"] == {t: 0 for t in TABLE_ORDER}
    assert info["time_span"]["impressions.ts"] == {"min": None, "max": None}


# ------------------------------------------------------------------------------ CLI


def test_cli_import_bad_input_exits_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    frames = base_frames()
    add_row(frames, "impressions", impression_id=200, surface="tv")
    src = write_frames(frames, tmp_path / "bad")
    code = main(["import", "--db", str(tmp_path / "db.duckdb"), str(src), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "feedlab import:" in err and "impressions.surface" in err and "'tv'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "db.duckdb").exists()


def test_cli_import_export_info(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db = tmp_path / "db.duckdb"
    assert main(["import", "--db", str(db), str(source), "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows_added"] == COUNTS
    assert main(["info", "--db", str(db), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == COUNTS
    assert main(["export", "--db", str(db), str(tmp_path / "out")]) == 0
    assert "impressions: 6" in capsys.readouterr().out
    assert main(["import", "--db", str(db), str(source), "--format", "nope", "--quiet"]) == 2
    assert "unknown format 'nope'" in capsys.readouterr().err


# ------------------------------------------------------------------------------ locking


def test_locked_store_names_the_file(store: Path, source: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb,time,sys; c=duckdb.connect(sys.argv[1]); print('ok', flush=True); time.sleep(30)",
            str(store),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        with pytest.raises(StoreLockedError) as info:
            connect(store)
        assert store.name in str(info.value) and "read_only" in str(info.value)
        # The importer attaches the store read-only to validate: the same message, not DuckDB's.
        with pytest.raises(StoreLockedError) as info:
            import_dir(store, source, progress=False)
        assert store.name in str(info.value) and "read_only" in str(info.value)
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------------ docs


def test_schema_doc_names_every_column() -> None:
    doc = (ROOT / "docs" / "schema.md").read_text()
    missing = [
        f"{t.name}.{c.name}" for t in TABLES.values() for c in t.columns if f"`{c.name}`" not in doc
    ]
    assert not missing, missing
    for name in TABLES:
        assert f"## `{name}`" in doc
    assert "## Simulation ground truth" in doc


def test_schema_doc_example_rows_are_valid(tmp_path: Path) -> None:
    """The example rows in the doc import cleanly (given the users they refer to)."""
    doc = (ROOT / "docs" / "schema.md").read_text()
    blocks = re.findall(r"^## `(\w+)`.*?```json\n(.*?)\n```", doc, flags=re.S | re.M)
    examples = {name: json.loads(body) for name, body in blocks}
    assert sorted(examples) == sorted(TABLE_ORDER)
    for name, row in examples.items():
        assert list(row) == [c for c in TABLES[name].column_names if not TABLES[name].column(c).optional]
    ids = {v for name in ("follows", "posts", "impressions", "engagements") for k, v in examples[name].items()
           if k in TABLES[name].references and TABLES[name].references[k][0] == "users" and v is not None}
    users = [examples["users"]] + [
        {**examples["users"], "user_id": i} for i in sorted(ids) if i != examples["users"]["user_id"]
    ]
    src = tmp_path / "doc"
    src.mkdir()
    for name in TABLE_ORDER:
        rows = users if name == "users" else [examples[name]]
        schema = {c.name: pl.String for c in TABLES[name].columns if not c.optional}
        # Everything as text: the importer does the parsing, exactly as for a hand-written CSV.
        pl.DataFrame(
            [{k: (None if v is None else str(v).lower() if isinstance(v, bool) else str(v)) for k, v in r.items()} for r in rows],
            schema=schema,
        ).write_csv(src / f"{name}.csv")
    summary = import_dir(tmp_path / "doc.duckdb", src, progress=False)
    assert summary["rows_added"] == {t: len(users) if t == "users" else 1 for t in TABLE_ORDER}


def test_store_open_in_this_process_is_named(store: Path, source: Path) -> None:
    con = connect(store)
    try:
        with pytest.raises(FeedlabError, match="already open in this process"):
            import_dir(store, source, progress=False)
    finally:
        con.close()


def test_references_resolve_against_the_store(store: Path, tmp_path: Path) -> None:
    """A later batch may refer to users and posts imported earlier."""
    frames = base_frames()
    users, _ = frames["users"]
    frames["users"] = (users.head(0), "csv")  # header only
    frames["posts"] = (frames["posts"][0].filter(pl.col("post_id") == 12).with_columns(post_id=pl.lit(13)), "csv")
    frames["impressions"] = (frames["impressions"][0].head(1).with_columns(impression_id=pl.lit(300), post_id=pl.lit(13)), "parquet")
    del frames["follows"], frames["engagements"]
    summary = import_dir(store, write_frames(frames, tmp_path / "batch2"), progress=False)
    assert summary["rows_added"] == {"users": 0, "follows": 0, "posts": 1, "impressions": 1, "engagements": 0}


def test_default_store_is_found_from_the_project_root_or_the_environment(tmp_path: Path, monkeypatch) -> None:
    from toolkit.store import STORE_ENV, default_store

    monkeypatch.delenv(STORE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # a notebook's kernel starts in notebooks/, not the root
    root = Path(__file__).resolve().parents[1]
    assert default_store(must_exist=False) == root / "data" / "feedlab.duckdb"
    elsewhere = tmp_path / "mine.duckdb"
    monkeypatch.setenv(STORE_ENV, str(elsewhere))
    with pytest.raises(FeedlabError, match="does not exist yet"):
        default_store()
    connect(elsewhere).close()
    assert default_store() == elsewhere
