"""``counterfactory asd OUT --predictions FILE --out WEIGHTS``: ASD loss weights and resampling copies for
any trainer (LLaVA's, LLaMA-Factory's, yours), from your model's yes/no answers on the output's members.

FILE (parquet or CSV) has ``set_id``, ``member_id`` and ``answer`` (yes/no as a bool, or the probability of
yes); concept and attribute values come from the manifest. WEIGHTS gets per member ``set_id``,
``member_id``, ``skew``, ``weight`` (= exp(-skew)) and ``copies`` (how many times the next epoch's
resampling takes it: drop draws from ``random.Random(seed)`` in manifest order). Re-run it on fresh
predictions before every epoch, as the paper re-estimates Skew per epoch.
"""

from __future__ import annotations

import glob
import json
import math
import os
import random
import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.trainers.debias import SKEW_RANGE, SMOOTHING, Prediction, resample_epoch, sample_skew, skew_table
from pipeline.trainers.member_table import TableError, read_member_table, rows_by_member
from pipeline.trainers.readers import accepted_members
from stages.utils import faults

WEIGHTS = pa.schema([("set_id", pa.string()), ("member_id", pa.string()), ("skew", pa.float64()),
                     ("weight", pa.float64()), ("copies", pa.int64())])


def add_parser(sub) -> None:
    asd = sub.add_parser("asd", help="ASD Skew, loss weights and resampling copies from a model's yes/no answers")
    asd.add_argument("output")
    asd.add_argument("--predictions", required=True, help="parquet/CSV: set_id, member_id, answer (bool or P(yes))")
    asd.add_argument("--out", required=True, help="weights file to write (.parquet or .csv)")
    asd.add_argument("--tau1", type=float, default=1.0, help="drop rate scale for positive Skew")
    asd.add_argument("--tau2", type=float, default=1.0, help="|Skew| accumulated per extra copy")
    asd.add_argument("--seed", type=int, default=0, help="seed of the resampling draws")
    asd.add_argument("--alpha", type=float, default=SMOOTHING, help="add-alpha smoothing of positive shares")
    asd.add_argument("--clip", type=float, default=SKEW_RANGE[1], help="Skew clipped to [-CLIP, CLIP]")
    asd.set_defaults(func=cmd_asd)


def _answer(value, path: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("yes", "no", "true", "false"):
        return float(value.strip().lower() in ("yes", "true"))
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TableError(f"{path}: answer {value!r} is neither yes/no, a bool nor a probability") from None
    if not 0.0 <= number <= 1.0 or math.isnan(number):
        raise TableError(f"{path}: answer {value!r} is not a probability between 0 and 1")
    return number


def asd_weights(output: str, predictions: str, tau1: float = 1.0, tau2: float = 1.0, seed: int = 0,
                alpha: float = SMOOTHING, clip: float = SKEW_RANGE[1]) -> tuple[list[dict], dict]:
    """Rows of WEIGHTS in manifest order (members with a prediction), and the Skew table."""
    members = accepted_members(output).to_pylist()
    accepted = {(m["set_id"], m["member_id"]) for m in members}
    rows = rows_by_member(predictions, read_member_table(predictions, ("answer",)), accepted)
    pool = [m for m in members if (m["set_id"], m["member_id"]) in rows]
    answers = [_answer(rows[(m["set_id"], m["member_id"])]["answer"], predictions) for m in pool]
    preds = [Prediction(m["concept"], json.loads(m["attributes"]), a) for m, a in zip(pool, answers)]
    table = skew_table(preds, alpha=alpha, skew_range=(-clip, clip))
    skews = [sample_skew(table, p.concept, p.attributes) for p in preds]
    copies = Counter(resample_epoch(skews, random.Random(seed), tau1, tau2, shuffle=False))
    out = [{"set_id": m["set_id"], "member_id": m["member_id"], "skew": skew, "weight": math.exp(-skew),
            "copies": copies[i]} for i, (m, skew) in enumerate(zip(pool, skews))]
    return out, table


def value_positive(value: float) -> bool:
    return value > 0


def format_table(table: dict) -> str:
    lines = [f"{'concept':<20} {'attribute=value':<28} {'Skew':>7} {'weight':>7}"]
    for concept in sorted(table):
        for (attribute, value), skew in sorted(table[concept].items()):
            lines.append(f"{concept:<20} {attribute + '=' + value:<28} {skew:>7.3f} {math.exp(-skew):>7.3f}")
    return "\n".join(lines)


def write_weights(table: pa.Table, out: Path) -> None:
    """WEIGHTS as CSV or parquet, written beside ``out`` and renamed over it: a kill leaves the earlier file whole
    (and a ``.NAME.partial-*`` file, which the next write removes)."""
    for stale in out.parent.glob(f".{glob.escape(out.name)}.partial-*"):
        stale.unlink(missing_ok=True)
    partial = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        if out.suffix.lower() == ".csv":
            pacsv.write_csv(table, str(partial))
        else:
            pq.write_table(table, str(partial))
        faults.check_crash("asd")  # tests: die here, the new file written and not yet renamed
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)


def cmd_asd(args) -> int:
    for name, value, allowed in (("--tau1", args.tau1, value_positive), ("--tau2", args.tau2, value_positive),
                                 ("--clip", args.clip, value_positive), ("--alpha", args.alpha, lambda v: v >= 0)):
        if not allowed(value) or math.isnan(value):
            raise TableError(f"{name} {value}: must be {'>= 0' if name == '--alpha' else '> 0'}")
    if os.environ.get(faults.ENV):
        faults.install(os.environ[faults.ENV])
    rows, table = asd_weights(args.output, args.predictions, args.tau1, args.tau2, args.seed, args.alpha, args.clip)
    write_weights(pa.Table.from_pylist(rows, schema=WEIGHTS), Path(args.out))
    print(format_table(table))
    missing = accepted_members(args.output).num_rows - len(rows)
    print(f"asd: wrote {len(rows)} members to {args.out} ({sum(r['copies'] for r in rows)} samples next epoch)"
          + (f"; {missing} accepted member(s) had no prediction and are left out" if missing else ""))
    return 0
