"""The models a run uses, in one place: which they are (``run_models``), whether each reference can be
loaded here (``check_model_refs``, with one-line errors that say the fix), and references resolved to
what the loaders take (``with_models_resolved``).

Checks run at the start of ``run`` (not at config load: ``plan`` must accept a production config on a
laptop that has none of its models). Reference schemes such as ``tiny:NAME`` are registered by the package
that provides them (``pipeline.testing`` registers ``tiny:``), so the run path imports none of them.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass
from typing import Callable

from pipeline.config.errors import ConfigError
from pipeline.config.sections import PipelineConfig
from stages.base import ModelUse
from stages.edit import registry

HUB_ID = re.compile(r"\A[A-Za-z0-9][\w.-]*/[\w.-]+\Z")


@dataclass(frozen=True)
class RefScheme:
    """``PREFIX:NAME`` references: ``names`` lists the known NAMEs, ``resolve`` makes one a local directory."""

    prefix: str  # "tiny:"
    names: Callable[[], list[str]]
    resolve: Callable[[str], str]


SCHEMES: dict[str, RefScheme] = {}


def register_scheme(scheme: RefScheme) -> None:
    SCHEMES[scheme.prefix] = scheme


def _scheme_of(ref) -> RefScheme | None:
    if isinstance(ref, str):
        for prefix, scheme in SCHEMES.items():
            if ref.startswith(prefix):
                return scheme
    return None


TINY_HINT = ("tiny:NAME models are built by pipeline.testing.tiny_models: import it before loading the config "
             "(the counterfactory command does)")


def resolve_model_ref(ref: str) -> str:
    """A registered scheme's reference -> its local directory; anything else (Hub id, local dir) unchanged."""
    scheme = _scheme_of(ref)
    if scheme is None and isinstance(ref, str) and ref.startswith("tiny:"):
        raise ValueError(f"{ref!r}: {TINY_HINT}")
    return scheme.resolve(ref[len(scheme.prefix):]) if scheme else ref


def run_models(config: PipelineConfig) -> list[ModelUse]:
    """Every model a run of ``config`` loads, stage by stage."""
    uses = []
    if config.input.kind != "generate":  # no photos: no captioner or zero-shot concept model
        caption = config.caption
        uses.append(ModelUse("captioner", "caption.model", caption.model, caption.revision, caption.allow_pickle))
        if config.concept.model:
            uses.append(ModelUse("concept", "concept.model", config.concept.model, config.concept.pretrained,
                                 config.concept.allow_pickle))
    uses += registry.backend(config.edit.backend).models(config.edit)
    uses.append(ModelUse("clip", "filter.model", config.filter.model, config.filter.pretrained,
                         config.filter.allow_pickle))
    judge, drift = config.filter.judge, config.filter.drift
    if judge.enabled and judge.model:  # a null model is filled with the captioner's when the config loads
        uses.append(ModelUse("judge", "filter.judge.model", judge.model, judge.revision, judge.allow_pickle))
    if drift.enabled:
        uses.append(ModelUse("drift_segmenter", "filter.drift.mask.model", drift.mask.model, drift.mask.revision,
                             config.filter.allow_pickle))
    return uses


def _replace_field(obj, path: list[str], value):
    if len(path) == 1:
        return dataclasses.replace(obj, **{path[0]: value})
    return dataclasses.replace(obj, **{path[0]: _replace_field(getattr(obj, path[0]), path[1:], value)})


def with_models_resolved(config: PipelineConfig, resolve: Callable[[str], str] = resolve_model_ref) -> PipelineConfig:
    """A copy with every model reference the run uses passed through ``resolve`` (``tiny:`` -> local dirs)."""
    for use in run_models(config):
        config = _replace_field(config, use.field.split("."), resolve(use.ref))
    return config


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


def check_reference(field: str, ref: str, revision: str | None, source: str, allow_pickle: bool = False,
                    marker: str = "config.json") -> None:
    scheme = _scheme_of(ref)
    if scheme is not None:
        name, known = ref[len(scheme.prefix):], scheme.names()
        if name not in known:
            what = scheme.prefix.rstrip(":")
            raise ConfigError(source, field, f"unknown {what} model {name!r}; known: {', '.join(sorted(known))}")
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
    if ref.startswith("tiny:"):
        raise ConfigError(source, field, f"{ref!r}: {TINY_HINT}")
    if not HUB_ID.match(ref):
        raise ConfigError(source, field, f"{ref!r} is neither a Hub id (org/name), a local directory nor tiny:NAME")
    if _offline() and not _in_hub_cache(ref, marker, revision):
        raise ConfigError(
            source, field,
            f"{ref!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1: download it first "
            f"(`hf download {ref}`) or set HF_HUB_OFFLINE=0 where downloads are allowed",
        )


def check_model_refs(config: PipelineConfig, source: str) -> None:
    for use in run_models(config):
        # open_clip models take a ``pretrained`` tag, not a Hub revision
        revision = None if use.field in ("filter.model", "concept.model") else use.revision
        check_reference(use.field, use.ref, revision, source, use.allow_pickle, use.marker)
