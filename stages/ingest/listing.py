"""Listing seeds: every input of a folder, WebDataset tars, a parquet list or generate mode's prompts as a
SEED_REF row, in a stable order, each assigned to its output shard.

Listing runs once on the driver and reads no image bytes (only tar headers and the small metadata files
beside images in tars). Listed seeds are kept as columns (``listed``), not as a dict per seed.
"""

from __future__ import annotations

import os
import posixpath

import fsspec
import pyarrow as pa

from stages.ingest.config import GENERATED_URI, IMAGE_EXTENSIONS, IngestConfig, base_prompt
from stages.ingest.listed import ListedSeeds, seed_ref_table
from stages.ingest.parquet_list import list_parquet
from stages.ingest.scope import is_local_fs
from stages.ingest.tar_listing import list_webdataset
from stages.utils.errors import describe_error

PROTOCOL_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "hf": "huggingface_hub",
                     "az": "adlfs", "abfs": "adlfs"}


class InputUnreachable(RuntimeError):
    """The input cannot be listed; the message names it, says why and what to do, in one line."""


def _unreachable(path: str, exc: BaseException) -> InputUnreachable:
    """A listing failure as one line naming the input, the cause and the fix."""
    protocol = path.split("://", 1)[0] if "://" in path else "file"
    if isinstance(exc, ImportError):
        package = PROTOCOL_PACKAGES.get(protocol, "the fsspec package for it")
        return InputUnreachable(f"input.path {path}: no filesystem for {protocol}:// here ({describe_error(exc)}); "
                                f"install {package}")
    if protocol == "hf" and os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "false", "False", ""):
        return InputUnreachable(f"input.path {path}: the Hugging Face Hub is offline here (HF_HUB_OFFLINE=1); "
                                "set HF_HUB_OFFLINE=0 where the Hub can be reached, or copy the data locally")
    if isinstance(exc, FileNotFoundError):
        where = "the bucket or the path does not exist" if protocol != "file" else "no such folder or file"
        return InputUnreachable(f"input.path {path}: {where}; check input.path")
    if "Credentials" in type(exc).__name__:
        return InputUnreachable(f"input.path {path}: no credentials for {protocol}:// ({describe_error(exc)}); set "
                                "them in the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, "
                                "GOOGLE_APPLICATION_CREDENTIALS, HF_TOKEN)")
    if isinstance(exc, PermissionError):
        return InputUnreachable(f"input.path {path}: access refused ({describe_error(exc)}); check the credentials "
                                "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, HF_TOKEN) "
                                "and the bucket's policy")
    return InputUnreachable(f"input.path {path}: cannot list it ({describe_error(exc)}); check the endpoint "
                            "(input.endpoint_url or AWS_ENDPOINT_URL), the network and the path")


def _list_generated(config: IngestConfig, concepts) -> ListedSeeds:
    """Generate mode: one seed per concept x template x seeds_per_prompt, its caption the base prompt."""
    listed = ListedSeeds()
    for concept in concepts:
        for t, template in enumerate(config.prompts):
            prompt = base_prompt(template, concept.words)
            for k in range(config.seeds_per_prompt):
                seed_id = f"{concept.id}-p{t}-{k}"
                listed.add(GENERATED_URI + seed_id, source_seed_id=seed_id, concept=concept.id, caption=prompt)
    return listed


def _full_uri(fs, path: str) -> str:
    """Local files keep plain paths; remote ones get their protocol back."""
    return path if is_local_fs(fs) else fs.unstrip_protocol(path)


def _is_image_name(name: str) -> bool:
    return "." in name and name.rsplit(".", 1)[1].lower() in IMAGE_EXTENSIONS


def _display(path: str) -> tuple[str, bytes | None]:
    """A path as valid UTF-8 text for manifests, plus its exact bytes when the text had to escape them."""
    try:
        path.encode("utf-8")
        return path, None
    except UnicodeEncodeError:
        raw = os.fsencode(path)
        return raw.decode("utf-8", errors="backslashreplace"), raw


