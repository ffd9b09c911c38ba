"""``counterfactory export OUT --to FORMAT DEST``: selected accepted members into a trainer's own format."""

from __future__ import annotations

import glob
import itertools
import json
import os
import shutil
import socket
import uuid
from pathlib import Path

from pipeline.export.members import ExportError, export_members, parse_values
from pipeline.output.storage import Storage
from pipeline.trainers.readers import accepted_members
from schemas.layout import CARD_FILE, RUN_FILE
from stages.utils import faults

FORMATS = ("llava", "sharegpt", "hf")
PARTIAL = ".partial-"  # .DEST.partial-XXXXXXXX: the export being written, beside DEST
OWNER_FILE = ".export-owner.json"  # in it: the pid and host writing it (removed before the rename)


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


def _check_dest(dest: Path) -> None:
    """Everything about DEST that would fail the rename at the end, refused before any work."""
    if dest.is_symlink():
        raise ExportError(f"{dest} is a symbolic link (to {os.readlink(dest)}); give a real folder path: export "
                          "writes beside DEST and renames the folder into place")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ExportError(f"{dest} exists and is not an empty folder; export writes into a new one")
    if dest.parent.exists() and not os.access(dest.parent, os.W_OK | os.X_OK):
        raise ExportError(f"{dest.parent} is not writable; export writes DEST's folder there")


def _alive(owner: dict) -> bool:
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return True  # another host's export: cannot tell, so never removed
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_partials(dest: Path) -> list[str]:
    """Remove the ``.DEST.partial-*`` folders that killed exports to DEST left; returns what it said about them."""
    said = []
    for partial in sorted(dest.parent.glob(f".{glob.escape(dest.name)}{PARTIAL}*")):
        try:
            owner = json.loads((partial / OWNER_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            owner = {}
        if partial.is_dir() and not partial.is_symlink() and not _alive(owner):
            shutil.rmtree(partial)
            said.append(f"export: removed {partial}, left by an export that did not finish")
        else:
            said.append(f"export: {partial} is left by export pid {owner.get('pid')} on {owner.get('host')}, "
                        "which may still run; remove it yourself if it does not")
    return said


def _with_fault_hook(members):
    """The members, with the fault-injection point tests kill an export at (after the first member's files)."""
    for index, member in enumerate(members):
        yield member
        if index == 0:
            faults.check_crash("export")


def cmd_export(args) -> int:
    dest = Path(args.dest)
    _check_dest(dest)
    select = {"concept": args.concept, "axis": args.axis, "values": parse_values(args.value)}
    members = export_members(args.output, weights=args.weights, **select)
    members = itertools.chain([next(members)], members)  # selection and weights are checked before writing
    if os.environ.get(faults.ENV):
        faults.install(os.environ[faults.ENV])
    for line in clean_partials(dest):
        print(line)
    # Written beside DEST and renamed at the end: a failure leaves no half-written DEST behind, a kill leaves
    # this folder, which the next export to DEST removes.
    partial = dest.with_name(f".{dest.name}{PARTIAL}{uuid.uuid4().hex[:8]}")
    partial.mkdir(parents=True)
    (partial / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), encoding="utf-8")
    try:
        result = _write(args, _with_fault_hook(members), partial, select)
        (partial / OWNER_FILE).unlink()
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
