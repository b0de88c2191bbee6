"""What the integrity modules share: the time ``at``, and the check for engagements."""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta

import duckdb

from toolkit.errors import FeedlabError
from toolkit.predict.train import parse_time

Store = str | os.PathLike | duckdb.DuckDBPyConnection


def resolve_at(con: duckdb.DuckDBPyConnection, at: str | date | datetime | None) -> datetime:
    """``at`` as a naive UTC datetime; None is just after the store's last engagement ("now").

    Raises a FeedlabError when the store has no engagements before ``at``: every integrity signal
    is about who engaged with what, so there is nothing to detect from.
    """
    if at is not None:
        when = parse_time(at)
        n = con.execute("select count(*) from engagements where ts < ?", [when]).fetchall()[0][0]
        if n == 0:
            raise FeedlabError(
                f"no engagements before {when}: integrity detection reads the engagements table "
                "(likes and follows); import them (feedlab import) or choose a later time"
            )
        return when
    last = con.execute("select max(ts) from engagements").fetchall()[0][0]
    if last is None:
        raise FeedlabError(
            "the store has no engagements: integrity detection reads the engagements table "
            "(likes and follows), so there is nothing to score; import them with `feedlab import`"
        )
    return last + timedelta(microseconds=1)