def _list_local_folder(config: IngestConfig) -> ListedSeeds:
    """Every image-named entry under the root, and every entry that only looks like one.

    Symlinks that lead outside the root, and folders named like images, are listed with the problem
    so that they end as error rows instead of vanishing; hidden files and folders are skipped.
    """
    root = config.path
    if not os.path.isdir(root):
        raise InputUnreachable(f"input.path {config.path}: " + ("a file, not a folder; input.kind folder lists a "
                               "folder" if os.path.exists(root) else "no such folder") + "; check input.path")
    real_root = os.path.realpath(root)
    entries: list[tuple[str, str | None]] = []  # (relative path, listing problem)
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir
        dirnames[:] = [d for d in sorted(dirnames) if not d.startswith(".")]
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full) and not _inside(os.path.realpath(full), real_root):
                entries.append((os.path.join(rel_dir, name), "symlink points outside the input folder"))
            elif _is_image_name(name):
                entries.append((os.path.join(rel_dir, name), "a folder, not an image file"))
        for name in filenames:
            if name.startswith(".") or not _is_image_name(name):
                continue
            full = os.path.join(dirpath, name)
            problem = None
            if os.path.islink(full) and not _inside(os.path.realpath(full), real_root):
                problem = "symlink points outside the input folder"
            entries.append((os.path.join(rel_dir, name), problem))
    listed = ListedSeeds()
    for rel, problem in sorted(entries, key=lambda e: os.fsencode(e[0])):
        text, raw = _display(os.path.join(root, rel))
        parts = rel.split(os.sep)
        concept = parts[0] if (config.concept_from_folder and len(parts) > 1) else None
        listed.add(text, concept=_display(concept)[0] if concept else None, source_path=raw, source_error=problem)
    return listed


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _list_folder(config: IngestConfig) -> ListedSeeds:
    fs, root = fsspec.core.url_to_fs(config.path, **config.fs_options(config.path))
    if is_local_fs(fs):
        return _list_local_folder(config)
    if not fs.isdir(root):
        raise FileNotFoundError(config.path)
    listed = ListedSeeds()
    found = fs.find(root, withdirs=False, detail=True)
    for path in sorted(found):
        rel = posixpath.relpath(path, root)
        if any(part.startswith(".") for part in rel.split("/")) or not _is_image_name(posixpath.basename(rel)):
            continue
        folder = posixpath.dirname(rel)
        concept = folder.split("/")[0] if (config.concept_from_folder and folder) else None
        listed.add(fs.unstrip_protocol(path), concept=concept, source_size=found[path].get("size"))
    return listed


def _tar_paths(path: str, options: dict) -> list[str]:
    if "{" in path:
        import braceexpand

        return list(braceexpand.braceexpand(path))
    fs, root = fsspec.core.url_to_fs(path, **options)
    if fs.isdir(root):
        return [_full_uri(fs, p) for p in sorted(fs.glob(posixpath.join(root, "*.tar")))]
    return [path]


def _list_webdataset(config: IngestConfig) -> ListedSeeds:
    return list_webdataset(config, _tar_paths(config.path, config.fs_options(config.path)))


def list_seeds(config: IngestConfig, seeds_per_shard: int, limit: int | None = None, concepts=()) -> pa.Table:
    """Every input as a SEED_REF row, in a stable order, each assigned to its output shard.
    ``concepts`` (taxonomy Concepts) are what generate mode makes base prompts for."""
    if config.kind == "generate":
        listed = _list_generated(config, concepts)
    else:
        lister = {"folder": _list_folder, "webdataset": _list_webdataset, "parquet": list_parquet}[config.kind]
        try:
            listed = lister(config)
        except InputUnreachable:
            raise
        except ValueError as exc:
            if str(exc).startswith("input.path"):  # what this module says about the input itself
                raise InputUnreachable(str(exc)) from exc
            raise _unreachable(config.path, exc) from exc
        except Exception as exc:  # the filesystems raise their own kinds (botocore, gcsfs, huggingface_hub)
            raise _unreachable(config.path, exc) from exc
    try:
        table = listed if isinstance(listed, pa.Table) else listed.table()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # a tar's JSON giving a concept that is not text
        raise InputUnreachable(f"input.path {config.path}: a listed value is not text ({exc})") from exc
    return seed_ref_table(table, seeds_per_shard, limit)
