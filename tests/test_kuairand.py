"""The KuaiRand importer (toolkit.store.kuairand): mapping rules, malformed rows, file checks, the shared log."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import duckdb
import polars as pl
import pytest

from toolkit.cli import main
from toolkit.errors import FeedlabError, ValidationError
from toolkit.store import connect, table_digests
from toolkit.store.io import export_dir, import_dir
from toolkit.store.kuairand import KUAIRAND_ENV, REQUIRED_COLUMNS, kuairand_path
from toolkit.store.schema import CONTENT_FLAGS

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "kuairand_small.tsv"


def T(day: int, hour: int, minute: int, second: int = 0, ms: int = 0) -> dt.datetime:
    return dt.datetime(2022, 4, day, hour, minute, second, ms * 1000)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(db: Path, sql: str) -> list[tuple]:
    con = connect(db, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture()
def small(tmp_path: Path) -> Path:
    """The hand-made fixture imported into a new store."""
    db = tmp_path / "small.duckdb"
    import_dir(db, FIXTURE, format="kuairand", progress=False)
    return db


# ------------------------------------------------------------------------------ mapping


def test_fixture_rows_are_mapped_exactly(small: Path) -> None:
    # users: first event in the log; is_inauthentic unknown
    assert rows(small, "select * from users order by user_id") == [
        (10, T(10, 8, 0), None),
        (20, T(10, 8, 5), None),
        (30, T(10, 8, 10), None),
    ]
    assert rows(small, "select count(*) from follows") == [(0,)]
    # posts: no author, first seen, a reel, duration in seconds (null when duration_ms = 0), nothing flagged
    flags = ", ".join(CONTENT_FLAGS)
    posts = rows(
        small,
        f"select post_id, author_id, created_at, format, duration_s, topic, audio_id, has_location, is_reshare, "
        f"[{flags}] from posts order by post_id",
    )
    no = [False] * len(CONTENT_FLAGS)
    assert posts == [
        (100, None, T(10, 8, 0), "reel", 15.0, None, None, False, False, no),
        (200, None, T(10, 8, 1, 0, 500), "reel", 30.0, None, None, False, False, no),
        (300, None, T(10, 8, 6, 40, 250), "reel", 8.0, None, None, False, False, no),
        (400, None, T(10, 8, 2), "reel", None, None, None, False, False, no),
    ]
    # impressions: row index as id, reels, position 0, no device; labels as the docs say
    imps = rows(
        small,
        'select impression_id, user_id, post_id, surface, ts, position, device, dwell, "like", comment, share, '
        "profile_tap, follow, watch_complete, not_interested from impressions order by impression_id",
    )
    head = lambda i, u, p, ts: (i, u, p, "reels", ts, 0, None)  # noqa: E731
    assert imps == [
        #                                 dwell  like   comment share  tap    follow watch  not_interested
        (*head(1, 10, 100, T(10, 8, 0)), True, True, False, False, False, False, True, False),
        (*head(2, 10, 200, T(10, 8, 1, 0, 500)), True, True, True, False, True, True, False, False),
        (*head(3, 10, 400, T(10, 8, 2)), False, False, False, False, False, False, None, True),
        (*head(4, 20, 100, T(10, 8, 5)), False, True, False, True, False, False, True, False),
        (*head(5, 20, 300, T(10, 8, 6, 40, 250)), False, False, False, False, False, False, False, True),
        (*head(6, 30, 200, T(10, 8, 10)), True, True, True, False, False, False, True, False),
        (*head(7, 30, 400, T(10, 8, 11, 40)), False, True, False, False, False, False, None, False),
        (*head(8, 10, 300, T(11, 8, 0)), True, True, False, False, True, False, True, False),
        (*head(9, 20, 200, T(11, 8, 1)), True, True, True, True, False, False, True, False),
        (*head(10, 20, 400, T(11, 8, 2)), False, False, False, False, False, False, None, True),
        (*head(11, 30, 100, T(11, 8, 3)), False, False, False, False, False, False, False, True),
        (*head(12, 30, 300, T(11, 8, 4)), True, True, False, False, False, False, True, False),
        (*head(13, 30, 300, T(11, 8, 4)), True, True, False, False, False, False, True, False),
        (*head(14, 10, 100, T(11, 8, 5)), False, False, False, False, False, False, False, True),
    ]
    # labels the log does not have, and the simulator's probabilities: null everywhere
    absent = ["save", "audio_page", "entertaining", "report"] + [f"p_{a}" for a in ("like", "dwell", "watch_complete")]
    assert rows(small, f"select {', '.join(f'count({c})' for c in absent)} from impressions") == [(0,) * len(absent)]
    # engagements: like (label 1), comment, share; rows 12 and 13 are the same event (the key)
    assert rows(small, "select user_id, post_id, target_user_id, action, ts, via_third_party_app from engagements order by ts, action") == [
        (10, 100, None, "like", T(10, 8, 0), False),
        (10, 200, None, "comment", T(10, 8, 1, 0, 500), False),
        (10, 200, None, "like", T(10, 8, 1, 0, 500), False),
        (20, 100, None, "like", T(10, 8, 5), False),
        (20, 100, None, "share", T(10, 8, 5), False),
        (30, 200, None, "comment", T(10, 8, 10), False),
        (30, 200, None, "like", T(10, 8, 10), False),
        (30, 400, None, "like", T(10, 8, 11, 40), False),
        (10, 300, None, "like", T(11, 8, 0), False),
        (20, 200, None, "comment", T(11, 8, 1), False),
        (20, 200, None, "like", T(11, 8, 1), False),
        (20, 200, None, "share", T(11, 8, 1), False),
        (30, 300, None, "like", T(11, 8, 4), False),
    ]


def test_summary_notes_and_a_second_import_adds_nothing(small: Path) -> None:
    again = import_dir(small, FIXTURE, format="kuairand", progress=False)
    assert again["rows_added"] == {"users": 0, "follows": 0, "posts": 0, "impressions": 0, "engagements": 0}
    assert again["rows_already_present"] == {"users": 3, "follows": 0, "posts": 4, "impressions": 14, "engagements": 13}
    notes = "\n".join(again["notes"])
    for needle in ("no author ids", "no follow graph", "no positions: position = 0",
                   "labels not logged: save, audio_page, entertaining, report",
                   "on 3 impression(s): watch_complete is null", "1 row(s) repeat"):  # fmt: skip
        assert needle in notes, needle


def test_canonical_round_trip_keeps_null_authors_and_still_checks_known_ones(small: Path, tmp_path: Path) -> None:
    """author_id is nullable: the exported store imports back as it was; a non-null author must still exist."""
    out = tmp_path / "out"
    export_dir(small, out)
    copy = tmp_path / "copy.duckdb"
    import_dir(copy, out, progress=False)
    con_a, con_b = connect(small, read_only=True), connect(copy, read_only=True)
    try:
        assert table_digests(con_a) == table_digests(con_b)
    finally:
        con_a.close(), con_b.close()
    posts = pl.read_parquet(out / "posts.parquet")
    posts.with_columns(pl.when(pl.col("post_id") == 300).then(999).otherwise(pl.col("author_id")).alias("author_id")).write_parquet(out / "posts.parquet")
    with pytest.raises(ValidationError, match=r"posts\.author_id: 1 row\(s\) whose author_id is not a users\.user_id"):
        import_dir(tmp_path / "bad.duckdb", out, progress=False)
    assert not (tmp_path / "bad.duckdb").exists()


# ------------------------------------------------------------------------------ bad input


def _with_lines(tmp_path: Path, replace: dict[int, str]) -> Path:
    """A copy of the fixture with some lines (1-based, header = 1) replaced."""
    lines = FIXTURE.read_text().splitlines()
    for number, text in replace.items():
        lines[number - 1] = text
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_rows_are_reported_by_line_and_column(small: Path, tmp_path: Path) -> None:
    lines = FIXTURE.read_text().splitlines()
    fields = lines[4].split("\t")  # line 5
    label = fields.copy()
    label[14] = "2"
    bad = _with_lines(
        tmp_path,
        {
            5: "\t".join(label),  # label not 0/1
            7: "\t".join(lines[6].split("\t")[:-1]),  # a field missing
            10: lines[9].replace("20\t200", "2x\t200", 1),  # user_id not an integer
            11: "\t".join(lines[10].split("\t")[:4] + ["-1649664180000"] + lines[10].split("\t")[5:]),  # negative time
        },
    )
    digest = sha256(small)
    with pytest.raises(ValidationError) as info:
        import_dir(small, bad, format="kuairand", progress=False)
    problems = info.value.problems
    assert len(problems) == 4, problems
    text = "\n".join(problems)
    assert "column label: 1 row(s) with a value other than 0 or 1; e.g. line 5: '2'" in text
    assert "rows: 1 row(s) with a number of tab-separated fields other than the header's 16; e.g. line 7 has 15 field(s)" in text
    assert "column user_id: 1 row(s) with a value that is not an integer id; e.g. line 10: '2x'" in text
    assert "column time_ms: 1 row(s) with a value that is not a whole number >= 0 (milliseconds); e.g. line 11: '-1649664180000'" in text
    assert "nothing was written" in str(info.value)
    assert sha256(small) == digest  # the existing store is byte-for-byte as it was
    new = tmp_path / "new.duckdb"
    with pytest.raises(ValidationError):
        import_dir(new, bad, format="kuairand", progress=False)
    assert not new.exists()


def test_many_bad_rows_quote_a_few_and_count_all(tmp_path: Path) -> None:
    lines = FIXTURE.read_text().splitlines()
    flagged = {n: lines[n - 1].replace("\t", "\tx", 1) for n in range(2, 12)}  # video_id 'x100' on ten rows
    with pytest.raises(ValidationError) as info:
        import_dir(tmp_path / "db.duckdb", _with_lines(tmp_path, flagged), format="kuairand", progress=False)
    (problem,) = info.value.problems
    assert problem.startswith("column video_id: 10 row(s)") and problem.count("line ") == 3


def test_file_checks_give_clear_errors(tmp_path: Path) -> None:
    db = tmp_path / "db.duckdb"
    with pytest.raises(FeedlabError, match="no such file"):
        import_dir(db, tmp_path / "missing.tsv", format="kuairand", progress=False)
    with pytest.raises(FeedlabError, match="is a directory; the kuairand format reads one tab-separated log file"):
        import_dir(db, tmp_path, format="kuairand", progress=False)
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(FeedlabError, match="the file is empty"):
        import_dir(db, tmp_path / "empty.tsv", format="kuairand", progress=False)
    header = FIXTURE.read_text().splitlines()[0].replace("label", "rating").replace("video_id", "item_id")
    (tmp_path / "wrong.tsv").write_text(header + "\n1\t2\n")
    with pytest.raises(FeedlabError, match="the header \\(line 1\\) lacks video_id, label") as info:
        import_dir(db, tmp_path / "wrong.tsv", format="kuairand", progress=False)
    assert not isinstance(info.value, ValidationError)
    (tmp_path / "comma.csv").write_text(",".join(REQUIRED_COLUMNS) + "\n")
    with pytest.raises(FeedlabError, match="not a KuaiRand log"):
        import_dir(db, tmp_path / "comma.csv", format="kuairand", progress=False)
    assert not db.exists()


def test_header_only_log_imports_nothing(tmp_path: Path) -> None:
    path = tmp_path / "header.tsv"
    path.write_text(FIXTURE.read_text().splitlines()[0] + "\r\n")
    summary = import_dir(tmp_path / "db.duckdb", path, format="kuairand", progress=False)
    assert sum(summary["rows_added"].values()) == 0


def test_kuairand_path_default_and_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(KUAIRAND_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # found from the project root, not the working directory
    expected = (ROOT.parent / "shared" / "datasets" / "kuairand-27k-like-hate" / "log_like_hate_kcore15.tsv").resolve()
    assert kuairand_path() == expected
    monkeypatch.setenv(KUAIRAND_ENV, str(tmp_path / "mine.tsv"))
    assert kuairand_path() == tmp_path / "mine.tsv"


# ------------------------------------------------------------------------------ CLI


def test_cli_import_prints_the_notes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db = tmp_path / "db.duckdb"
    assert main(["import", "--db", str(db), "--format", "kuairand", str(FIXTURE), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "impressions: 14" in out
    assert "notes:\n  - no author ids: posts.author_id is null" in out
    assert "  - no positions: position = 0 on every impression" in out
    assert main(["import", "--db", str(db), "--format", "kuairand", str(tmp_path / "nope.tsv"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "feedlab import:" in err and "no such file" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ later stages


def test_author_signals_are_null_not_zero(small: Path) -> None:
    from toolkit.signals import training_frame
    from toolkit.signals.registry import feature_names

    con = connect(small, read_only=True)
    try:
        frame = training_frame(con, "reels")
    finally:
        con.close()
    assert frame.height == 14
    unknown = [n for n in feature_names() if n.startswith(("author_", "va_"))]
    nulls = frame.select(pl.col(unknown).null_count()).row(0, named=True)
    assert nulls == {n: 14 for n in unknown}
    # what the log does give still counts: likes on post 300 before its second day
    later = frame.filter(pl.col("impression_id") == 12).row(0, named=True)
    assert later["post_likes_total"] == 1.0 and later["viewer_impressions_total"] == 3.0


# ------------------------------------------------------------------------------ the shared log


def test_shared_log_imports_with_the_expected_counts(tmp_path: Path) -> None:
    path = kuairand_path()
    if not path.is_file():
        pytest.skip(f"the shared KuaiRand log is not at {path} (set {KUAIRAND_ENV}); CI has it")
    db = tmp_path / "kuairand.duckdb"
    summary = import_dir(db, path, format="kuairand", progress=False)
    assert summary["rows_added"] == {"users": 664, "follows": 0, "posts": 9359, "impressions": 41828, "engagements": summary["rows_added"]["engagements"]}
    con = connect(db, read_only=True)
    try:
        counts = con.sql(
            'select count_if("like"), count_if(not_interested), count(*) - count(watch_complete), '
            "count_if(author_id is null) from impressions join posts using (post_id)"
        ).fetchall()[0]
        assert counts == (33_745, 8_083, 7_738, 41_828)
        engaged = dict(con.sql("select action, count(*) from engagements group by action").fetchall())
    finally:
        con.close()
    # one engagement per flagged (user, video, time): the log repeats a few rows exactly
    raw = duckdb.connect().sql(
        "select count(distinct (user_id, video_id, time_ms)) filter (label = 1), "
        "count(distinct (user_id, video_id, time_ms)) filter (is_comment = 1), "
        "count(distinct (user_id, video_id, time_ms)) filter (is_forward = 1), count_if(duration_ms = 0) "
        "from read_csv(?, delim = '\t', header = true)",
        params=[str(path)],
    ).fetchall()[0]
    assert engaged == {"like": raw[0], "comment": raw[1], "share": raw[2]}
    assert raw[3] == 7_738
    assert sum(engaged.values()) == summary["rows_added"]["engagements"]



@pytest.mark.slow
def test_real_data_notebook_runs_cleanly_without_the_log(tmp_path):
    """Where the KuaiRand file is absent, notebook 09 says where to get it and skips its data cells."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "FEEDLAB_KUAIRAND": str(tmp_path / "absent.tsv"), "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
         str(root / "notebooks" / "09_real_data.ipynb")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
