"""The edit stage's contract: one subclass of ``Editor`` per backend, declaring everything about itself.

At run time a backend says how to load its pipeline (``load``), what it conditions on (``prompt_field``),
how to prepare a set once (``prepare``: the seed crop, a mask) and how to render one chunk of jobs
(``render``). One job is one member x candidate; its image must depend only on the job, never on its
chunk-mates. The base does per-candidate draws, chunking and CUDA out-of-memory splitting (``ChunkCalls``,
stages/edit/calls.py), the set loop, the identity clause and, with ``edit.keep_background`` (or for a backend
that ``masks_person``), the composite onto the seed outside the person mask. With ``plan.candidates.stop:
first_pass`` a batch of sets is rendered in rounds instead (stages/edit/rounds.py); a backend whose pipeline
takes an image per prompt renders several sets' jobs in one call (``render_mixed``, ``mixes_sets``).

Before any model is loaded (``plan``, cost, config checks, provenance, the data card) the class answers
from the config alone: ``with_defaults`` (its steps, guidance and identity clause), ``config_problems``
(its resolution multiple, its batch limit, its own checks), ``denoising_steps``, ``denoiser_evals_per_step``,
``model_family`` and ``context_pixels`` (for FLOPs), ``images_and_calls``, ``generation_settings``,
``card_settings``, ``models``. Adding a backend: a module with its subclass, and one line in
``stages/edit/registry.py``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from schemas.records import SET, STATUS_OK
from stages.base import ModelUse, SetStage
from stages.edit.calls import ChunkCalls, SetWork, generators, to_uint8
from stages.edit.config import EditConfig
from stages.models.segmenter import RegionSegmenter, blend
from stages.utils.imaging import from_raw, square_crop
from stages.utils.torch_runtime import resolve_device, resolve_dtype, set_threads


class Editor(ChunkCalls, SetStage):
    name = "edit"
    output_schema = SET

    # -- what a backend declares ----------------------------------------------------------------------
    backend = ""  # its name in edit.backend
    summary = ""  # one line for plan and the README
    prompt_field = "instruction"  # the member field the model is conditioned on
    makes_own_seeds = False  # True: generate mode (input.kind generate), no seed photos
    draws_per_candidate = False  # True: reads edit.guidance_range (drawn per candidate)
    stops_early = False  # True: can run edit.early_rejection
    default_steps = 20  # edit.steps when the config leaves it null
    default_guidance_scale = 7.5  # edit.guidance_scale when the config leaves it null
    resolution_multiple = 8  # edit.resolution must be a multiple of this (the VAE's and patches' stride)
    max_images_per_call: int | None = None  # the pipeline's own limit on a batch (None: edit.max_batch)
    takes_negative_prompt = False  # reads edit.negative_prompt
    follows_identity_clause = False  # preserve_identity's default: the model follows an instruction to keep things
    masks_person = False  # paints only inside the person mask, always (inpaint): the composite is part of it

    @classmethod
    def defaults(cls, edit: EditConfig) -> tuple[int, float]:
        """The steps and guidance scale this backend uses for ``edit.model`` when the config leaves them null."""
        return cls.default_steps, cls.default_guidance_scale

    @classmethod
    def with_defaults(cls, edit: EditConfig) -> EditConfig:
        """``edit`` with the fields left null filled with this backend's defaults."""
        steps, guidance = cls.defaults(edit)
        return dataclasses.replace(
            edit,
            steps=steps if edit.steps is None else edit.steps,
            guidance_scale=guidance if edit.guidance_scale is None else edit.guidance_scale,
            preserve_identity=(cls.follows_identity_clause and cls.prompt_field == "instruction"
                               if edit.preserve_identity is None else edit.preserve_identity),
        )

    @classmethod
    def config_problems(cls, config) -> list[tuple[str, str]]:
        """Checks of the whole run config (``config.edit``, ``config.filter``, ...) that depend on the
        backend, as (field path, message): the base's declarations here, a backend's own in its override
        (which extends this list). The capabilities above are checked by the config loader."""
        edit, found = config.edit, []
        if edit.resolution % cls.resolution_multiple:
            found.append(("edit.resolution", f"must be a positive multiple of {cls.resolution_multiple} for "
                                             f"{cls.backend} (got {edit.resolution})"))
        if cls.max_images_per_call is not None and edit.max_batch > cls.max_images_per_call:
            found.append(("edit.max_batch", f"{cls.backend}'s pipeline takes at most {cls.max_images_per_call} "
                                            f"image(s) a call (got {edit.max_batch})"))
        return found

    @classmethod
    def keeps_background(cls, edit: EditConfig) -> bool:
        """Whether members are composited onto the seed outside the person mask."""
        return cls.masks_person or edit.keep_background

    @classmethod
    def denoising_steps(cls, edit: EditConfig) -> int:
        """Steps actually run for one image."""
        return edit.steps

    @classmethod
    def denoiser_evals_per_step(cls, edit: EditConfig) -> int:
        """UNet/transformer evaluations per step (classifier-free guidance: 2)."""
        return 2

    @classmethod
    def model_family(cls, edit: EditConfig) -> str:
        """The denoiser's family, for FLOP estimates (``pipeline/commands/cost.py``): sd | sdxl (UNets; an SDXL
        checkpoint is told by "xl" in its name) | flux | flux2_klein | qwen_image (DiTs)."""
        return "sdxl" if "xl" in edit.model.lower() else "sd"

    @classmethod
    def context_pixels(cls, edit: EditConfig) -> int:
        """Pixels of the seed image the denoiser reads as tokens beside its output (a DiT editor's context
        image); 0 where the seed enters as extra channels of the output's latents (UNet editors)."""
        return 0

    @classmethod
    def images_and_calls(cls, members: int, candidates: int, edit: EditConfig) -> tuple[int, int]:
        """Images rendered for one set of ``members`` x ``candidates``, and the model calls they take."""
        images = members * candidates
        return images, math.ceil(images / cls.batch_limit(edit))

    @classmethod
    def batch_limit(cls, edit: EditConfig) -> int:
        """Images per pipeline call: ``edit.max_batch``, within the pipeline's own limit."""
        return min(edit.max_batch, cls.max_images_per_call or edit.max_batch)

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
        uses = [ModelUse("editor", "edit.model", edit.model, edit.revision, edit.allow_pickle, "model_index.json")]
        if cls.keeps_background(edit):
            uses.append(ModelUse("segmenter", "edit.mask.model", edit.mask.model, edit.mask.revision, edit.allow_pickle))
        return uses

    # -- the stage ------------------------------------------------------------------------------------
    def __init__(self, config: EditConfig, filter_config=None, candidates=None, vocabulary=None):
        super().__init__()
        self.config = self.with_defaults(config)
        self.filter_config = filter_config  # early rejection and first_pass rounds judge with the filter's checks
        self.candidates = candidates  # plan.candidates: stop first_pass renders in rounds (stages/edit/rounds.py)
        self.vocabulary = vocabulary  # the filter judge's words, for first_pass rounds

    # -- set-up ---------------------------------------------------------------------------------------
    def setup(self) -> None:
        set_threads(self.config.threads)
        self.device = resolve_device(self.config.device)
        self.dtype = resolve_dtype(self.config.dtype, self.device)
        self.segmenter = None
        if self.keeps_background(self.config):
            self.segmenter = RegionSegmenter(self.config.mask, self.device, self.config.allow_pickle)
            self.segmenter.setup()
        self.pipe = self.load()
        self.rounds = None
        if self.candidates is not None and self.candidates.stop == "first_pass":
            from stages.edit.rounds import Rounds

            self.rounds = Rounds(self, self.filter_config, self.vocabulary)

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

    def prompt(self, member: dict) -> str:
        """What the model is conditioned on: the member's ``prompt_field``, and the identity clause after an
        instruction when ``preserve_identity`` is on."""
        text = member[self.prompt_field]
        if self.config.preserve_identity and self.prompt_field == "instruction":
            text = f"{text.rstrip()} {self.config.identity_clause.strip()}"
        return text

    def jobs(self, row: dict, candidate: int | None = None, members: list[dict] | None = None) -> list[dict]:
        """Every member x candidate of the set, candidate-major; or candidate ``candidate`` of ``members``."""
        chosen = range(len(row["candidate_seeds"])) if candidate is None else [candidate]
        return [{"member": member, "member_id": member["member_id"], "candidate": c, "noise_seed": seed,
                 "prompt": self.prompt(member), **draws}
                for c in chosen for seed in [row["candidate_seeds"][c]] for draws in [self.draws(seed)]
                for member in (row["members"] if members is None else members)]

    def seed_crop(self, row: dict):
        """The seed photo at the edit size: what every member is made from, and their size."""
        return square_crop(from_raw(row["image_rgb"], row["width"], row["height"]), self.config.resolution)

    def person_region(self, row: dict, source):
        """The person mask of the seed crop (raises when none is found: the set becomes an error set)."""
        return self.segmenter.mask(source, [a["attribute"] for a in row["members"][0]["attributes"]])

    def prepare(self, row: dict, source, region):
        """What every chunk of the set needs, made once: by default the seed crop itself. ``region`` is the
        person mask when the background is kept, else None."""
        return source

    def render(self, context, jobs: list[dict]) -> list[np.ndarray]:
        raise NotImplementedError

    def call_pipeline(self, jobs: list[dict], **inputs) -> list[np.ndarray]:
        """One diffusers pipeline call for ``jobs``: their prompts, one noise generator per job from its
        candidate's seed, the configured steps and guidance, plus the backend's own ``inputs``."""
        result = self.pipe(
            prompt=[j["prompt"] for j in jobs],
            num_inference_steps=self.config.steps,
            generator=generators(j["noise_seed"] for j in jobs),
            output_type="np",
            **self.guidance_arguments(jobs),
            **inputs,
        )
        return to_uint8(result.images)

    def guidance_arguments(self, jobs: list[dict]) -> dict:
        """The pipeline's own names for the guidance settings of ``jobs``."""
        return {"guidance_scale": self.config.guidance_scale}

    def begin_set(self, row: dict) -> SetWork:
        """What rendering the set needs, made once: the seed crop, its person mask, the backend's context."""
        source = self.seed_crop(row)
        region = self.person_region(row, source) if self.segmenter is not None else None
        return SetWork(self.prepare(row, source, region), np.asarray(source), region)

    def finish_candidates(self, work: SetWork, candidates: list[dict]) -> None:
        """Rendered candidates of the set made final: composited onto the seed when the background is kept."""
        if work.region is not None:
            self.keep_seed_outside(candidates, work.source, work.region.soft)

    def finish_set(self, row: dict, work: SetWork) -> None:
        """What the set row records once its candidates are rendered (generate mode: the base images)."""

    def edit_set(self, row: dict) -> list[dict]:
        work = self.begin_set(row)
        candidates = []
        for chunk in self.chunks(self.jobs(row)):
            candidates += self.render_jobs(chunk, [work.context] * len(chunk))
        self.finish_candidates(work, candidates)
        self.finish_set(row, work)
        return candidates

    def keep_seed_outside(self, candidates: list[dict], source: np.ndarray, soft: np.ndarray) -> None:
        """Each rendered member onto the seed: the seed's pixels exactly where the feathered mask is 0."""
        for cand in candidates:
            if cand["image_rgb"] is not None:
                image = np.frombuffer(cand["image_rgb"], np.uint8).reshape(cand["height"], cand["width"], 3)
                cand["image_rgb"] = blend(source, image, soft).tobytes()
                self.counters["backgrounds_kept"] += 1

    def wants(self, row: dict) -> bool:
        return row["status"] == STATUS_OK and row["set_status"] is None

    def process_row(self, row: dict) -> None:
        row["candidates"] = self.edit_set(row)

    def process_rows(self, rows: list[dict]) -> list[dict]:
        return super().process_rows(rows) if self.rounds is None else self.rounds.process_rows(rows)
