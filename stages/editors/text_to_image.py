"""Generate mode: a whole set from text with one text-to-image model (SD 1.5 or SDXL families).

Each candidate renders the base prompt (the seed's caption, "a photo of a chef") and every member's
target caption ("a photo of a female chef") from the same initial noise, with prompt-to-prompt attention
control (``stages/editors/p2p.py``) for the first ``p2p_fraction`` of the steps. The sampler is DDIM with
eta 0, so the initial noise is the only randomness. Guidance and p2p fraction are fixed or drawn per
candidate from the candidate's seed (``edit.guidance_range``, ``edit.p2p.fraction_range``).

A call holds whole candidates or parts of them: each part carries its own copy of the base row, so any
chunking gives the same pixels. The candidates' base images go to the set row (``candidate_bases``);
the filter judges each candidate against its own base and keeps one candidate set whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stages.editors.base import Editor, draw_uniform, no_safety_checker, to_uint8
from stages.editors.p2p import AttentionControl, PromptToPromptProcessor, token_map


@dataclass
class GenerateContext:
    base_prompt: str
    bases: dict[int, np.ndarray] = field(default_factory=dict)  # candidate -> its base image, once rendered


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
        return GenerateContext(row["caption"])

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
        for candidate, indices in groups.items():
            first = jobs[indices[0]]
            side = self.config.resolution // self.pipe.vae_scale_factor
            generator = torch.Generator(device="cpu").manual_seed(int(first["noise_seed"]))
            shared = torch.randn((1, self.pipe.unet.config.in_channels, side, side), generator=generator)
            base_row = len(prompts)
            for prompt in [context.base_prompt] + [jobs[i]["prompt"] for i in indices]:
                prompts.append(prompt)
                base_rows.append(base_row)
                guidance.append(first["guidance_scale"])
                fractions.append(first["p2p_fraction"])
                noise.append(shared)
        images = self.sample(prompts, base_rows, torch.cat(noise), guidance, fractions)
        out: list[np.ndarray | None] = [None] * len(jobs)
        row = 0
        for candidate, indices in groups.items():
            context.bases.setdefault(candidate, images[row])
            for k, i in enumerate(indices):
                out[i] = images[row + 1 + k]
            row += 1 + len(indices)
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

    def sample(self, prompts, base_rows, noise, guidance, fractions) -> list[np.ndarray]:
        import torch
        from diffusers import DDIMScheduler

        pipe, steps, n = self.pipe, self.config.steps, len(prompts)
        with torch.no_grad():
            embeds, added = self._encode(prompts)
            scheduler = DDIMScheduler.from_config(self.scheduler_config)
            scheduler.set_timesteps(steps, device=self.device)
            latents = noise.to(self.device, embeds.dtype) * scheduler.init_noise_sigma
            scale = torch.tensor(guidance, device=self.device, dtype=embeds.dtype).view(-1, 1, 1, 1)
            # Which rows are under control at each step, worked out once: nothing on the GPU waits on
            # the host inside the loop. The unconditional half (the first n rows) is never controlled.
            cutoffs = [round(f * steps) for f in fractions]
            base = torch.tensor(base_rows + [b + n for b in base_rows], device=self.device)
            rows = torch.arange(2 * n, device=self.device)
            injected = torch.tensor([[False] * n + [c > i for c in cutoffs] for i in range(steps)], device=self.device)
            self_source = torch.where(injected, base, rows)  # steps x 2n
            control = self.control
            control.base_rows = base
            control.token_map = self._token_maps(prompts, base_rows) if self.config.p2p.cross_attention else None
            try:
                for i, t in enumerate(scheduler.timesteps):
                    active = any(c > i for c in cutoffs)
                    control.self_source = self_source[i] if active else None
                    control.cross_rows = injected[i] if active and control.token_map is not None else None
                    model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
                    predicted = pipe.unet(model_input, t, encoder_hidden_states=embeds, added_cond_kwargs=added).sample
                    uncond, cond = predicted.chunk(2)
                    latents = scheduler.step(uncond + scale * (cond - uncond), t, latents).prev_sample
            finally:
                control.off()
            vae = pipe.vae
            decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
            images = pipe.image_processor.postprocess(decoded, output_type="np")
        return to_uint8(images)
