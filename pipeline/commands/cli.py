"""Command line: ``counterfactory run|plan|verify|report|evaluate|export|asd|review|calibrate|tiny-models`` (same as
``python -m pipeline``)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

# Read at import time by huggingface_hub: set before anything imports it. Unset means offline here;
# a cluster that may download sets HF_HUB_OFFLINE=0 explicitly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from schemas.records import STATUS_ERROR, STATUS_OK  # noqa: E402


def _summary_lines(summary) -> list[str]:
    stats = summary.stats
    return [
        "",
        f"output:     {summary.output}",
        f"seeds:      {stats['seeds']['total']} listed, {stats['seeds'][STATUS_OK]} decoded, "
        f"{stats['seeds'][STATUS_ERROR]} errors",
        f"sets:       {', '.join(f'{k} {v}' for k, v in stats['sets'].items())}",
        f"candidates: {', '.join(f'{k} {v}' for k, v in stats['candidates'].items())}",
        f"shards:     {stats['shards']} tar(s) holding {stats['samples']} accepted member images of "
        f"{stats['sets'].get('accepted', 0)} sets"
        + (f"; {len(summary.skipped_shards)} were already complete" if summary.skipped_shards else ""),
        f"parity:     {_parity_line(stats)}",
        f"time:       {summary.seconds:.1f} s",
        f"check it:   counterfactory verify {shlex.quote(summary.output)}",
    ]


def _parity_line(stats: dict) -> str:
    """The four-fifths rule's verdict over all concepts: the values the filter accepted at under 4/5 of the best."""
    found = [f for f in stats.get("parity_flagged") or [] if f["scope"].startswith("all/")]
    if not found:
        return "no attribute value accepted at under four fifths of the best (stats.json: parity)"
    listed = ", ".join(f"{f['value']} on {f['scope'].split('/', 1)[1]} ({f['ratio_to_best']:.2f})" for f in found[:4])
    more = f" and {len(found) - 4} more" if len(found) > 4 else ""
    return f"{len(found)} value(s) under four fifths of the best acceptance: {listed}{more} (see README.md)"


class UsageError(ValueError):
    """The command line itself is wrong (exit 2, as argparse's own usage errors)."""


def parse_overrides(pairs: list[str]) -> dict:
    """``--set edit.steps=10`` -> ``{"edit.steps": 10}``; values are read as YAML."""
    import yaml

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects FIELD=VALUE, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = str(exc).splitlines()[0]
            raise UsageError(f"--set {key.strip()}: the value {value!r} is not valid YAML ({problem})") from None
    return out


def cmd_run(args) -> int:
    from pipeline.commands.native_log import native_stderr_to_file
    from pipeline.config.loading import environment_overrides, load_config
    from pipeline.execution.run import run_pipeline

    overrides = {**environment_overrides(), **parse_overrides(args.set)}
    if args.verbose:
        overrides["ray.progress_bars"] = True
    loaded = load_config(args.config, overrides)
    with native_stderr_to_file(enabled=loaded.config.ray.progress_bars is not True):  # Ray's C++ lines: --verbose
        summary = run_pipeline(loaded, output=args.output, limit=args.limit, report=False if args.no_report else None)
    print("\n".join(_summary_lines(summary)))
    return 0


def _pass_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}")
    return value


