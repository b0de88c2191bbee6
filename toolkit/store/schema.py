"""Canonical schema v1: the tables every importer and every later stage relies on.

The schema is data: each table is a list of :class:`Column` objects, from which the DuckDB DDL,
the import validation and the documentation in ``docs/schema.md`` are derived. Timestamps are
naive ``TIMESTAMP`` values in UTC.

Example
-------
>>> from toolkit.store.schema import TABLES, ACTIONS
>>> [c.name for c in TABLES["users"].columns]
['user_id', 'created_at', 'is_inauthentic']
>>> len(ACTIONS)
12
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCHEMA_VERSION = 1

SURFACES: tuple[str, ...] = ("feed", "stories", "explore", "reels")
#: Surfaces that recommend accounts the viewer does not follow (the rest show followed accounts).
RECOMMENDATION_SURFACES: tuple[str, ...] = ("explore", "reels")
FORMATS: tuple[str, ...] = ("photo", "video", "carousel", "story", "reel")
DEVICES: tuple[str, ...] = ("ios", "android", "web")
#: Actions a model predicts per impression (labels in ``impressions``), in a fixed order.
ACTIONS: tuple[str, ...] = (
    "dwell",
    "like",
    "comment",
    "share",
    "save",
    "profile_tap",
    "follow",
    "watch_complete",
    "audio_page",
    "entertaining",
    "not_interested",
    "report",
)
#: Public actions that popularity signals count (rows of ``engagements``).
ENGAGEMENT_ACTIONS: tuple[str, ...] = ("like", "comment", "share", "save", "follow")
CONTENT_FLAGS: tuple[str, ...] = (
    "misinformation",
    "guideline_violation",
    "sensitive",
    "political",
    "low_resolution",
    "watermarked",
    "muted_audio",
    "has_borders",
    "mostly_text",
)


@dataclass(frozen=True)
class Column:
    """One column of a canonical table."""

    name: str
    type: str  # DuckDB type name
    nullable: bool = False
    values: tuple[str, ...] | None = None  # allowed values of an enum-like VARCHAR
    optional: bool = False  # may be absent from an input file (then all null)
    doc: str = ""


@dataclass(frozen=True)
class Table:
    """A canonical table: its columns, its key, and its references to other tables."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    # column -> (table, column) it must refer to when not null
    references: dict[str, tuple[str, str]] = field(default_factory=dict)
    doc: str = ""

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


def _flag(name: str) -> Column:
    return Column(name, "BOOLEAN", doc=f"content flag: {name.replace('_', ' ')}")


