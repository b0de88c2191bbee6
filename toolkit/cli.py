"""The ``feedlab`` command line: one subcommand per pipeline stage.

Every subcommand prints what it did; a problem with the input or the store (any
:class:`~toolkit.errors.FeedlabError`) is printed as a plain message with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from toolkit.errors import FeedlabError


def _cmd_synth(args: argparse.Namespace) -> int:
    from toolkit.synth import SynthConfig, build_world

    config = SynthConfig(n_users=args.users, days=args.days, seed=args.seed)
    summary = build_world(
        args.db, config, overwrite=args.overwrite, chunk_days=args.chunk_days, progress=not args.quiet
    )
    _print(summary, as_json=args.json)
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from toolkit.store.io import import_dir

    summary = import_dir(args.db, args.source, format=args.format, progress=not args.quiet)
    _print(summary, as_json=args.json)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from toolkit.store.io import export_dir

    summary = export_dir(args.db, args.directory)
    _print(summary, as_json=args.json)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from toolkit.store import connect
    from toolkit.store.io import store_info

    con = connect(args.db, read_only=True)
    try:
        _print(store_info(con), as_json=args.json)
    finally:
        con.close()
    return 0


def _print(obj: dict, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, indent=2, default=str))
        return
    for key, value in obj.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k}: {v}")
        else:
            print(f"{key}: {value}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``feedlab`` command."""
    parser = argparse.ArgumentParser(prog="feedlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str, func, *, db_required: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--db", type=Path, required=db_required, help="DuckDB store file")
        p.add_argument("--json", action="store_true", help="print the summary as JSON")
        p.set_defaults(func=func)
        return p

    p = add("synth", "Build a simulated world with ground truth into a new store.", _cmd_synth)
    p.add_argument("--users", type=int, default=5000, help="genuine users (default 5000)")
    p.add_argument("--days", type=int, default=14, help="simulated days (default 14)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--chunk-days", type=int, default=1, help="days generated per write (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("import", "Validate and import a directory of tables (or a log) into the store.", _cmd_import)
    p.add_argument("source", type=Path, help="directory with {users,follows,posts,impressions,engagements}.{parquet,csv}")
    p.add_argument("--format", default="canonical", help="input format (default canonical)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("export", "Write every table of the store as Parquet into a directory.", _cmd_export)
    p.add_argument("directory", type=Path)

    add("info", "Row counts per table and the time span of the store.", _cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``feedlab`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FeedlabError as err:
        print(f"feedlab {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"feedlab {args.command}: interrupted; the store was left as it was", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
