"""``counterfactory calibrate OUT``: the filter thresholds that best agree with the human reviewers.

1. The members' verdicts as the review package reads them (``review apply``'s reading: the verdict that stands
   per reviewer, a set verdict for each member of the set, a reviewer's reject outweighing their accept), then
   the majority of the reviewers per member; a tie is dropped.
2. Each decided member joined to its manifest row as the review page shows it (pipeline/review/catalog.py): the
   candidate in the shards, or that was before ``review apply`` took it out.
3. Per check, overall and per attribute value: the threshold among the midpoints between consecutive distinct
   scores, and one that passes every score, that agrees best with the reviewers (passes == accepted); a tie goes
   to the one closest to the run's own threshold (run.json), else to the one that passes most. A group with
   fewer than ``--min-verdicts`` verdicts, or verdicts of one kind only, gets none.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from pipeline.output.storage import Storage
from pipeline.review.apply import member_votes
from pipeline.review.catalog import Catalog
from pipeline.review.verdicts import ReviewError, check_known, latest, output_verdicts
from schemas.layout import MANIFEST_DIR, REVIEWS_DIR, RUN_FILE
from schemas.records import STATUS_ACCEPTED, VERDICT_ACCEPT, VERDICT_REJECT, in_shards

DEFAULT_MIN_VERDICTS = 20
ALL = "all"  # the group of every verdict; the others are "attribute=value"


@dataclass(frozen=True)
class Check:
    name: str  # the manifest's score column
    config: tuple[str, ...]  # the config field of its threshold
    maximum: bool = False  # pass when |score| <= threshold; otherwise when score >= threshold


CHECKS = (
    *(Check(n, ("filter", "thresholds", n)) for n in ("text_image", "directional", "image_image", "attribute_margin")),
    *(Check(n, ("filter", "judge", "thresholds", n)) for n in ("judge_attribute", "judge_concept", "judge_scene")),
    Check("delta_l", ("filter", "drift", "max_delta_l"), maximum=True),
    Check("delta_hue", ("filter", "drift", "max_delta_hue"), maximum=True),
)


class CalibrationError(ReviewError):
    """An output that cannot be calibrated (no verdicts, an unreadable file); one line says which (exit 4)."""


@dataclass
class Result:
    check: str
    group: str  # ALL or "attribute=value"
    verdicts: int
    accepts: int
    threshold: float | None = None  # None: none set, ``note`` says why
    text: str | None = None  # the threshold as written (as many decimals as it needs)
    agreement: float | None = None
    current: float | None = None  # the run's own threshold (run.json), and its agreement on the same verdicts
    current_agreement: float | None = None
    note: str | None = None


@dataclass
class Calibration:
    output: str
    min_verdicts: int
    reviewers: list[str]
    members: int  # decided members joined to a manifest row
    ties: int  # members the reviewers split evenly on: left out
    outside: int  # decided members not in the shards (the filter rejected them): left out
    results: list[Result] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # check -> why it has no scores


def _passes(check: Check, score: float, threshold: float) -> bool:
    return abs(score) <= threshold if check.maximum else score >= threshold


def _written(value: float, low: float, high: float) -> tuple[float, str]:
    """``value`` with the fewest decimals (at least 4) that keep it strictly between ``low`` and ``high``."""
    for decimals in range(4, 17):
        text = f"{value:.{decimals}f}"
        if low < float(text) < high:
            return float(text), text
    return value, repr(value)


def candidates(check: Check, scores: list[float]) -> list[tuple[float, str]]:
    """The thresholds worth trying: a midpoint between each two consecutive distinct values, and one that
    passes every value (below the lowest for a minimum, above the highest for a maximum)."""
    values = sorted({abs(s) if check.maximum else s for s in scores})
    out = [_written((a + b) / 2, a, b) for a, b in zip(values, values[1:])]
    if check.maximum:
        edge = math.ceil(values[-1] * 1e4) / 1e4
        out.append(_written(edge if edge > values[-1] else edge + 1e-4, values[-1], math.inf))
    else:
        edge = math.floor(values[0] * 1e4) / 1e4
        out.insert(0, _written(edge if edge < values[0] else edge - 1e-4, -math.inf, values[0]))
    return out


def _agreement_text(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def agreement(check: Check, samples: list[tuple[float, bool]], threshold: float) -> float:
    return sum(_passes(check, s, threshold) == accepted for s, accepted in samples) / len(samples)


def best_threshold(check: Check, samples: list[tuple[float, bool]], current: float | None) -> tuple[float, str, float]:
    """(threshold, as written, agreement): the best agreement; a tie goes to the one closest to ``current``,
    then to the one passing most (the lowest minimum, the highest maximum)."""
    scored = [(agreement(check, samples, t), t, text) for t, text in candidates(check, [s for s, _ in samples])]
    top = max(a for a, _, _ in scored)
    tied = [(t, text) for a, t, text in scored if a == top]
    permissive = (lambda t: -t) if check.maximum else (lambda t: t)
    t, text = min(tied, key=lambda c: (abs(c[0] - current) if current is not None else 0, permissive(c[0])))
    return t, text, top


def calibrate_group(check: Check, group: str, samples: list[tuple[float, bool]], min_verdicts: int,
                    current: float | None) -> Result:
    accepts = sum(accepted for _, accepted in samples)
    result = Result(check.name, group, len(samples), accepts, current=current)
    if current is not None and samples:
        result.current_agreement = agreement(check, samples, current)
    if len(samples) < min_verdicts:
        result.note = f"{len(samples)} verdicts: too few to set a threshold (needs {min_verdicts})"
    elif accepts in (0, len(samples)):
        kind = VERDICT_ACCEPT if accepts else VERDICT_REJECT
        result.note = f"{len(samples)} verdicts, all {kind}: a threshold needs accepts and rejects"
    else:
        result.threshold, result.text, result.agreement = best_threshold(check, samples, current)
    return result


def member_decisions(storage: Storage, members_of: dict[str, list[str]]) -> tuple[dict[tuple, str], int, list[str]]:
    """(set_id, member_id) -> the reviewers' majority verdict; the ties left out; the reviewers."""
    try:
        verdicts = output_verdicts(storage)
    except (OSError, pa.ArrowInvalid) as exc:
        raise CalibrationError(f"{storage.uri}: unreadable verdicts under {REVIEWS_DIR}/ "
                               f"({str(exc).splitlines()[0]})") from None
    if not verdicts:
        raise CalibrationError(f"{storage.uri}: no verdicts in {REVIEWS_DIR}/; review the sets first "
                               f"(counterfactory review {storage.uri})")
    check_known(verdicts, members_of)
    decided, ties = {}, 0
    for key, votes in member_votes(latest(verdicts), members_of).items():
        count = Counter(verdict for verdict, _reason in votes.values())
        if count[VERDICT_ACCEPT] != count[VERDICT_REJECT]:
            decided[key] = VERDICT_ACCEPT if count[VERDICT_ACCEPT] > count[VERDICT_REJECT] else VERDICT_REJECT
        ties += count[VERDICT_ACCEPT] == count[VERDICT_REJECT]
    return decided, ties, sorted({row["reviewer"] for row in verdicts})