TABLES: dict[str, Table] = {
    "users": Table(
        "users",
        (
            Column("user_id", "BIGINT"),
            Column("created_at", "TIMESTAMP", doc="account creation time"),
            Column(
                "is_inauthentic",
                "BOOLEAN",
                nullable=True,
                doc="ground truth where known; null = unknown (not the same as false)",
            ),
        ),
        key=("user_id",),
        doc="Accounts: viewers, authors, and the accounts that give or buy engagement.",
    ),
    "follows": Table(
        "follows",
        (
            Column("follower_id", "BIGINT"),
            Column("followee_id", "BIGINT"),
            Column("created_at", "TIMESTAMP"),
            Column("close_friend", "BOOLEAN", doc="the follower put the followee on Close Friends"),
            Column("muted", "BOOLEAN", doc="the follower muted the followee"),
        ),
        key=("follower_id", "followee_id"),
        references={"follower_id": ("users", "user_id"), "followee_id": ("users", "user_id")},
        doc="The social graph, one row per follow; no self-follows.",
    ),
    "posts": Table(
        "posts",
        (
            Column("post_id", "BIGINT"),
            Column(
                "author_id",
                "BIGINT",
                nullable=True,
                doc="the account that posted it; null when the source does not say who posted it",
            ),
            Column("created_at", "TIMESTAMP"),
            Column("format", "VARCHAR", values=FORMATS),
            Column("duration_s", "DOUBLE", nullable=True, doc="seconds; null for photos"),
            Column("topic", "INTEGER", nullable=True),
            Column("audio_id", "BIGINT", nullable=True, doc="audio track of a reel or video"),
            Column("has_location", "BOOLEAN"),
            Column("is_reshare", "BOOLEAN", doc="a Feed post reshared (to Stories, say)"),
            *(_flag(f) for f in CONTENT_FLAGS),
        ),
        key=("post_id",),
        references={"author_id": ("users", "user_id")},
        doc="Everything that can be shown: photos, videos, carousels, stories and reels.",
    ),
    "impressions": Table(
        "impressions",
        (
            Column("impression_id", "BIGINT"),
            Column("user_id", "BIGINT", doc="the viewer"),
            Column("post_id", "BIGINT"),
            Column("surface", "VARCHAR", values=SURFACES),
            Column("ts", "TIMESTAMP"),
            Column("position", "INTEGER", doc="0-based rank in the served list"),
            Column("device", "VARCHAR", nullable=True, values=DEVICES),
            *(
                Column(a, "BOOLEAN", nullable=True, doc="label; null = not observable here")
                for a in ACTIONS
            ),
            *(
                Column(
                    f"p_{a}",
                    "DOUBLE",
                    nullable=True,
                    optional=True,
                    doc="true probability that produced the label (simulated data only)",
                )
                for a in ACTIONS
            ),
        ),
        key=("impression_id",),
        references={"user_id": ("users", "user_id"), "post_id": ("posts", "post_id")},
        doc="What was shown to whom, where, when and at which position, and what they did.",
    ),
    "engagements": Table(
        "engagements",
        (
            Column("user_id", "BIGINT", doc="who acted"),
            Column("post_id", "BIGINT", nullable=True, doc="the post, for post actions"),
            Column("target_user_id", "BIGINT", nullable=True, doc="the account, for follows"),
            Column("action", "VARCHAR", values=ENGAGEMENT_ACTIONS),
            Column("ts", "TIMESTAMP"),
            Column(
                "via_third_party_app",
                "BOOLEAN",
                doc="the client reported itself as a third-party app (bought engagement often does, not always)",
            ),
        ),
        # An event log has no id of its own: the same actor doing the same action on the same
        # object at the same instant is one event.
        key=("user_id", "action", "post_id", "target_user_id", "ts"),
        references={
            "user_id": ("users", "user_id"),
            "post_id": ("posts", "post_id"),
            "target_user_id": ("users", "user_id"),
        },
        doc="The public event log that popularity signals count, including engagement from outside any logged impression.",
    ),
}

#: Tables in dependency order (referenced tables first).
TABLE_ORDER: tuple[str, ...] = ("users", "follows", "posts", "impressions", "engagements")


def polars_schema(table: str) -> dict:
    """The polars dtypes of a canonical table's columns, in order.

    Example
    -------
    >>> polars_schema("users")["created_at"]
    Datetime(time_unit='us', time_zone=None)
    """
    import polars as pl

    types = {
        "BIGINT": pl.Int64,
        "INTEGER": pl.Int32,
        "DOUBLE": pl.Float64,
        "BOOLEAN": pl.Boolean,
        "VARCHAR": pl.String,
        "TIMESTAMP": pl.Datetime("us"),
    }
    return {c.name: types[c.type] for c in TABLES[table].columns}


def ddl(table: Table) -> str:
    """The ``CREATE TABLE IF NOT EXISTS`` statement of a canonical table."""
    cols = ",\n  ".join(
        f'"{c.name}" {c.type}' + ("" if c.nullable else " NOT NULL") for c in table.columns
    )
    return f'CREATE TABLE IF NOT EXISTS "{table.name}" (\n  {cols}\n)'


def schema_ddl() -> list[str]:
    """All statements that create an empty v1 store (tables and the ``schema_version`` table)."""
    stmts = [ddl(TABLES[t]) for t in TABLE_ORDER]
    stmts.append(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL)"
    )
    return stmts