def cmd_plan(args) -> int:
    from pipeline.commands.cost import describe_cost, estimate, load_throughput
    from pipeline.commands.plan import describe
    from pipeline.config.loading import load_config

    loaded = load_config(args.config, parse_overrides(args.set))
    text, seeds = describe(loaded, seeds=args.seeds, limit=args.limit, pass_rate=args.pass_rate)
    print(text)
    measured = load_throughput(args.throughput) if args.throughput else None
    try:
        print(describe_cost(estimate(loaded, seeds, args.gpus, args.gpu_type, measured, args.pass_rate), args.gpu_type))
    except ValueError as exc:
        print(f"plan: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_report(args) -> int:
    from pipeline.report.build import write_report
    from pipeline.output.storage import Storage

    written = write_report(Storage(args.output), max_sets=args.max_sets)
    print(f"report: wrote {', '.join(written)} into {args.output}")
    return 0


def cmd_verify(args) -> int:
    from pipeline.output.verify import verify_output

    problems, counts = verify_output(args.output)
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        print(f"verify: {len(problems)} problem(s) in {args.output}")
        return 1
    print(f"verify: OK {args.output}: {counts['shards']} shards, {counts['samples']} member samples in "
          f"{counts['sets']} sets, "
          f"{counts['manifest_rows']} manifest rows")
    return 0


def cmd_evaluate(args) -> int:
    from pipeline.trainers.evaluate import DEFAULT_PROMPT, evaluate_output, format_table, to_json

    prompt = args.prompt or DEFAULT_PROMPT
    rows = evaluate_output(args.output, args.clip, pretrained=args.pretrained, prompt=prompt, device=args.device)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            handle.write(to_json(rows, args.clip, prompt) + "\n")
        print(f"evaluate: wrote {args.json}")
    return 0


def cmd_tiny_models(args) -> int:
    from pipeline.testing.tiny_models import main

    return main(args.names)


def parser() -> argparse.ArgumentParser:
    from pipeline.commands import asd, calibrate, export, review

    p = argparse.ArgumentParser(prog="counterfactory", description="Counterfactual image sets at scale, on Ray.",
                                epilog="Any command takes --debug: print the traceback of an error, not only its line.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a config end to end")
    run.add_argument("config")
    run.add_argument("--limit", type=int, default=None, help="use only the first N seeds")
    run.add_argument("--output", default=None, help="output path or URI (overrides run.output)")
    run.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field (repeatable)")
    run.add_argument("--no-report", action="store_true", help="skip preview.html and plots at the end")
    run.add_argument("--verbose", action="store_true",
                     help="Ray's own log lines too, and Ray Data's progress bars and execution logs (those shown "
                          "by default on a terminal)")
    run.set_defaults(func=cmd_run)
    plan = sub.add_parser("plan", help="dry run: stage graph, resources and work counts; loads no model")
    plan.add_argument("config")
    plan.add_argument("--seeds", type=int, default=None, help="size the run for N seeds instead of listing input")
    plan.add_argument("--limit", type=int, default=None)
    plan.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field (repeatable)")
    plan.add_argument("--gpus", type=int, default=8, help="GPUs the run gets (for wall time)")
    plan.add_argument("--gpu-type", default="h100", help="h100, h200, a100, l40s, a10g, l4")
    plan.add_argument("--throughput", default=None, help="JSON of measured images/s: {backend: {gpu_type: rate}}")
    plan.add_argument("--pass-rate", type=_pass_rate, default=None,
                      help="first_pass: the assumed chance a candidate passes the filter, in (0, 1], to price rounds")
    report = sub.add_parser("report", help="write preview.html, plots, README.md and croissant.json into OUT")
    report.add_argument("output")
    report.add_argument("--max-sets", type=int, default=500)
    report.set_defaults(func=cmd_report)
    plan.set_defaults(func=cmd_plan)
    verify = sub.add_parser("verify", help="check an output: shards, manifests, sizes.json, keys")
    verify.add_argument("output")
    verify.set_defaults(func=cmd_verify)
    evaluate = sub.add_parser("evaluate", help="MaxSkew@K of a CLIP model per concept and axis over OUT")
    evaluate.add_argument("output")
    evaluate.add_argument("--clip", required=True, help="open_clip name (ViT-L-14), hf-hub:ID, local dir or tiny:clip")
    evaluate.add_argument("--pretrained", default=None, help="open_clip pretrained tag, with a plain model name")
    evaluate.add_argument("--prompt", default=None, help='neutral prompt, {concept} filled (default "a photo of a {concept}")')
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--json", default=None, help="also write the results as JSON here")
    evaluate.set_defaults(func=cmd_evaluate)
    export.add_parser(sub)
    asd.add_parser(sub)
    review.add_parser(sub)
    calibrate.add_parser(sub)
    tiny = sub.add_parser("tiny-models", help="build the tiny offline models into the cache")
    tiny.add_argument("names", nargs="*")
    tiny.set_defaults(func=cmd_tiny_models)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run a command; a failure is one line on stderr and an exit code (commands.exit_codes), the traceback
    only with ``--debug`` (anywhere on the command line)."""
    from pipeline.commands import exit_codes
    from pipeline.config.errors import ConfigError
    from pipeline.export.members import ExportError
    from pipeline.output.manifest import ManifestError
    from pipeline.output.state import OutputRefused
    from pipeline.commands.review import APPLY
    from pipeline.review.verdicts import ReviewError
    from pipeline.trainers.member_table import TableError
    from pipeline.testing import tiny_models  # noqa: F401 (registers tiny:NAME for configs and --clip)

    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if argv[:2] == ["review", "apply"]:
        argv = [APPLY, *argv[2:]]
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        error, code, line = exc, exit_codes.CONFIG_ERROR, f"config error: {exc}"
    except UsageError as exc:
        error, code, line = exc, exit_codes.CONFIG_ERROR, f"usage error: {exc}"
    except (OutputRefused, ManifestError) as exc:
        error, code, line = exc, exit_codes.OUTPUT_REFUSED, f"output refused: {exc}"
    except (ExportError, TableError, ReviewError) as exc:
        error, code, line = exc, exit_codes.BAD_INPUT_FILE, f"error: {exc}"
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        code, line = exit_codes.classify(exc, getattr(args, "output", None))
        error, line = exc, f"error: {line}" + ("" if debug else "  (--debug shows the traceback)")
    if debug:
        import traceback

        traceback.print_exception(error)
    print(line.replace("\n", " "), file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
