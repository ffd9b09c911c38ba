"""The ``input`` section: where seeds come from, and the checks on it."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Literal

from schemas.articles import fix_articles
from stages.base import Resources

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
DEFAULT_MAX_BYTES = 50_000_000  # input.max_bytes unless set
PILLOW_MAX_PIXELS = 89_478_485  # Pillow's default decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS)


@dataclass
class IngestConfig:
    kind: Literal["folder", "webdataset", "parquet", "generate"] = "folder"
    path: str = ""  # folder, tar file, folder of tars, brace pattern of tars, or parquet file; local or a URI
    # (s3://, gs://, hf://datasets/..., any fsspec protocol; credentials from the standard environment)
    # An S3-compatible endpoint (MinIO, Ceph, R2...) for s3:// inputs; unset: AWS_ENDPOINT_URL or AWS itself
    endpoint_url: str | None = None
    # generate: no seed photos; one seed per concept x prompt template x seeds_per_prompt, whose caption is
    # the template filled with the concept ("a photo of {a_concept}" -> "a photo of a chef")
    prompts: list[str] = field(default_factory=lambda: ["a photo of {a_concept}"])
    seeds_per_prompt: int = 1
    max_pixels: int = 40_000_000  # larger images are refused (decompression bombs); at most Pillow's limit
    # Seeds are decoded only as JPEG, PNG, WebP, BMP, GIF or TIFF, whatever their name; any other format
    # (EPS, PSD, ICO...) is an error row naming it (stages.utils.imaging.SEED_FORMATS)
    # A seed file or tar member larger than this many bytes is an error row, refused from its listed size before
    # any byte is read; so is anything that is not a regular file (a FIFO, a device)
    max_bytes: int = DEFAULT_MAX_BYTES
    # parquet: a list names only paths on its own filesystem (a local list: local paths; a list on a bucket: that
    # protocol, s3:// for s3://; on http(s): its own host). Other roots it may name, as URI or absolute path
    # prefixes ("s3://other-bucket/images/", "/data/images"); any other path is an error row and is not read
    allow_paths: list[str] = field(default_factory=list)
    min_side: int = 16
    max_side: int = 1024  # longer side is scaled down to this
    concept_from_folder: bool = True  # folder input: a sub-folder named after a concept labels its images
    dedupe: bool = True  # hash every input first so a repeated image is edited once, not once per copy
    # one: a seed showing several people is not edited (the judge's seed screen, filter.judge, says so);
    # any: it is (only a child, or no person, is screened out)
    people: Literal["any", "one"] = "any"
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=0.5, batch_size=16))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.kind == "generate":
            return found + _prompt_problems(self.prompts, self.seeds_per_prompt)
        if not self.path:
            found.append(("path", "is required"))
        if self.endpoint_url is not None and not self.endpoint_url.startswith(("http://", "https://")):
            found.append(("endpoint_url", "must start with http:// or https://"))
        if self.min_side < 1 or self.max_side < self.min_side:
            found.append(("max_side", "must be >= min_side >= 1"))
        if self.max_pixels < self.min_side * self.min_side:
            found.append(("max_pixels", "must allow at least a min_side x min_side image"))
        if self.max_pixels > PILLOW_MAX_PIXELS:
            found.append(("max_pixels", f"must be at most {PILLOW_MAX_PIXELS} (Pillow's decompression-bomb limit)"))
        if self.max_bytes < 1:
            found.append(("max_bytes", "must be >= 1"))
        for i, root in enumerate(self.allow_paths):
            if "::" in root or not (root.startswith("/") or re.match(r"[A-Za-z][A-Za-z0-9+.-]*://.", root)):
                found.append((f"allow_paths[{i}]", "must be an absolute path or a URI with a protocol "
                              "(s3://bucket/prefix/), not a chained URL"))
        return found


    def fs_options(self, uri: str) -> dict:
        """fsspec options for opening ``uri``: the endpoint for s3:// when one is set."""
        if self.endpoint_url and uri.startswith(("s3://", "s3a://")):
            return {"endpoint_url": self.endpoint_url}
        return {}


PROMPT_FIELDS = ("concept", "a_concept")
GENERATED_URI = "generate:"  # source_uri prefix of seeds made from text


def _prompt_problems(prompts: list[str], seeds_per_prompt: int) -> list[tuple[str, str]]:
    found = []
    if not prompts:
        found.append(("prompts", "must list at least one template"))
    for i, template in enumerate(prompts):
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        except ValueError as exc:
            found.append((f"prompts[{i}]", f"is not a valid template ({exc})"))
            continue
        unknown = names - set(PROMPT_FIELDS)
        if unknown:
            found.append((f"prompts[{i}]", f"unknown placeholder(s) {sorted(unknown)}; allowed: {{concept}}, {{a_concept}}"))
        elif not names:
            found.append((f"prompts[{i}]", "must contain {concept} or {a_concept}"))
    if seeds_per_prompt < 1:
        found.append(("seeds_per_prompt", "must be >= 1"))
    return found


def base_prompt(template: str, concept_words: str) -> str:
    """``"a photo of {a_concept}"`` + ``"office worker"`` -> ``"a photo of an office worker"``."""
    return fix_articles(template.format(concept=concept_words, a_concept=f"a {concept_words}"))


