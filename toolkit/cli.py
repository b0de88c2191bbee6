"""The ``feedlab`` command line: one subcommand per pipeline stage.

Every subcommand prints what it did; a problem with the input or the store (any
:class:`~toolkit.errors.FeedlabError`) is printed as a plain message with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from toolkit.errors import FeedlabError


def _cmd_synth(args: argparse.Namespace) -> int:
    from toolkit.synth import SynthConfig, build_world

    config = SynthConfig(n_users=args.users, days=args.days, history_days=args.history_days, seed=args.seed)
    summary = build_world(
        args.db, config, overwrite=args.overwrite, chunk_days=args.chunk_days, progress=not args.quiet
    )
    _print(summary, as_json=args.json)
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from toolkit.store.io import import_dir

    summary = import_dir(args.db, args.source, format=args.format, progress=not args.quiet)
    if args.json:
        _print(summary, as_json=True)
        return 0
    # notes (a log format's gaps: no authors, no positions, ...) one per line, not as a list
    _print({k: v for k, v in summary.items() if k != "notes"}, as_json=False)
    if summary.get("notes"):
        print("notes:")
        for note in summary["notes"]:
            print(f"  - {note}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    if args.partition_by:
        from toolkit.store.dataset import export_partitioned

        summary = export_partitioned(args.db, args.directory, partition_by=args.partition_by)
    else:
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


def _cmd_train(args: argparse.Namespace) -> int:
    from toolkit.predict import save_models, train_surface, train_surfaces
    from toolkit.store.schema import SURFACES

    if (args.db is None) == (args.data is None):
        raise FeedlabError("give the store as --db FILE or the dataset as --data DIR (one of them)")
    source = args.db if args.db is not None else args.data
    surfaces = list(SURFACES) if args.surface == "all" else [args.surface]
    pool = _pool_argument(args.pool)
    options = dict(
        train_until=args.train_until,
        params=None if args.learning_rate is None else {"eta": args.learning_rate},
        **({} if args.max_rounds is None else {"max_rounds": args.max_rounds}),
        progress=not args.quiet,
    )
    if args.dask is not None and args.chunked:
        raise FeedlabError("--chunked is the one-machine path for logs larger than memory; with --dask the workers already featurize a day at a time")
    if args.dask is not None:
        from toolkit.predict.distributed import dask_client, train_surface_dask

        # every worker opens the store (or dataset) read-only itself, at the same path
        with dask_client(args.dask, verbose=not args.quiet) as client:
            trained = {s: train_surface_dask(source, s, client=client, pool=pool, **options) for s in surfaces}
    else:
        # read-only: training reads the store and writes only the model files beside it
        from toolkit.store import open_source

        con = open_source(source)
        try:
            if args.chunked:
                trained = {s: train_surface(con, s, pool=pool, chunk=timedelta(days=1), **options) for s in surfaces}
            else:
                trained = train_surfaces(con, surfaces, pool=pool, **options)
        finally:
            con.close()
    folders = {s: save_models(t, source) for s, t in trained.items()}
    if args.json:
        out = [
            {
                "surface": s,
                "models": str(folders[s]),
                "window": t.window,
                "rows": t.rows,
                "pooled_surfaces": t.pooled_surfaces,
                "best_iteration": t.best_iteration,
                "actions": t.metrics,
            }
            for s, t in trained.items()
        ]
        _print_json(out[0] if args.surface != "all" else out)
        return 0
    for s, t in trained.items():
        w = t.window
        pooled = f", with the earlier rows of {', '.join(t.pooled_surfaces)}" if t.pooled_surfaces else ""
        print(f"{s}: trained on {w['train_start']} to {w['train_until']}{pooled} "
              f"(early stopping from {w['valid_start']}), tested on {w['test_start']} to {w['test_end']}")
        _print_metrics(t.metrics_frame())
        print(f"models saved in {folders[s]}")
    return 0


def _pool_argument(value: str | None) -> list[str] | None:
    """``--pool``: None (the default pool of each surface), 'none' (each surface alone) or a comma-separated list."""
    from toolkit.store.schema import SURFACES

    if value is None:
        return None
    if value == "none":
        return []
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in SURFACES]
    if unknown or not names:
        raise FeedlabError(f"--pool takes 'none' or surfaces separated by commas ({', '.join(SURFACES)}); got {value!r}")
    return names


def _cmd_predict(args: argparse.Namespace) -> int:
    from toolkit.predict import load_models, parse_time, predict_actions
    from toolkit.signals.features import training_frame
    from toolkit.store import connect

    models = load_models(args.db, args.surface)
    start = parse_time(args.from_) if args.from_ is not None else models.train_until
    con = connect(args.db, read_only=True)
    try:
        frame = training_frame(con, args.surface, start=start)
    finally:
        con.close()
    preds = predict_actions(models, frame).select("impression_id", *(f"p_{a}" for a in models.actions))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    preds.write_parquet(args.out)
    _print(
        {"surface": args.surface, "from": start, "rows": preds.height, "actions": ", ".join(models.actions), "out": args.out},
        as_json=args.json,
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from toolkit.predict import evaluate_actions, load_models
    from toolkit.signals.features import training_frame
    from toolkit.store import connect

    models = load_models(args.db, args.surface)
    con = connect(args.db, read_only=True)
    try:
        # the test period: every impression at or after the models' train_until
        frame = training_frame(con, args.surface, start=models.train_until)
    finally:
        con.close()
    if frame.height == 0:
        raise FeedlabError(f"no {args.surface} impressions at or after {models.train_until} to evaluate on")
    models.metrics = evaluate_actions(models, frame)
    if args.json:
        _print_json({"surface": args.surface, "actions": models.metrics})
        return 0
    print(f"{args.surface}: {frame.height} impressions from {models.train_until} on")
    _print_metrics(models.metrics_frame())
    return 0


def _cmd_rank(args: argparse.Namespace) -> int:
    from toolkit.rank import parse_weights, rank

    rules = _rules_off(args.rules_off)
    top = rank(
        args.db, args.surface, args.user, at=args.at, weights=parse_weights(args.weights or ""), rules=rules or None, k=args.k
    )
    if args.json:
        _print_json({"surface": args.surface, "user_id": args.user, "items": top.to_dicts()})
        return 0
    if top.height == 0:
        print(f"no {args.surface} candidates for user {args.user}")
        return 0
    _print_ranking(top)
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from toolkit.explain import explain_post, explain_reach
    from toolkit.rank import parse_weights

    rules = _rules_off(args.rules_off)
    weights = parse_weights(args.weights or "")
    if args.user is not None and args.reach:
        raise FeedlabError("give --user to explain the post for one viewer, or --reach to explain its reach, not both")
    if args.user is None and not args.reach:
        raise FeedlabError("give --user ID to explain the post for one viewer, or --reach to explain how far it reaches")
    if args.reach:
        out = explain_reach(
            args.db, args.surface, args.post, at=args.at, weights=weights, rules=rules or None, k=args.k,
            max_viewers=args.max_viewers, seed=args.seed,
        )  # fmt: skip
        if args.json:
            _print_json(out)
            return 0
        print("\n".join(out["sentences"]))
        print()
        print(f"{'rule':<28} {'reach without':>13} {'lost':>6}")
        for r in out["by_rule"]:
            print(f"{r['rule']:<28} {r['reach_without']:>13} {r['lost']:>6}")
        return 0
    out = explain_post(args.db, args.surface, args.user, args.post, at=args.at, weights=weights, rules=rules or None, k=args.k)
    if args.json:
        _print_json(out)
        return 0
    print("\n".join(out["sentences"]))
    print()
    print(f"{'action':<16} {'weight':>8} {'probability':>12} {'contribution':>13}")
    for c in out["contributions"]:
        p = "-" if c["probability"] is None else f"{c['probability']:.4f}"
        print(f"{c['action']:<16} {c['weight']:>8g} {p:>12} {c['contribution']:>+13.4f}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from toolkit.rank import parse_weights
    from toolkit.rank.policy import compare_policies

    out = compare_policies(
        args.db, args.surface, weights_a=parse_weights(args.weights_a or ""), weights_b=parse_weights(args.weights_b or ""),
        viewers=args.viewers, seed=args.seed, k=args.k,
    )  # fmt: skip
    if args.json:
        _print_json(out)
        return 0
    keys = ["ndcg_at_k", "expected_value_per_session", "distinct_authors_at_k", "author_exposure_gini",
            "small_creator_exposure_share", "flagged_share_at_k"]  # fmt: skip
    print(f"{args.surface}: {out['a']['sessions']} logged sessions from {out['from']}")
    print(f"{'':32}{'policy a':>12}{'policy b':>12}")
    for key in keys:
        print(f"{key:32}{out['a'][key]:>12.4f}{out['b'][key]:>12.4f}")
    c = out["comparison"]
    print(f"kendall tau {c['kendall_tau']:.3f}, top-{args.k} overlap {c['top_k_overlap']:.3f}")
    for m in c["biggest_movers"]:
        print(f"  session {m['session_id']}: post {m['post_id']} from {m['position_a']} to {m['position_b']}")
    return 0


def _cmd_integrity(args: argparse.Namespace) -> int:
    from toolkit.integrity import integrity_metrics, score_accounts, write_scores

    # score from a read-only connection, closed before the one write (write_scores opens read-write)
    from toolkit.store import connect

    con = connect(args.db, read_only=True)
    try:
        scores = score_accounts(con, at=args.at, seed=args.seed)
        has_labels = con.execute("select count(*) from users where is_inauthentic is not null").fetchall()[0][0] > 0
        metrics = integrity_metrics(scores, con) if has_labels else None
    finally:
        con.close()
    written = write_scores(args.db, scores)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        scores.write_parquet(args.out)
    summary = {
        "accounts": written,
        "flagged": int(scores["flagged"].sum()),
        "flagged_givers": int((scores["flagged"] & (scores["role"] == "giver")).sum()),
        "flagged_receivers": int((scores["flagged"] & (scores["role"] == "receiver")).sum()),
        "table": "integrity_scores",
        "out": None if args.out is None else str(args.out),
        "metrics": metrics,
    }
    if args.json:
        _print_json(summary)
        return 0
    print(f"scored {written} accounts: {summary['flagged']} flagged ({summary['flagged_givers']} givers, "
          f"{summary['flagged_receivers']} receivers); written to integrity_scores" + (f" and {args.out}" if args.out else ""))
    if metrics is None:
        print("no labelled accounts (users.is_inauthentic is null everywhere): no metrics")
        return 0
    print(f"metrics on {metrics['evaluated_on']} accounts; genuine accounts flagged overall: {metrics['genuine_flagged_share']:.4f}")
    print(f"{'group':<16}{'n':>6}{'pos':>6}{'pr_auc':>8}{'precision':>10}{'recall':>8}{'fpr':>8}{'rec@1%':>8}")
    rows = [("overall", metrics["overall"]), *metrics["by_role"].items(), *metrics["by_strategy"].items()]
    for name, m in rows:
        vals = [m["pr_auc"], m["precision"], m["recall"], m["false_positive_rate"], m["recall_at_1pct_fpr"]]
        cells = "".join(f"{'-' if v != v else f'{v:.3f}':>{w}}" for v, w in zip(vals, (8, 10, 8, 8, 8)))
        print(f"{name:<16}{m['n']:>6}{m['positives']:>6}{cells}")
    return 0


def _positive(kind: type) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` above 0."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be above 0 (got {text})")
        return value

    return parse


def _rules_off(text: str | None) -> dict[str, bool]:
    """``--rules-off a,b`` as rule overrides ``{"a": False, "b": False}``."""
    return {name.strip(): False for name in (text or "").split(",") if name.strip()}


def _print_ranking(top) -> None:
    """One line per shown post: position, post, author, score, the largest contributions, the rules."""
    import polars as pl

    contributions = [c for c in top.columns if c.startswith("contribution_")]
    lines = top.with_columns(
        pl.concat_list(
            pl.struct(pl.lit(c.removeprefix("contribution_")).alias("a"), pl.col(c).alias("v")) for c in contributions
        ).alias("_c")
    )
    for row in lines.iter_rows(named=True):
        parts = sorted(row["_c"], key=lambda x: -abs(x["v"]))[:3]
        why = ", ".join(f"{p['a']} {p['v']:+.3f}" for p in parts)
        rules = "; ".join(r["effect"] for r in row["rules"]) or "-"
        author = "?" if row["author_id"] is None else row["author_id"]  # unknown: a log without author ids
        print(f"{row['position']:>3}  post {row['post_id']:<8} by {author:<6} score {row['score']:.4f}  ({why})  rules: {rules}")


def _print_metrics(table) -> None:
    """The metrics table, one aligned line per action (polars' table, every row and column)."""
    import polars as pl

    columns = ["action", "auc", "pr_auc", "logloss", "rce", "ece", "base_rate", "oracle_auc", "auc_gap", "n"]
    with pl.Config(
        tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True, float_precision=4,
    ):
        print(table.select(columns))


def _json_safe(obj):
    """JSON has no NaN or infinity: an undefined metric is written as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _print_json(obj: dict) -> None:
    print(json.dumps(_json_safe(obj), indent=2, default=str, allow_nan=False))


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
    p.add_argument("--users", type=int, default=5000, help="accounts, genuine or not (default 5000)")
    p.add_argument("--days", type=int, default=14, help="simulated days (default 14)")
    p.add_argument(
        "--history-days", type=int, default=0,
        help="of the days, how many come first as history only: features read them, models never train or test on them (default 0)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--chunk-days", type=int, default=1, help="days generated per write (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("import", "Validate and import a directory of tables (or a log) into the store.", _cmd_import)
    p.add_argument(
        "source", type=Path,
        help="--format canonical: a directory with {users,follows,posts,impressions,engagements}.{parquet,csv}; "
        "--format kuairand: a KuaiRand log file (tab-separated, one row per impression)",
    )  # fmt: skip
    p.add_argument("--format", default="canonical", help="input format: canonical (a directory of tables, the default) or kuairand (a KuaiRand log file)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("export", "Write every table of the store as Parquet into a directory.", _cmd_export)
    p.add_argument("directory", type=Path)
    p.add_argument("--partition-by", choices=["day"], help="write a dataset the pipeline reads directly: impressions and engagements "
                   "in hive day partitions, with dataset.json (see docs/scale.md)")

    add("info", "Row counts per table and the time span of the store.", _cmd_info)

    from toolkit.store.schema import SURFACES

    p = add("train", "Train one action model per action of a surface (or all), save them beside the store, print test metrics.", _cmd_train, db_required=False)
    p.add_argument("--data", type=Path, metavar="DIR", help="train on a Parquet dataset folder (feedlab export --partition-by day) instead of --db")
    p.add_argument("--surface", required=True, choices=[*SURFACES, "all"], help="the surface whose models to train, or all of them")
    p.add_argument("--pool", metavar="SURFACES|none", help="surfaces whose earlier rows also train the models, separated by commas "
                   "(default: those of the same kind, Feed with Stories and Explore with Reels; none: the surface's own rows only; "
                   "see docs/predictors.md)")
    p.add_argument("--train-until", metavar="DATE", help="train on impressions before this date or time, test on the rest (default: the last 20%% of days)")
    p.add_argument("--learning-rate", type=_positive(float), metavar="ETA", help="XGBoost's eta (default: the toolkit's, see docs/predictors.md); higher needs fewer rounds")
    p.add_argument("--max-rounds", type=_positive(int), metavar="N", help="most boosting rounds per action; early stopping usually ends sooner (default: the toolkit's)")
    p.add_argument("--chunked", action="store_true", help="for logs larger than memory: featurize a day at a time into a temporary "
                   "Parquet file and train from it batch by batch with XGBoost's external memory (docs/scale.md)")
    p.add_argument(
        "--dask", metavar="ADDRESS|local",
        help="train on a Dask cluster with xgboost.dask: 'local' starts 2 worker processes here, tcp://host:8786 joins a "
        "running scheduler; every worker must see the store at the same path (see docs/predictors.md)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("predict", "Write predicted action probabilities of a surface's impressions to Parquet.", _cmd_predict)
    p.add_argument("--surface", required=True, choices=SURFACES)
    p.add_argument("--from", dest="from_", metavar="DATE", help="impressions at or after this date or time (default: the models' train-until)")
    p.add_argument("--out", type=Path, required=True, help="Parquet file to write (impression_id, p_<action>...)")

    p = add("evaluate", "Score a surface's saved models on the impressions at or after their train-until.", _cmd_evaluate)
    p.add_argument("--surface", required=True, choices=SURFACES)

    p = add("rank", "Rank a viewer's candidates on a surface and say why each post is where it is.", _cmd_rank)
    p.add_argument("--surface", required=True, choices=SURFACES)
    p.add_argument("--user", type=int, required=True, help="the viewer's user_id")
    p.add_argument("--weights", metavar="A=W,...", help="action weights over the surface's defaults, e.g. like=2,comment=5")
    p.add_argument("--rules-off", metavar="RULE,...", help="rules to switch off, e.g. author_diversity,close_friends_boost")
    p.add_argument("--at", metavar="TIME", help="rank as of this date or time (default: just after the store's last event)")
    p.add_argument("--k", type=int, default=20, help="posts to show (default 20)")

    p = add("explain", "Say why a post is where it is for a viewer (--user), or what limited its reach (--reach).", _cmd_explain)
    p.add_argument("--surface", required=True, choices=SURFACES)
    p.add_argument("--post", type=int, required=True, help="the post's post_id")
    p.add_argument("--user", type=int, help="the viewer's user_id (leave out with --reach)")
    p.add_argument("--reach", action="store_true", help="explain the post's reach over its audience instead of one viewer")
    p.add_argument("--weights", metavar="A=W,...", help="action weights over the surface's defaults, e.g. like=2,comment=5")
    p.add_argument("--rules-off", metavar="RULE,...", help="rules to switch off, e.g. author_diversity")
    p.add_argument("--at", metavar="TIME", help="as of this date or time (default: just after the store's last event)")
    p.add_argument("--k", type=int, default=50, help="posts each viewer is shown (default 50)")
    p.add_argument("--max-viewers", type=int, default=300, help="with --reach: sample at most this many viewers (default 300)")
    p.add_argument("--seed", type=int, default=0, help="with --reach: seed of the viewer sample (default 0)")

    p = add("compare", "Score two ranking policies on the same logged sessions and compare their orders.", _cmd_compare)
    p.add_argument("--surface", required=True, choices=SURFACES)
    p.add_argument("--weights-a", metavar="A=W,...", help="policy a: weights over the surface's defaults (default: the defaults)")
    p.add_argument("--weights-b", metavar="A=W,...", help="policy b: weights over the surface's defaults")
    p.add_argument("--viewers", type=int, default=200, help="viewers sampled from the test period (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the viewer sample")
    p.add_argument("--k", type=int, default=10, help="top-k of the metrics (default 10)")

    p = add("integrity", "Score every account for inauthentic engagement, store integrity_scores, print the metrics.", _cmd_integrity)
    p.add_argument("--out", type=Path, help="also write the scores to this Parquet file")
    p.add_argument("--at", metavar="TIME", help="use only events before this date or time (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the detector's split and model (default 0)")
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
