"""The text_to_image backend's sampling loop: DDIM (eta 0) over a batch of rows that share initial noise
per candidate, with prompt-to-prompt attention control (stages/edit/p2p.py), read in numbered steps like a
diffusers pipeline's ``__call__``. Written against diffusers 0.42 (constraints.txt).

With early rejection the loop pauses once: DDIM's predicted clean images are decoded and handed to a
``judge``; the rows it stops leave the batch (``DenoisingBatch.keep``) and keep their predicted image.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np

from stages.edit.calls import to_uint8
from stages.edit.p2p import AttentionControl, PromptToPromptProcessor, token_map


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
    pred_original: object = None  # DDIM's predicted clean latents after the last step

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


class PromptToPromptSampler:
    """Wraps a loaded SD 1.5 or SDXL text-to-image pipeline; ``counters`` receives the work done."""

    def __init__(self, pipe, device: str, resolution: int, cross_attention: bool, counters: Counter,
                 control: str = "both"):
        from diffusers import DDIMScheduler

        self.pipe, self.device, self.resolution = pipe, device, resolution
        self.cross_attention = cross_attention
        self.control_both = control == "both"
        self.counters = counters
        self.scheduler_config = DDIMScheduler.from_config(pipe.scheduler.config).config
        self.is_xl = getattr(pipe, "text_encoder_2", None) is not None
        self.control = AttentionControl()
        pipe.unet.set_attn_processor(PromptToPromptProcessor(self.control))

    def latent_side(self) -> int:
        return self.resolution // self.pipe.vae_scale_factor

    def encode(self, prompts: list[str]):
        """Text conditioning for [unconditional rows; conditional rows], SD or SDXL."""
        import torch

        pipe, device, n = self.pipe, self.device, len(prompts)
        if not self.is_xl:
            embeds, negative = pipe.encode_prompt(prompts, device, 1, True)
            return torch.cat([negative, embeds]), None
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=True
        )
        side = self.resolution
        # A private diffusers method (StableDiffusionXLPipeline._get_add_time_ids, diffusers 0.42): SDXL's
        # size and crop conditioning, built exactly as the pipeline builds it.
        time_ids = pipe._get_add_time_ids(
            (side, side), (0, 0), (side, side), dtype=embeds.dtype, text_encoder_projection_dim=int(pooled.shape[-1])
        )
        added = {"text_embeds": torch.cat([negative_pooled, pooled]), "time_ids": time_ids.to(device).repeat(2 * n, 1)}
        return torch.cat([negative, embeds]), added

    def token_maps(self, prompts: list[str], base_rows: list[int]):
        import torch

        tokenizer = self.pipe.tokenizer
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids
        maps = [token_map(ids[b], ids[i]) for i, b in enumerate(base_rows)]
        return torch.tensor(maps + maps, device=self.device)

    def decode(self, latents) -> list[np.ndarray]:
        self.counters["decoded_rows"] += latents.shape[0]
        vae = self.pipe.vae
        decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        return to_uint8(self.pipe.image_processor.postprocess(decoded, output_type="np"))

    def sample(self, prompts: list[str], base_rows: list[int], noise, guidance: list[float], fractions: list[float],
               steps: int, check_after: int | None = None,
               judge: Callable[[list[int], list[np.ndarray]], dict[int, dict]] | None = None,
               ) -> tuple[list[np.ndarray], dict[int, dict]]:
        """Images of every row, and the judge's verdicts by row on the rows it stopped after ``check_after``
        steps (their images are the predictions at the check)."""
        import torch
        from diffusers import DDIMScheduler

        n = len(prompts)
        images: list[np.ndarray | None] = [None] * n
        verdicts: dict[int, dict] = {}
        with torch.no_grad():
            # 1. Encode the prompts: unconditional and conditional halves.
            embeds, added = self.encode(prompts)
            # 2. Timesteps of DDIM (eta 0: the initial noise is the only randomness).
            scheduler = DDIMScheduler.from_config(self.scheduler_config)
            scheduler.set_timesteps(steps, device=self.device)
            # 3. Latents and attention-control tables. Which rows are under control at each step is worked
            #    out once: nothing on the GPU waits on the host inside the loop. The unconditional half
            #    (the first n rows) follows its base row too with control "both", never with "conditional".
            cutoffs = [round(f * steps) for f in fractions]
            base = torch.tensor(base_rows + [b + n for b in base_rows], device=self.device)
            injected = torch.tensor([[c > i and self.control_both for c in cutoffs] + [c > i for c in cutoffs]
                                     for i in range(steps)], device=self.device)
            batch = DenoisingBatch(
                latents=noise.to(self.device, embeds.dtype) * scheduler.init_noise_sigma,
                scale=torch.tensor(guidance, device=self.device, dtype=embeds.dtype).view(-1, 1, 1, 1),
                embeds=embeds, added=added, base=base, injected=injected,
                self_source=torch.where(injected, base, torch.arange(2 * n, device=self.device)),  # steps x 2n
                token_map=self.token_maps(prompts, base_rows) if self.cross_attention else None,
            )
            alive = list(range(n))  # the rows still denoising, in batch order
            # 4. Denoising loop, with early rejection's one check.
            try:
                for i, t in enumerate(scheduler.timesteps):
                    batch = self.step(scheduler, batch, i, t, any(cutoffs[r] > i for r in alive))
                    self.counters["denoised_rows"] += len(alive)
                    if i + 1 == check_after and judge is not None:
                        clean = self.decode(batch.pred_original)
                        self.counters["judged_rows"] += len(alive)
                        stop = judge(alive, clean)
                        if stop:
                            self.counters["early_stopped"] += len(stop)
                            verdicts.update(stop)
                            images = [clean[alive.index(r)] if r in stop else image for r, image in enumerate(images)]
                            keep = [k for k, r in enumerate(alive) if r not in stop]
                            alive = [alive[k] for k in keep]
                            batch = batch.keep(keep)
            finally:
                self.control.off()
            # 5. Decode the rows that finished.
            for r, image in zip(alive, self.decode(batch.latents)):
                images[r] = image
        return images, verdicts

    def step(self, scheduler, batch: DenoisingBatch, i: int, t, controlled: bool) -> DenoisingBatch:
        """One guided DDIM step of every row, with the control tables of step ``i`` set."""
        import torch

        control = self.control
        control.base_rows, control.token_map = batch.base, batch.token_map
        control.self_source = batch.self_source[i] if controlled else None
        # refine is conditional only: the unconditional rows' prompt is empty, there are no tokens to align
        conditional = torch.arange(batch.injected.shape[1], device=batch.injected.device) >= batch.injected.shape[1] // 2
        control.cross_rows = batch.injected[i] & conditional if controlled and batch.token_map is not None else None
        latents = batch.latents
        model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        predicted = self.pipe.unet(model_input, t, encoder_hidden_states=batch.embeds,
                                   added_cond_kwargs=batch.added).sample
        uncond, cond = predicted.chunk(2)
        result = scheduler.step(uncond + batch.scale * (cond - uncond), t, latents)
        batch.latents = result.prev_sample
        batch.pred_original = result.pred_original_sample
        return batch
