"""Check a run's model references before any work starts, with one-line errors that say the fix.

Runs at the start of ``run`` (not at config load: ``plan`` must accept a production config on a laptop
that has none of its models)."""

from __future__ import annotations

import difflib
import os
import re

from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError
from pipeline.tiny_models import BUILDERS, TINY_PREFIX, is_tiny_ref

HUB_ID = re.compile(r"\A[A-Za-z0-9][\w.-]*/[\w.-]+\Z")
# The file whose presence in the Hugging Face cache means a model is there, per loader.
MARKER_FILE = {"caption.model": "config.json", "edit.model": "model_index.json", "edit.mask.model": "config.json"}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or os.path.isdir(os.path.expanduser(ref))


def _in_hub_cache(repo_id: str, filename: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return isinstance(found, str)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def pickle_checkpoint(directory: str) -> str | None:
    """A pickle weights file in a model folder (or its component sub-folders) with no safetensors beside it."""
    for folder in [directory] + sorted(os.path.join(directory, d) for d in os.listdir(directory)):
        if not os.path.isdir(folder):
            continue
        names = sorted(os.listdir(folder))
        if any(n.endswith(".safetensors") for n in names):
            continue
        for name in names:
            if name.endswith(PICKLE_SUFFIXES):
                return os.path.join(folder, name)
    return None


def check_reference(field: str, ref: str, revision: str | None, source: str, allow_pickle: bool = False) -> None:
    if is_tiny_ref(ref):
        name = ref[len(TINY_PREFIX):]
        if name not in BUILDERS:
            raise ConfigError(source, field, f"unknown tiny model {name!r}; known: {', '.join(sorted(BUILDERS))}")
        return
    if _looks_like_path(ref):
        if not os.path.isdir(os.path.expanduser(ref)):
            raise ConfigError(
                source, field,
                f"local model directory {ref!r} not found; give an existing directory, a Hub id, or tiny:NAME "
                "(`counterfactory tiny-models` builds the offline test models)",
            )
        unsafe = None if allow_pickle else pickle_checkpoint(os.path.expanduser(ref))
        if unsafe:
            stage = field.split(".")[0]
            raise ConfigError(
                source, field,
                f"{unsafe} is a pickle checkpoint, which can run code when loaded; convert it to safetensors, "
                f"or set {stage}.allow_pickle: true if you trust its source",
            )
        return
    if field in ("filter.model", "concept.model"):
        if ref.startswith(("hf-hub:", "local-dir:")):
            return
        import open_clip

        known = open_clip.list_models()
        if ref not in known:
            close = difflib.get_close_matches(ref, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see open_clip.list_models()"
            raise ConfigError(source, field, f"unknown open_clip model {ref!r}{hint}")
        return
    if not HUB_ID.match(ref):
        raise ConfigError(source, field, f"{ref!r} is neither a Hub id (org/name), a local directory nor tiny:NAME")
    if _offline() and not _in_hub_cache(ref, MARKER_FILE[field], revision):
        raise ConfigError(
            source, field,
            f"{ref!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1: download it first "
            f"(`hf download {ref}`) or set HF_HUB_OFFLINE=0 where downloads are allowed",
        )


def check_model_refs(config: PipelineConfig, source: str) -> None:
    generating = config.input.kind == "generate"  # no photos: no captioner or zero-shot concept model
    refs = [
        ("edit.model", config.edit.model, config.edit.revision, config.edit.allow_pickle),
        ("filter.model", config.filter.model, None, config.filter.allow_pickle),
    ]
    if not generating:
        refs.insert(0, ("caption.model", config.caption.model, config.caption.revision, config.caption.allow_pickle))
    if config.edit.backend == "inpaint":
        refs.append(("edit.mask.model", config.edit.mask.model, config.edit.mask.revision, config.edit.allow_pickle))
    if config.concept.model and not generating:
        refs.append(("concept.model", config.concept.model, None, config.concept.allow_pickle))
    for field, ref, revision, allow_pickle in refs:
        check_reference(field, ref, revision, source, allow_pickle)
