"""The edit stage's contract: one subclass of ``Editor`` per backend, declaring everything about itself.

At run time a backend says how to load its pipeline (``load``), what it conditions on (``prompt_field``),
how to prepare a set once (``prepare``: the seed crop, a mask) and how to render one chunk of jobs
(``render``). One job is one member x candidate; its image must depend only on the job, never on its
chunk-mates. The base does per-candidate draws, chunking, CUDA out-of-memory splitting and the set loop.

Before any model is loaded (``plan``, cost, config checks, provenance, the data card) the class answers
from the config alone: ``config_problems``, ``denoising_steps``, ``denoiser_evals_per_step``,
``model_family``, ``images_and_calls``, ``generation_settings``, ``card_settings``, ``models``.
Adding a backend: a module with its subclass, and one line in ``stages/edit/registry.py``.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from schemas.records import SET, STATUS_ERROR, STATUS_OK
from stages.base import ModelUse, SetStage
from stages.edit.config import EditConfig
from stages.utils import faults
from stages.utils.imaging import from_raw, square_crop
from stages.utils.torch_runtime import resolve_device, resolve_dtype, set_threads


def to_uint8(images) -> list[np.ndarray]:
    """Pipeline output in [0, 1] (numpy, N x H x W x 3) -> uint8 arrays."""
    return [np.clip(np.round(np.asarray(img) * 255.0), 0, 255).astype(np.uint8) for img in images]


def draw_uniform(noise_seed: int, stream: int, low: float, high: float) -> float:
    """A value in [low, high] from the candidate's seed: stream 1 is guidance, 2 the p2p fraction."""
    return float(np.random.default_rng([int(noise_seed) & (2**64 - 1), stream]).uniform(low, high))


