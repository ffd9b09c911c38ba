"""open_clip model loading and embedding, shared by the stages that score with CLIP."""

from __future__ import annotations

import numpy as np

from stages.utils.torch_runtime import one_cpu_thread, resolve_device


def open_clip_name(model: str) -> str:
    """A local directory becomes open_clip's ``local-dir:`` reference; names and ``hf-hub:`` ids pass."""
    import os

    if ":" not in model and os.path.isdir(model):
        return f"local-dir:{model}"
    return model


class ClipEmbedder:
    def __init__(self, model: str, pretrained: str | None, device: str, precision: str):
        import open_clip
        import torch

        self.device = resolve_device(device)
        name = open_clip_name(model)
        if self.device == "cpu":
            precision = "fp32"
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained if not name.startswith(("local-dir:", "hf-hub:")) else None,
            device=self.device, precision=precision,
        )
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(name)
        self.logit_scale = float(self.model.logit_scale.exp().item()) if hasattr(self.model, "logit_scale") else 100.0
        self._torch = torch

    def _normalise(self, features) -> np.ndarray:
        features = features.float()
        features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return features.cpu().numpy()

    def images(self, images: list) -> np.ndarray:
        torch = self._torch
        if not images:
            return np.zeros((0, 0), dtype=np.float32)
        pixels = torch.stack([self.preprocess(image) for image in images]).to(self.device)
        with one_cpu_thread(self.device), torch.inference_mode():
            dtype = next(self.model.parameters()).dtype
            return self._normalise(self.model.encode_image(pixels.to(dtype)))

    def zero_shot(self, image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
        """Softmax over the texts of CLIP's scaled similarities: (images x texts) probabilities."""
        logits = self.logit_scale * (image_embeddings.astype(np.float64) @ text_embeddings.astype(np.float64).T)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    def texts(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        tokens = self.tokenizer(texts).to(self.device)
        with one_cpu_thread(self.device), torch.inference_mode():
            return self._normalise(self.model.encode_text(tokens))
