"""Tiny random-weight versions of every model backend the configs can name, built offline.

No machine of this project can download weights. Tests and the mini-run build these small models from
configs (the way diffusers' and transformers' own tests do), save them with ``save_pretrained`` /
safetensors into a cache directory, and then load them back through the same production loading code a
real Hub id goes through. They check plumbing, shapes, determinism and speed ratios, not image quality:
a random captioner writes word salad and a random editor paints noise.

Configs refer to them as ``tiny:NAME``: ``tiny:captioner``, ``tiny:clip``, the editors
``tiny:instruct-pix2pix``, ``tiny:stable-diffusion`` (text-to-image and img2img),
``tiny:stable-diffusion-inpaint``, ``tiny:sdxl``, ``tiny:flux-kontext``, ``tiny:flux2-klein`` (distilled),
``tiny:flux2-klein-base``, ``tiny:qwen-image-edit``, the segmenter ``tiny:clipseg``, ``tiny:qwen2.5-vl`` (a chat
VLM), and ``tiny:llava`` for the trainers' side;
Importing this module registers the scheme: ``pipeline.config.model_refs.resolve_model_ref`` then builds a
model on first use and returns its local directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from pipeline.config.model_refs import RefScheme, register_scheme
from pipeline.testing.tiny_diffusion import (
    build_flux_kontext,
    build_instruct_pix2pix,
    build_sdxl,
    build_stable_diffusion,
    build_stable_diffusion_inpaint,
)
from pipeline.testing.tiny_flux2 import build_flux2_klein, build_flux2_klein_base
from pipeline.testing.tiny_qwen import build_qwen25_vl, build_qwen_image_edit
from pipeline.testing.tiny_transformers import build_captioner, build_clip, build_clipseg, build_llava

# Bump when a builder changes so caches of older builds are not reused.
TINY_MODELS_VERSION = 6  # 5: tiny llava has LLaVA-1.5's chat template; 6: FLUX.2 klein, Qwen-Image-Edit, Qwen2.5-VL
TINY_PREFIX = "tiny:"


def default_cache_dir() -> Path:
    root = os.environ.get("COUNTERFACTORY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "counterfactory"
    )
    return Path(root) / f"tiny-models-v{TINY_MODELS_VERSION}"


BUILDERS: dict[str, Callable[[Path], None]] = {
    "captioner": build_captioner,
    "instruct-pix2pix": build_instruct_pix2pix,
    "stable-diffusion": build_stable_diffusion,
    "stable-diffusion-inpaint": build_stable_diffusion_inpaint,
    "sdxl": build_sdxl,
    "flux-kontext": build_flux_kontext,
    "flux2-klein": build_flux2_klein,
    "flux2-klein-base": build_flux2_klein_base,
    "qwen-image-edit": build_qwen_image_edit,
    "qwen2.5-vl": build_qwen25_vl,
    "clipseg": build_clipseg,
    "clip": build_clip,
    "llava": build_llava,
}


@contextmanager
def _no_save_progress_bars():
    """transformers' ``save_pretrained`` draws a "Writing model shards" bar per model: noise in a first run's
    output, where building the tiny models is an implementation detail."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def build(name: str, cache_dir: Path | None = None) -> Path:
    """Build tiny model ``name`` into the cache (once) and return its directory."""
    if name not in BUILDERS:
        raise ValueError(f"unknown tiny model {name!r}; known: {', '.join(sorted(BUILDERS))}")
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    final = root / name
    if (final / ".complete").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    # Build beside the final place and rename: concurrent builders never see a half-written model.
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        with _no_save_progress_bars():
            BUILDERS[name](work)
        (work / ".complete").write_text("ok\n")
        try:
            os.rename(work, final)
        except OSError:
            if not (final / ".complete").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


register_scheme(RefScheme(TINY_PREFIX, names=lambda: sorted(BUILDERS), resolve=lambda name: str(build(name))))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Build the tiny offline models into the cache.")
    parser.add_argument("names", nargs="*", default=sorted(BUILDERS))
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    for name in args.names:
        print(build(name, args.cache_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