class Editor(SetStage):
    name = "edit"
    output_schema = SET

    # -- what a backend declares ----------------------------------------------------------------------
    backend = ""  # its name in edit.backend
    summary = ""  # one line for plan and the README
    prompt_field = "instruction"  # the member field the model is conditioned on
    makes_own_seeds = False  # True: generate mode (input.kind generate), no seed photos
    draws_per_candidate = False  # True: reads edit.guidance_range (drawn per candidate)
    stops_early = False  # True: can run edit.early_rejection
    denoiser_evals_per_step = 2  # UNet/transformer evaluations per step (classifier-free guidance: 2)

    @classmethod
    def config_problems(cls, config) -> list[tuple[str, str]]:
        """Checks of the whole run config (``config.edit``, ``config.filter``, ...) that depend on the
        backend, as (field path, message). The capabilities above are checked by the config loader."""
        return []

    @classmethod
    def denoising_steps(cls, edit: EditConfig) -> int:
        """Steps actually run for one image."""
        return edit.steps

    @classmethod
    def model_family(cls, edit: EditConfig) -> str:
        """sd | sdxl | flux, for FLOP estimates (an SDXL checkpoint is told by "xl" in its name)."""
        return "sdxl" if "xl" in edit.model.lower() else "sd"

    @classmethod
    def images_and_calls(cls, members: int, candidates: int, edit: EditConfig) -> tuple[int, int]:
        """Images rendered for one set of ``members`` x ``candidates``, and the model calls they take."""
        images = members * candidates
        return images, math.ceil(images / edit.max_batch)

    @classmethod
    def generation_settings(cls, config) -> dict:
        """What this backend adds to the generation settings each sample and image records."""
        return {}

    @classmethod
    def card_settings(cls, edit: dict) -> str:
        """Its settings as the data card words them, from run.json's plain ``edit`` section."""
        return ""

    @classmethod
    def models(cls, edit: EditConfig) -> list[ModelUse]:
        return [ModelUse("editor", "edit.model", edit.model, edit.revision, edit.allow_pickle, "model_index.json")]

    # -- the stage ------------------------------------------------------------------------------------
    def __init__(self, config: EditConfig, filter_config=None):
        super().__init__()
        self.config = config
        self.filter_config = filter_config  # early rejection judges with the filter's checks

    # -- set-up ---------------------------------------------------------------------------------------
    def setup(self) -> None:
        set_threads(self.config.threads)
        self.device = resolve_device(self.config.device)
        self.dtype = resolve_dtype(self.config.dtype, self.device)
        self.pipe = self.load()

    def from_pretrained(self, pipeline_class, **extra):
        """A diffusers pipeline of ``edit.model`` on this worker's device, progress bars off."""
        pipe = pipeline_class.from_pretrained(
            self.config.model, revision=self.config.revision, torch_dtype=self.dtype,
            use_safetensors=None if self.config.allow_pickle else True, **extra,
        ).to(self.device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def load(self):
        """What ``render`` uses, loaded once per worker (``self.pipe``): usually ``self.from_pretrained(...)``."""
        raise NotImplementedError

    # -- one set --------------------------------------------------------------------------------------
    def draws(self, noise_seed: int) -> dict:
        """Per-candidate sampling settings; backends that draw them per candidate override this."""
        return {"guidance_scale": self.config.guidance_scale, "p2p_fraction": None}

    def jobs(self, row: dict) -> list[dict]:
        jobs = []
        for c, seed in enumerate(row["candidate_seeds"]):
            draws = self.draws(seed)
            for member in row["members"]:
                jobs.append({"member": member, "member_id": member["member_id"], "candidate": c,
                             "noise_seed": seed, "prompt": member[self.prompt_field], **draws})
        return jobs

    def chunks(self, jobs: list[dict]) -> list[list[dict]]:
        size = self.config.max_batch
        return [jobs[i : i + size] for i in range(0, len(jobs), size)]

    def prepare(self, row: dict):
        """What every chunk of the set needs, made once: by default the seed photo at the edit size."""
        return square_crop(from_raw(row["image_rgb"], row["width"], row["height"]), self.config.resolution)

    def render(self, context, jobs: list[dict]) -> list[np.ndarray]:
        raise NotImplementedError

    def call_pipeline(self, jobs: list[dict], **inputs) -> list[np.ndarray]:
        """One diffusers pipeline call for ``jobs``: their prompts, one noise generator per job from its
        candidate's seed, the configured steps and guidance, plus the backend's own ``inputs``."""
        result = self.pipe(
            prompt=[j["prompt"] for j in jobs],
            num_inference_steps=self.config.steps,
            guidance_scale=self.config.guidance_scale,
            generator=generators(j["noise_seed"] for j in jobs),
            output_type="np",
            **inputs,
        )
        return to_uint8(result.images)

    def render_chunk(self, context, chunk: list[dict]) -> list[np.ndarray]:
        """Render a chunk; on CUDA out-of-memory, split it in halves and render those (down to 1)."""
        import torch

        try:
            faults.check_oom("edit", len(chunk))
            return self.render(context, chunk)
        except torch.cuda.OutOfMemoryError:
            if len(chunk) == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.counters["oom_splits"] += 1
            half = len(chunk) // 2
            return self.render_chunk(context, chunk[:half]) + self.render_chunk(context, chunk[half:])

    def edit_set(self, row: dict) -> list[dict]:
        return self.render_set(row, self.prepare(row))

    def render_set(self, row: dict, context) -> list[dict]:
        """Every job of the set, chunk by chunk; a failed chunk makes its candidates errors."""
        candidates = []
        for chunk in self.chunks(self.jobs(row)):
            try:
                images = self.render_chunk(context, chunk)
                errors = [None] * len(chunk)
                self.counters["images_rendered"] += len(chunk)
            except Exception as exc:  # one failed chunk must not take the other candidates down
                images = [None] * len(chunk)
                errors = [self.reason(exc)] * len(chunk)
            for job, image, error in zip(chunk, images, errors):
                candidates.append(
                    {
                        "member_id": job["member_id"], "candidate": job["candidate"], "noise_seed": job["noise_seed"],
                        "guidance_scale": job["guidance_scale"], "p2p_fraction": job["p2p_fraction"],
                        "image_rgb": image.tobytes() if image is not None else None,
                        "width": image.shape[1] if image is not None else None,
                        "height": image.shape[0] if image is not None else None,
                        "error": error, "status": STATUS_ERROR if error else None, "reason": error,
                    }
                )
        return candidates

    def wants(self, row: dict) -> bool:
        return row["status"] == STATUS_OK and row["set_status"] is None

    def process_row(self, row: dict) -> None:
        row["candidates"] = self.edit_set(row)


def generators(seeds) -> list:
    """One CPU generator per image: noise comes from the candidate's seed, whatever the device or batch."""
    import torch

    return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]


def no_safety_checker(model: str) -> dict:
    """SD 1.5-family pipelines take a ``safety_checker`` (the filter's own safety check replaces it);
    SDXL pipelines have none and would warn about the argument, so a local model without one gets none."""
    index = os.path.join(model, "model_index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as handle:
            if "safety_checker" not in json.load(handle):
                return {}
    return {"safety_checker": None, "requires_safety_checker": False}
