"""``counterfactory export OUT --to FORMAT DEST``: selected accepted members into a trainer's own format."""

from __future__ import annotations

import itertools
import json
import shutil
import uuid
from pathlib import Path

from pipeline.export.members import ExportError, export_members, parse_values
from pipeline.output.storage import Storage
from pipeline.trainers.readers import accepted_members
from schemas.layout import CARD_FILE, RUN_FILE

FORMATS = ("llava", "sharegpt", "hf")


def add_parser(sub) -> None:
    export = sub.add_parser("export", help="write accepted members as LLaVA, LLaMA-Factory (sharegpt) or HF data")
    export.add_argument("output")
    export.add_argument("--to", required=True, choices=FORMATS, dest="format")
    export.add_argument("dest", help="folder to write (created; must be empty or absent)")
    export.add_argument("--concept", default=None)
    export.add_argument("--axis", default=None)
    export.add_argument("--value", action="append", metavar="ATTRIBUTE=VALUE",
                        help="keep members with this attribute value (repeatable)")
    export.add_argument("--weights", default=None,
                        help="parquet/CSV with set_id, member_id, weight (e.g. from `counterfactory asd`), joined by id")
    export.add_argument("--name", default="counterfactory", help="dataset name (sharegpt's dataset_info key, HF title)")
    export.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    dest = Path(args.dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ExportError(f"{dest} exists and is not an empty folder; export writes into a new one")
    select = {"concept": args.concept, "axis": args.axis, "values": parse_values(args.value)}
    members = export_members(args.output, weights=args.weights, **select)
    members = itertools.chain([next(members)], members)  # selection and weights are checked before writing
    # Written beside DEST and renamed at the end: a failure leaves no half-written DEST behind.
    partial = dest.with_name(f".{dest.name}.partial-{uuid.uuid4().hex[:8]}")
    partial.mkdir(parents=True)
    try:
        result = _write(args, members, partial, select)
        if dest.exists():
            dest.rmdir()
        partial.rename(dest)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    print(f"export: {result['records']} members as {args.format} in {dest} ({', '.join(result['files'])})")
    print(f"use:    {result['use'].replace(str(partial), str(dest))}")
    return 0


def _write(args, members, dest: Path, select: dict) -> dict:
    if args.format == "llava":
        from pipeline.export.llava import write_llava

        return write_llava(members, dest)
    if args.format == "sharegpt":
        from pipeline.export.sharegpt import write_sharegpt

        return write_sharegpt(members, dest, name=args.name)
    from pipeline.export.hf import write_hf

    storage = Storage(args.output)
    run = json.loads(storage.read_bytes(RUN_FILE)) if storage.exists(RUN_FILE) else {}
    body = storage.read_bytes(CARD_FILE).decode("utf-8") if storage.exists(CARD_FILE) else f"# {args.name}\n"
    attributes = sorted({name for value in accepted_members(args.output, **select).column("attributes").to_pylist()
                         for name in json.loads(value)})
    return write_hf(members, dest, attributes, weighted=args.weights is not None, name=args.name,
                    license_id=run.get("config", {}).get("card", {}).get("license"), card_body=body)