def _run_config(storage: Storage) -> dict:
    if not storage.exists(RUN_FILE):
        return {}
    try:
        return json.loads(storage.read_bytes(RUN_FILE)).get("config") or {}
    except (ValueError, AttributeError) as exc:
        raise CalibrationError(f"{storage.uri}/{RUN_FILE}: unreadable ({exc})") from None


def current_threshold(config: dict, check: Check) -> float | None:
    node = config
    for part in check.config:
        node = node.get(part) if isinstance(node, dict) else None
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def calibrate(output: str, min_verdicts: int = DEFAULT_MIN_VERDICTS) -> Calibration:
    if min_verdicts < 1:
        raise CalibrationError(f"--min-verdicts {min_verdicts}: must be at least 1")
    storage = Storage(output)
    if not storage.exists():
        from stages.ingest.listing import InputUnreachable

        raise InputUnreachable(f"{output}: no such output folder")
    if not any(n.endswith(".parquet") for n in storage.list(MANIFEST_DIR)):
        raise CalibrationError(f"{output}: no manifests under {MANIFEST_DIR}/; is it a counterfactory output?")
    if not storage.exists(REVIEWS_DIR):
        raise CalibrationError(f"{output}: no {REVIEWS_DIR}/ folder; review the sets first (counterfactory review "
                               f"{output})")
    try:
        catalog = Catalog(storage)
    except ValueError as exc:  # output/manifest.py's ManifestError: unreadable, an unknown version, a crafted key
        raise CalibrationError(f"{output}: {exc}") from None
    decided, ties, reviewers = member_decisions(storage, catalog.members_of())
    rows, outside = [], 0
    for (set_id, member_id), verdict in sorted(decided.items()):
        entry = catalog.sets[set_id]
        row = entry["members"][member_id]  # or it was, until review apply took it out:
        if in_shards(row) or entry["status"] == row["status"] == STATUS_ACCEPTED:
            rows.append((row, verdict == VERDICT_ACCEPT))
        else:
            outside += 1
    found = Calibration(output, min_verdicts, reviewers, len(rows), ties, outside)
    config = _run_config(storage)
    columns = catalog.columns  # what the manifests hold: an older version's lack the newer scores
    for check in CHECKS:
        scored = [(row, accepted) for row, accepted in rows if row.get(check.name) is not None]
        if check.name not in columns:
            found.unavailable[check.name] = f"no {check.name} column in the manifest"
            continue
        if rows and not scored:
            found.unavailable[check.name] = f"no score for any of the {len(rows)} reviewed members (null)"
            continue
        groups: dict[str, list[tuple[float, bool]]] = {ALL: []}
        for row, accepted in scored:
            groups[ALL].append((row[check.name], accepted))
            for attribute, value in sorted(json.loads(row["attributes"] or "{}").items()):
                groups.setdefault(f"{attribute}={value}", []).append((row[check.name], accepted))
        current = current_threshold(config, check)
        for group in [ALL, *sorted(g for g in groups if g != ALL)]:
            found.results.append(calibrate_group(check, group, groups[group], min_verdicts, current))
    return found


