"""Generate mode: a whole set from text with one text-to-image model (SD 1.5 or SDXL families).

Each candidate renders the base prompt (the seed's caption, "a photo of a chef") and every member's
target caption ("a photo of a female chef") from the same initial noise, with prompt-to-prompt attention
control (``stages/editors/p2p.py``) for the first ``p2p_fraction`` of the steps. The sampler is DDIM with
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

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from schemas.records import STATUS_REJECTED
from stages.editors.base import Editor, draw_uniform, no_safety_checker, to_uint8
from stages.editors.p2p import AttentionControl, PromptToPromptProcessor, token_map


@dataclass
class GenerateContext:
    base_prompt: str
    members: list[dict]
    bases: dict[int, np.ndarray] = field(default_factory=dict)  # candidate -> its base image, once rendered
    stopped: dict[tuple[int, str], dict] = field(default_factory=dict)  # (candidate, member_id) -> early verdict


@dataclass
class DenoisingBatch:
    """The rows denoised together: latents and guidance per row; the text conditioning and the
    attention-control tables for both halves of the classifier-free guidance batch (unconditional first)."""

    latents: object
    scale: object
    embeds: object
    added: dict | None  # SDXL's pooled text embeddings and time ids
    base: object  # each row's base row
    injected: object  # steps x rows: under self-attention control
    self_source: object  # steps x rows: whose queries and keys a row's self-attention uses
    token_map: object | None  # cross-attention refine: member token -> base token

    def keep(self, positions: list[int]) -> "DenoisingBatch":
        """Only the rows at ``positions``: both halves shrink alike, and row indices are renumbered."""
        import torch

        size, m, device = self.latents.shape[0], len(positions), self.latents.device
        columns = torch.tensor(positions + [p + size for p in positions], device=device)
        renumber = torch.full((2 * size,), -1, dtype=torch.long, device=device)
        renumber[columns] = torch.arange(2 * m, device=device)
        return DenoisingBatch(
            latents=self.latents[columns[:m]], scale=self.scale[columns[:m]], embeds=self.embeds[columns],
            added=None if self.added is None else {name: value[columns] for name, value in self.added.items()},
            base=renumber[self.base[columns]], injected=self.injected[:, columns],
            self_source=renumber[self.self_source[:, columns]],
            token_map=None if self.token_map is None else self.token_map[columns],
        )


class TextToImageEditor(Editor):
    prompt_field = "target_caption"

    def load(self):
        import torch
        from diffusers import AutoPipelineForText2Image, DDIMScheduler

        pipe = self.from_pretrained(AutoPipelineForText2Image, **no_safety_checker(self.config.model))
        self.scheduler_config = DDIMScheduler.from_config(pipe.scheduler.config).config
        self.control = AttentionControl()
        pipe.unet.set_attn_processor(PromptToPromptProcessor(self.control))
        self.is_xl = getattr(pipe, "text_encoder_2", None) is not None
        if self.dtype == torch.float16 and getattr(pipe.vae.config, "force_upcast", False):
            pipe.vae.to(torch.float32)  # the SDXL VAE overflows in float16
        self.judge = None
        if self.config.early_rejection.enabled:
            from stages.filter import ClipFilter

            if self.filter_config is None:
                raise ValueError("edit.early_rejection judges with the filter's checks: pass the filter config")
            self.judge = ClipFilter(self.filter_config)
            self.judge.setup()
        self.denoised_rows = 0  # rows x steps through the UNet (each with its unconditional twin)
        self.decoded_rows = 0  # images through the VAE decoder: final ones and early rejection's predictions
        self.judged_rows = 0  # predicted images early rejection scored with CLIP
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

    def prepare(self, row: dict) -> GenerateContext:
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

    def edit_set(self, row: dict) -> list[dict]:
        context = self.prepare(row)
        candidates = self.render_set(row, context)
        for cand in candidates:
            verdict = context.stopped.get((cand["candidate"], cand["member_id"]))
            if verdict is not None and cand["error"] is None:
                cand.update(verdict["scores"], failed_checks=verdict["failed_checks"], status=STATUS_REJECTED,
                            reason=verdict["reason"])
        bases = [context.bases.get(c) for c in range(len(row["candidate_seeds"]))]
        row["candidate_bases"] = [None if b is None else b.tobytes() for b in bases]
        first = next((b for b in bases if b is not None), None)
        if first is not None:  # the set's source image until the filter picks a candidate
            row.update(image_rgb=first.tobytes(), width=first.shape[1], height=first.shape[0])
        return candidates

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
            side = self.config.resolution // self.pipe.vae_scale_factor
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

        images, stopped = self.sample(prompts, base_rows, torch.cat(noise), guidance, fractions,
                                      judge if self.judge else None)
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
        needed = min(self.judge.config.min_members or total, total)
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

    def _encode(self, prompts: list[str]):
        """Text conditioning for [unconditional rows; conditional rows], SD or SDXL."""
        import torch

        pipe, device, n = self.pipe, self.device, len(prompts)
        if not self.is_xl:
            embeds, negative = pipe.encode_prompt(prompts, device, 1, True)
            return torch.cat([negative, embeds]), None
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=True
        )
        side = self.config.resolution
        time_ids = pipe._get_add_time_ids(
            (side, side), (0, 0), (side, side), dtype=embeds.dtype, text_encoder_projection_dim=int(pooled.shape[-1])
        )
        added = {"text_embeds": torch.cat([negative_pooled, pooled]), "time_ids": time_ids.to(device).repeat(2 * n, 1)}
        return torch.cat([negative, embeds]), added

    def _token_maps(self, prompts: list[str], base_rows: list[int]):
        import torch

        tokenizer = self.pipe.tokenizer
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids
        maps = [token_map(ids[b], ids[i]) for i, b in enumerate(base_rows)]
        return torch.tensor(maps + maps, device=self.device)

    def check_after(self) -> int:
        """After how many steps early rejection looks: at least one step done, at least one to go."""
        steps = self.config.steps
        return max(1, min(steps - 1, round(self.config.early_rejection.at_fraction * steps)))

    def decode(self, latents) -> list[np.ndarray]:
        self.decoded_rows += latents.shape[0]
        vae = self.pipe.vae
        decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        return to_uint8(self.pipe.image_processor.postprocess(decoded, output_type="np"))

    def sample(self, prompts, base_rows, noise, guidance, fractions, judge=None) -> tuple[list[np.ndarray], dict]:
        """Images of every row, and early rejection's verdicts by row (their images are the predictions
        at the check). ``judge(rows, predicted images)`` returns the verdicts of the rows to stop."""
        import torch
        from diffusers import DDIMScheduler

        pipe, steps, n = self.pipe, self.config.steps, len(prompts)
        check_after = self.check_after() if judge else None
        images: list[np.ndarray | None] = [None] * n
        verdicts: dict[int, dict] = {}
        with torch.no_grad():
            embeds, added = self._encode(prompts)
            scheduler = DDIMScheduler.from_config(self.scheduler_config)
            scheduler.set_timesteps(steps, device=self.device)
            # Which rows are under control at each step, worked out once: nothing on the GPU waits on
            # the host inside the loop. The unconditional half (the first n rows) is never controlled.
            cutoffs = [round(f * steps) for f in fractions]
            base = torch.tensor(base_rows + [b + n for b in base_rows], device=self.device)
            injected = torch.tensor([[False] * n + [c > i for c in cutoffs] for i in range(steps)], device=self.device)
            batch = DenoisingBatch(
                latents=noise.to(self.device, embeds.dtype) * scheduler.init_noise_sigma,
                scale=torch.tensor(guidance, device=self.device, dtype=embeds.dtype).view(-1, 1, 1, 1),
                embeds=embeds, added=added, base=base, injected=injected,
                self_source=torch.where(injected, base, torch.arange(2 * n, device=self.device)),  # steps x 2n
                token_map=self._token_maps(prompts, base_rows) if self.config.p2p.cross_attention else None,
            )
            alive = list(range(n))  # the rows still denoising, in batch order
            control = self.control
            try:
                for i, t in enumerate(scheduler.timesteps):
                    active = any(cutoffs[r] > i for r in alive)
                    control.base_rows, control.token_map = batch.base, batch.token_map
                    control.self_source = batch.self_source[i] if active else None
                    control.cross_rows = batch.injected[i] if active and batch.token_map is not None else None
                    latents = batch.latents
                    model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
                    predicted = pipe.unet(model_input, t, encoder_hidden_states=batch.embeds,
                                          added_cond_kwargs=batch.added).sample
                    uncond, cond = predicted.chunk(2)
                    step = scheduler.step(uncond + batch.scale * (cond - uncond), t, latents)
                    batch.latents = step.prev_sample
                    self.denoised_rows += len(alive)
                    if i + 1 == check_after:
                        clean = self.decode(step.pred_original_sample)
                        self.judged_rows += len(alive)
                        stop = judge(alive, clean)
                        if stop:
                            verdicts.update(stop)
                            images = [clean[alive.index(r)] if r in stop else image for r, image in enumerate(images)]
                            keep = [k for k, r in enumerate(alive) if r not in stop]
                            alive = [alive[k] for k in keep]
                            batch = batch.keep(keep)
            finally:
                control.off()
            for r, image in zip(alive, self.decode(batch.latents)):
                images[r] = image
        return images, verdicts
