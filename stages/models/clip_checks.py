"""The CLIP checks of a candidate image, shared by the filter stage and early rejection in the editor.

Scores (InstructPix2Pix / SocialCounterfactuals conventions, all cosine similarities of L2-normalised
open_clip embeddings):
  text_image        image of the candidate vs its target caption
  directional       (candidate - source) image direction vs (target - source) caption direction
  image_image       candidate vs source image
  attribute_margin  zero-shot among the set's member phrases: P(target) - max P(other member)
A check fails when its score is below its threshold (``filter.thresholds``; null turns it off).

The identity member (the value the seed already shows: its target caption is the caption) has no text
change, so no edit direction: its ``directional`` is null with a note, not 0.0, and the check does not
apply to it; the other checks do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.records import CLIP_SCORES
from stages.models.clip import ClipEmbedder


@dataclass
class Thresholds:
    """Minimum score per check; null turns a check off. Defaults are the published ones."""

    text_image: float | None = 0.2
    directional: float | None = 0.2
    image_image: float | None = 0.7
    attribute_margin: float | None = 0.0
    # Generate mode: the base image against its own prompt (InstructPix2Pix keeps a pair only when both
    # images match their captions); null uses text_image's threshold.
    base_text_image: float | None = None

    def base_minimum(self) -> float | None:
        return self.text_image if self.base_text_image is None else self.base_text_image


NO_DIRECTION = "no edit direction: the image or the caption did not change"
IDENTITY_NOTE = "directional: identity member: no text change"


def directional_similarity(img: np.ndarray, src: np.ndarray, txt: np.ndarray, src_txt: np.ndarray) -> float:
    """Cosine of the image's change with the caption's change; 0 when either did not change, as
    InstructPix2Pix's filter computes it, so an unchanged output fails a positive threshold."""
    d_img, d_txt = img - src, txt - src_txt
    n_img, n_txt = np.linalg.norm(d_img), np.linalg.norm(d_txt)
    if n_txt < 1e-6 or n_img < 1e-6:
        return 0.0
    return float(np.dot(d_img, d_txt) / (n_img * n_txt))


class ClipChecks:
    """The embedder and the thresholds of ``config`` (the ``filter`` section: model, pretrained, device,
    precision, thresholds, attribute_prompt)."""

    def __init__(self, config):
        self.config = config
        self.embedder = ClipEmbedder(config.model, config.pretrained, config.device, config.precision)

    def text_embeddings(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Embed one set's texts in one call of fixed composition.

        No cache across sets: which texts a call holds would then depend on how Ray batched the sets
        before, and batch composition moves float32 results in the last bits, which moves scores.
        """
        unique = list(dict.fromkeys(texts))
        return dict(zip(unique, self.embedder.texts(unique)))

    def set_texts(self, caption: str, members: list[dict]) -> tuple[list[str], dict[str, np.ndarray]]:
        """The set's attribute prompts, and the embeddings of its caption, targets and those prompts."""
        prompts = [self.config.attribute_prompt.format(phrase=m["phrase"]) for m in members]
        return prompts, self.text_embeddings([caption] + [m["target_caption"] for m in members] + prompts)

    def score_candidate(self, img, src, text: dict, caption: str, target: dict, probs: np.ndarray, index: int) -> dict:
        """Scores of one candidate; ``probs`` are its zero-shot probabilities over the set's members."""
        others = np.delete(probs, index)
        identity = bool(target.get("identity"))
        return {
            "text_image": float(np.dot(img, text[target["target_caption"]])),
            "directional": None if identity else directional_similarity(
                img, src, text[target["target_caption"]], text[caption]),
            "image_image": float(np.dot(img, src)),
            "attribute_margin": float(probs[index] - (others.max() if len(others) else 0.0)),
        }

    @staticmethod
    def score_notes(member: dict) -> str | None:
        """Why a check did not apply to a member's candidates (null: every check applied)."""
        return IDENTITY_NOTE if member.get("identity") else None

    def failed_checks(self, scores: dict, margin: float = 0.0) -> list[str]:
        """The enabled checks a candidate fails: by more than ``margin`` below the threshold."""
        failed = []
        for name in CLIP_SCORES:
            minimum = getattr(self.config.thresholds, name)
            value = scores.get(name)
            if minimum is not None and value is not None and value < minimum - margin:
                failed.append(name)
        return failed

    def members_needed(self, total: int) -> int:
        """Passing members a set needs to be kept (``min_members``; 0 means all of them)."""
        return min(self.config.min_members or total, total)

    def failure_reasons(self, scores: dict, failed: list[str], margin: float = 0.0) -> list[str]:
        below = f" - {margin:g} margin" if margin else ""
        return [f"{n} {scores[n]:.4f} < {getattr(self.config.thresholds, n):.4f}{below}"
                + (f" ({NO_DIRECTION})" if n == "directional" and scores[n] == 0.0 else "") for n in failed]

    def judge_predicted(self, caption: str, members: list[dict], sources: dict, items: list[tuple], margin: float) -> list[dict]:
        """Early rejection's check of predicted images part-way through sampling. ``sources`` maps a
        candidate to its predicted base image, ``items`` are (candidate, member index, image). Returns
        per item its scores and the checks it fails by more than ``margin`` (empty: keep going)."""
        prompts, text = self.set_texts(caption, members)
        keys = sorted(sources)
        embeddings = self.embedder.images([sources[k] for k in keys] + [image for _, _, image in items])
        source_embeddings = dict(zip(keys, embeddings[: len(keys)]))
        item_embeddings = embeddings[len(keys):]
        probs = self.embedder.zero_shot(item_embeddings, np.stack([text[p] for p in prompts]))
        out = []
        for (key, index, _), img, item_probs in zip(items, item_embeddings, probs):
            scores = self.score_candidate(img, source_embeddings[key], text, caption, members[index], item_probs, index)
            scores = {k: (None if v is None else float(v)) for k, v in scores.items()}
            failed = self.failed_checks(scores, margin)
            out.append({"scores": scores, "failed_checks": failed,
                        "reason": "; ".join(self.failure_reasons(scores, failed, margin))})
        return out