def format_table(found: Calibration) -> str:
    lines = [f"calibrate {found.output}: {found.members} reviewed members in the shards (reviewers "
             f"{', '.join(found.reviewers)}); left out: {found.ties} tie(s), {found.outside} not in the shards",
             f"{'check':<17} {'pass':<5} {'group':<22} {'verdicts':>8} {'accept':>6} {'reject':>6} {'threshold':>10} "
             f"{'agreement':>9}  {'current':>8} {'agreement':>9}"]
    for r in found.results:
        check = next(c for c in CHECKS if c.name == r.check)
        head = f"{r.check:<17} {'|s|<=' if check.maximum else '>=':<5} {r.group:<22} {r.verdicts:>8} {r.accepts:>6} " \
               f"{r.verdicts - r.accepts:>6}"
        current = "" if r.current is None else f"{r.current:g}"
        if r.threshold is None:
            lines.append(f"{head} {r.note}" + (f"  (current {current}: {_agreement_text(r.current_agreement)})"
                                               if r.current is not None else ""))
        else:
            lines.append(f"{head} {r.text:>10} {_agreement_text(r.agreement):>9}  {current:>8} "
                         f"{_agreement_text(r.current_agreement):>9}")
    for name, why in found.unavailable.items():
        lines.append(f"{name:<17} not available: {why}")
    return "\n".join(lines)


def config_fragment(found: Calibration) -> str:
    """The overall thresholds as a YAML config fragment, each with its agreement; the per-value results as comments."""
    lines = [f"# counterfactory calibrate {found.output}: the thresholds that best agree with {found.members} "
             f"reviewed members ({', '.join(found.reviewers)})"]
    overall = [r for r in found.results if r.group == ALL and r.threshold is not None]
    by_check = {c.name: c for c in CHECKS}
    if overall:
        sets = " ".join(f"--set {'.'.join(by_check[r.check].config)}={r.text}" for r in overall)
        lines.append(f"# merge it into the run config, or: counterfactory run CONFIG {sets}")
    opened: tuple[str, ...] = ()
    for r in overall:
        path = by_check[r.check].config
        for depth, part in enumerate(path[:-1]):
            if opened[: depth + 1] != path[: depth + 1]:
                lines.append(f"{'  ' * depth}{part}:")
        opened = path[:-1]
        indent = "  " * len(opened)
        now = "" if r.current is None else f"; now {r.current:g}: {_agreement_text(r.current_agreement)}" + (
            " (no better)" if r.agreement <= r.current_agreement else "")
        lines.append(f"{indent}{path[-1]}: {r.text}  # agreement {r.agreement:.2f} on {r.verdicts} verdicts{now}")
        for g in found.results:
            if g.check == r.check and g.group != ALL:
                said = g.note if g.threshold is None else f"{g.text} (agreement {g.agreement:.2f} on {g.verdicts} verdicts)"
                lines.append(f"{indent}# {g.group}: {said}")
    unset = [r for r in found.results if r.group == ALL and r.threshold is None]
    for r in unset:
        lines.append(f"# {'.'.join(by_check[r.check].config)} not set: {r.note}")
    for name, why in found.unavailable.items():
        lines.append(f"# {'.'.join(by_check[name].config)} not set: not available: {why}")
    if not overall:
        lines.append("{}")
    return "\n".join(lines) + "\n"


def add_parser(sub) -> None:
    p = sub.add_parser("calibrate", help="the filter thresholds that best agree with the reviewers' verdicts")
    p.add_argument("output")
    p.add_argument("--min-verdicts", type=int, default=DEFAULT_MIN_VERDICTS, metavar="N",
                   help=f"set no threshold on fewer verdicts than this (default {DEFAULT_MIN_VERDICTS})")
    p.add_argument("--write", default=None, metavar="FILE", help="write the YAML config fragment here, not to stdout")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args) -> int:
    found = calibrate(args.output, args.min_verdicts)
    print(format_table(found))
    fragment = config_fragment(found)
    if args.write:
        with open(args.write, "w", encoding="utf-8") as handle:
            handle.write(fragment)
        print(f"calibrate: wrote the config fragment to {args.write}")
    else:
        print()
        print(fragment, end="")
    return 0
