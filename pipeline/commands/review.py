"""``counterfactory review OUT`` (the web app, or ``--stats``) and ``counterfactory review apply OUT``."""

from __future__ import annotations

import getpass
import re
import shlex
import sys

from schemas.layout import REVIEWS_DIR

APPLY = "review-apply"  # `review apply ...` is parsed as this command (cli.main rewrites it)


def _default_reviewer() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", getpass.getuser() or "reviewer")[:64] or "reviewer"


def add_parser(sub) -> None:
    review = sub.add_parser("review", help="review sets in a browser (127.0.0.1), or --stats for agreement; "
                                           "`review apply OUT` applies the verdicts")
    review.add_argument("output")
    review.add_argument("--reviewer", default=None, help=f"your name: verdicts go to OUT/{REVIEWS_DIR}/NAME.parquet "
                                                          "(default: the login name)")
    review.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free port)")
    review.add_argument("--stats", action="store_true",
                        help="print per-reviewer counts, agreement (Cohen's/Fleiss' kappa) and disagreements")
    review.set_defaults(func=cmd_review)
    apply = sub.add_parser(APPLY, prog="counterfactory review apply",
                           help="apply the verdicts: rewrite the shards that changed, record verdicts in the manifest")
    apply.add_argument("output")
    apply.add_argument("--verdicts", nargs="+", default=[], metavar="FILE",
                       help="more verdicts: CSV or parquet with set_id, member_id, verdict, reason, reviewer, time")
    apply.add_argument("--policy", default="any-reject", choices=("any-reject", "majority"),
                       help="any-reject: one reviewer's reject removes a member; majority: more rejects than accepts")
    apply.set_defaults(func=cmd_apply)


def cmd_review(args) -> int:
    from pipeline.output.storage import Storage
    from pipeline.review.verdicts import check_reviewer, latest, output_verdicts

    if args.stats:
        from pipeline.review.agreement import describe

        print(describe(latest(output_verdicts(Storage(args.output)))))
        return 0
    from pipeline.review.server import serve

    reviewer = check_reviewer(args.reviewer or _default_reviewer())

    def ready(url: str) -> None:
        print(f"review: {url}  (reviewer {reviewer}; verdicts saved to {args.output}/{REVIEWS_DIR}/{reviewer}.parquet; "
              "Ctrl-C to stop)", flush=True)

    serve(args.output, reviewer, args.port, ready=ready)
    return 0


def cmd_apply(args) -> int:
    from pipeline.review.apply import apply_review

    result = apply_review(args.output, files=args.verdicts, policy=args.policy)
    print(f"review apply: {result.verdicts} verdicts from {len(result.reviewers)} reviewer(s) "
          f"({', '.join(result.reviewers) or 'none'}), policy {args.policy}")
    print(f"  {result.sets_vetoed} set(s) and {result.members_vetoed} member(s) vetoed in total; "
          f"{len(result.shards_rewritten)} shard(s) rewritten"
          + (f" ({', '.join(result.shards_rewritten)})" if result.shards_rewritten else "")
          + f", {len(result.manifests_rewritten)} manifest(s) updated", file=sys.stdout)
    print(f"check it: counterfactory verify {shlex.quote(args.output)}")
    return 0
