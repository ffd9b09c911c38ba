"""Generate mode: a whole set from text with one text-to-image model (SD 1.5 or SDXL families).

Each candidate renders the base prompt (the seed's caption, "a photo of a chef") and every member's
target caption ("a photo of a female chef") from the same initial noise, with prompt-to-prompt attention
control (``stages/edit/p2p.py``) for the first ``p2p_fraction`` of the steps. The sampler is DDIM with
eta 0, so the initial noise is the only randomness. Guidance and p2p fraction are fixed or drawn per
candidate from the candidate's seed (``edit.guidance_range``, ``edit.p2p.fraction_range``).

A call holds whole candidates or parts of them: each part carries its own copy of the base row, so any
chunking gives the same pixels. The candidates' base images go to the set row (``candidate_bases``);
the filter judges each candidate against its own base and keeps one candidate set whole.

With ``edit.early_rejection`` the loop stops once, after ``at_fraction`` of the steps: DDIM's predicted
clean images are decoded and judged with the filter's checks (each member against its candidate's
predicted base), members that fail by more than ``margin`` leave the batch and keep their predicted
image, and the rest go on as a smaller batch. Base rows always finish: they are the candidates' sources.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from dataclasses import asdict

from schemas.records import CLIP_SCORES, STATUS_REJECTED
from stages.edit.base import Editor
from stages.edit.calls import SetWork, draw_uniform, no_safety_checker
from stages.edit.config import EditConfig


@dataclass
class GenerateContext:
    base_prompt: str
    members: list[dict]
    bases: dict[int, np.ndarray] = field(default_factory=dict)  # candidate -> its base image, once rendered
    stopped: dict[tuple[int, str], dict] = field(default_factory=dict)  # (candidate, member_id) -> early verdict


class TextToImageEditor(Editor):
    backend = "text_to_image"
    summary = "generate mode: base image and members from text, shared noise, prompt-to-prompt attention control"
    prompt_field = "target_caption"
    makes_own_seeds = True
    draws_per_candidate = True
    stops_early = True

    @classmethod
    def config_problems(cls, config) -> list[tuple[str, str]]:
        edit, found = config.edit, super().config_problems(config)
        if edit.max_batch < 2:
            found.append(("edit.max_batch", "text_to_image needs >= 2: a base image and at least one member per call"))
        if edit.early_rejection.enabled and edit.steps < 2:
            found.append(("edit.early_rejection.enabled", "needs steps >= 2: a check part-way and steps after it"))
        if edit.early_rejection.enabled and all(getattr(config.filter.thresholds, n) is None for n in CLIP_SCORES):
            found.append(("edit.early_rejection.enabled",
                          "judges with the filter's thresholds, and every one is off (null): set one of "
                          f"filter.thresholds.{{{', '.join(CLIP_SCORES)}}}"))
        return found

    @classmethod
    def images_and_calls(cls, members: int, candidates: int, edit: EditConfig) -> tuple[int, int]:
        """One base image per candidate (per part of a candidate, when its members do not fit in one call)."""
        parts = math.ceil(members / (edit.max_batch - 1))
        images = (members + parts) * candidates
        return images, math.ceil(images / edit.max_batch)

    @classmethod
    def generation_settings(cls, config) -> dict:
        edit = config.edit
        return {"sampler": "ddim", "guidance_range": edit.guidance_range, "p2p": asdict(edit.p2p),
                "prompts": list(config.input.prompts), "early_rejection": asdict(edit.early_rejection)}

    @classmethod
    def card_settings(cls, edit: dict) -> str:
        p2p = edit.get("p2p") or {}
        fraction = p2p.get("fraction_range") or p2p.get("fraction")
        control = (f"prompt-to-prompt self-attention{' and cross-attention' if p2p.get('cross_attention') else ''} "
                   f"for a {fraction} fraction of steps ({p2p.get('control', 'both')} guidance halves)"
                   if p2p.get("enabled") else "no attention control")
        early = edit.get("early_rejection") or {}
        stops = (f"early rejection after a {early.get('at_fraction')} fraction of steps (margin {early.get('margin')}), "
                 if early.get("enabled") else "")
        return f"DDIM, shared noise per candidate set, {control}, {stops}"

    def load(self):
        import torch
        from diffusers import AutoPipelineForText2Image

        from stages.edit.p2p_sampler import PromptToPromptSampler  # imports torch: only where a model loads

        pipe = self.from_pretrained(AutoPipelineForText2Image, **no_safety_checker(self.config.model))
        self.sampler = PromptToPromptSampler(pipe, self.device, self.config.resolution,
                                             self.config.p2p.cross_attention, self.counters,
                                             control=self.config.p2p.control)
        if self.dtype == torch.float16 and getattr(pipe.vae.config, "force_upcast", False):
            pipe.vae.to(torch.float32)  # the SDXL VAE overflows in float16
        self.judge = None
        if self.config.early_rejection.enabled:
            from stages.models.clip_checks import ClipChecks

            if self.filter_config is None:
                raise ValueError("edit.early_rejection judges with the filter's checks: pass the filter config")
            self.judge = ClipChecks(self.filter_config)
        return pipe

    def draws(self, noise_seed: int) -> dict:
        config = self.config
        guidance = draw_uniform(noise_seed, 1, *config.guidance_range) if config.guidance_range else config.guidance_scale
        p2p = config.p2p
        if not p2p.enabled:
            fraction = 0.0
        else:
            fraction = draw_uniform(noise_seed, 2, *p2p.fraction_range) if p2p.fraction_range else p2p.fraction
        return {"guidance_scale": guidance, "p2p_fraction": fraction}

    def generate_context(self, row: dict) -> GenerateContext:
        if not (row.get("caption") or "").strip():
            raise ValueError("text_to_image needs the seed's caption as the base prompt (the seed has none)")
        return GenerateContext(row["caption"], row["members"])

    def chunks(self, jobs: list[dict]) -> list[list[dict]]:
        """Pack jobs so a call holds at most max_batch images, counting one base image per candidate in it."""
        out, current, candidates = [], [], set()
        for job in jobs:
            size = len(current) + len(candidates) + 1 + (job["candidate"] not in candidates)
            if current and size > self.config.max_batch:
                out.append(current)
                current, candidates = [], set()
            current.append(job)
            candidates.add(job["candidate"])
        return out + ([current] if current else [])

    def begin_set(self, row: dict) -> SetWork:
        return SetWork(self.generate_context(row))

    def finish_candidates(self, work: SetWork, candidates: list[dict]) -> None:
        """Members early rejection stopped are rejected, with its scores and reason."""
        for cand in candidates:
            verdict = work.context.stopped.get((cand["candidate"], cand["member_id"]))
            if verdict is not None and cand["error"] is None:
                cand.update(verdict["scores"], failed_checks=verdict["failed_checks"], status=STATUS_REJECTED,
                            reason=verdict["reason"])

    def finish_set(self, row: dict, work: SetWork) -> None:
        """Each candidate's base image (None for one never rendered), and the first as the set's source."""
        bases = [work.context.bases.get(c) for c in range(len(row["candidate_seeds"]))]
        row["candidate_bases"] = [None if b is None else b.tobytes() for b in bases]
        first = next((b for b in bases if b is not None), None)
        if first is not None:  # the set's source image until the filter picks a candidate
            row.update(image_rgb=first.tobytes(), width=first.shape[1], height=first.shape[0])

    def render(self, context: GenerateContext, jobs: list[dict]) -> list[np.ndarray]:
        import torch

        groups: dict[int, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(job["candidate"], []).append(i)
        prompts, base_rows, guidance, fractions, noise = [], [], [], [], []
        row_job: list[int | None] = []  # the job of each row; None for a candidate's base row
        row_candidate: list[int] = []
        for candidate, indices in groups.items():
            first = jobs[indices[0]]
            side = self.sampler.latent_side()
            generator = torch.Generator(device="cpu").manual_seed(int(first["noise_seed"]))
            shared = torch.randn((1, self.pipe.unet.config.in_channels, side, side), generator=generator)
            base_row = len(prompts)
            for job, prompt in [(None, context.base_prompt)] + [(i, jobs[i]["prompt"]) for i in indices]:
                prompts.append(prompt)
                base_rows.append(base_row)
                guidance.append(first["guidance_scale"])
                fractions.append(first["p2p_fraction"])
                noise.append(shared)
                row_job.append(job)
                row_candidate.append(candidate)

        def judge(rows: list[int], predicted: list[np.ndarray]) -> dict[int, dict]:
            """Early rejection's verdicts on the member rows to stop, by row."""
            from PIL import Image

            pictures = {r: Image.fromarray(image) for r, image in zip(rows, predicted)}
            sources = {row_candidate[r]: pictures[r] for r in rows if row_job[r] is None}
            members = [r for r in rows if row_job[r] is not None]
            items = [(row_candidate[r], jobs[row_job[r]]["member_id"], pictures[r]) for r in members]
            return {r: v for r, v in zip(members, self.stop_verdicts(context, sources, items)) if v is not None}

        images, stopped = self.sampler.sample(prompts, base_rows, torch.cat(noise), guidance, fractions,
                                              self.config.steps, self.check_after(), judge if self.judge else None)
        for r, verdict in stopped.items():
            job = jobs[row_job[r]]
            context.stopped[(job["candidate"], job["member_id"])] = dict(
                verdict, reason=f"early rejection after {self.check_after()} of {self.config.steps} steps: {verdict['reason']}")
        out: list[np.ndarray | None] = [None] * len(jobs)
        row = 0
        for candidate, indices in groups.items():
            context.bases.setdefault(candidate, images[row])
            for k, i in enumerate(indices):
                out[i] = images[row + 1 + k]
            row += 1 + len(indices)
        return out

    def stop_verdicts(self, context: GenerateContext, sources: dict, items: list[tuple]) -> list[dict | None]:
        """Early rejection's verdict on each (candidate, member_id, predicted image), None to go on.
        A member stops when it fails a filter check by more than the margin. The other members of its
        candidate then stop too when too few are left for the filter to keep that candidate set; they are
        counted within this call, so a candidate split across calls may keep rows the filter rejects."""
        position = {m["member_id"]: k for k, m in enumerate(context.members)}
        verdicts = self.judge.judge_predicted(context.base_prompt, context.members, sources,
                                              [(c, position[m], image) for c, m, image in items],
                                              self.config.early_rejection.margin)
        total = len(context.members)
        needed = self.judge.members_needed(total)
        failing = Counter(c for (c, _, _), v in zip(items, verdicts) if v["failed_checks"])
        out = []
        for (candidate, _, _), verdict in zip(items, verdicts):
            if verdict["failed_checks"]:
                out.append(dict(verdict, reason=f"predicted {verdict['reason']}"))
            elif total - failing[candidate] < needed:
                out.append(dict(verdict, reason=f"candidate set {candidate} cannot be kept: {failing[candidate]} of "
                                                f"its {total} members fail (needs {needed})"))
            else:
                out.append(None)
        return out

    def check_after(self) -> int:
        """After how many steps early rejection looks: at least one step done, at least one to go."""
        steps = self.config.steps
        return max(1, min(steps - 1, round(self.config.early_rejection.at_fraction * steps)))
