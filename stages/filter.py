"""Filter: score every member candidate with open_clip and decide what the set keeps.

Scores (InstructPix2Pix / SocialCounterfactuals conventions, all cosine similarities):
  text_image        image of the candidate vs its target caption
  directional       (candidate - seed) image direction vs (target - source) caption direction
  image_image       candidate vs seed image
  attribute_margin  zero-shot among the set's member phrases: P(target) - max P(other member)
A candidate passes when every enabled threshold holds and, with ``safety.enabled``, its NSFW score
(stages/safety.py, on the same embeddings) is at most the safety threshold. Per member the best passing candidate by
``rank_by`` is kept; a set is accepted when at least ``min_members`` members have one (0 = all).
In generate mode (the set carries ``candidate_bases``) each candidate is judged against its own base
image and one whole candidate set is kept: members of different candidates show different scenes.
Every candidate leaves with ``status`` accepted / rejected / error and a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa

from schemas.records import SET, STATUS_ACCEPTED, STATUS_OK, STATUS_REJECTED, rows_to_table
from stages.clip_model import ClipEmbedder
from stages import faults
from stages.imaging import from_raw
from stages.row_errors import fail_set
from stages.resources import Resources
from stages.safety import SafetyConfig, SafetyScorer

SCORES = ("text_image", "directional", "image_image", "attribute_margin")


@dataclass
class Thresholds:
    """Minimum score per check; null turns a check off. Defaults are the published ones."""

    text_image: float | None = 0.2
    directional: float | None = 0.2
    image_image: float | None = 0.7
    attribute_margin: float | None = 0.0


@dataclass
class FilterConfig:
    model: str = "ViT-L-14"  # open_clip name, hf-hub:ID, local directory, or tiny:NAME
    pretrained: str | None = "openai"  # open_clip pretrained tag (only with a plain model name)
    thresholds: Thresholds = field(default_factory=Thresholds)
    rank_by: Literal["directional", "text_image", "image_image", "attribute_margin"] = "directional"
    min_members: int = 0  # members a set needs to be accepted; 0 = all of them
    attribute_prompt: str = "a photo of {phrase}"
    device: str = "auto"
    precision: Literal["fp32", "fp16", "bf16"] = "fp16"
    # Pickle checkpoints (.bin/.pt/.ckpt) can run code when loaded: refused unless you trust them.
    allow_pickle: bool = False
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, num_gpus=0.25, batch_size=16))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.min_members < 0:
            found.append(("min_members", "must be >= 0 (0 means every member)"))
        if "{phrase}" not in self.attribute_prompt:
            found.append(("attribute_prompt", "must contain {phrase}"))
        return found


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


def directional_similarity(img: np.ndarray, src: np.ndarray, txt: np.ndarray, src_txt: np.ndarray) -> float | None:
    """None when the caption did not change: there is no direction to agree with."""
    d_img, d_txt = img - src, txt - src_txt
    n_img, n_txt = np.linalg.norm(d_img), np.linalg.norm(d_txt)
    if n_txt < 1e-6 or n_img < 1e-6:
        return None
    return float(np.dot(d_img, d_txt) / (n_img * n_txt))


class ClipFilter:
    def __init__(self, config: FilterConfig):
        self.config = config
        self.embedder = None
        self.safety = None

    def setup(self) -> None:
        self.embedder = ClipEmbedder(self.config.model, self.config.pretrained, self.config.device, self.config.precision)
        if self.config.safety.enabled:
            self.safety = SafetyScorer(self.config.safety, self.embedder)

    def text_embeddings(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Embed one set's texts in one call of fixed composition.

        No cache across sets: which texts a call holds would then depend on how Ray batched the sets
        before, and batch composition moves float32 results in the last bits, which moves scores.
        """
        unique = list(dict.fromkeys(texts))
        return dict(zip(unique, self.embedder.texts(unique)))

    def score_candidate(self, img, src, text: dict, caption: str, target: dict, probs: np.ndarray, index: int) -> dict:
        """Scores of one candidate; ``probs`` are its zero-shot probabilities over the set's members."""
        others = np.delete(probs, index)
        return {
            "text_image": _cos(img, text[target["target_caption"]]),
            "directional": directional_similarity(img, src, text[target["target_caption"]], text[caption]),
            "image_image": _cos(img, src),
            "attribute_margin": float(probs[index] - (others.max() if len(others) else 0.0)),
        }

    def failed_checks(self, scores: dict, margin: float = 0.0) -> list[str]:
        """The enabled checks a candidate fails: by more than ``margin`` below the threshold."""
        failed = []
        for name in SCORES:
            minimum = getattr(self.config.thresholds, name)
            value = scores.get(name)
            if minimum is not None and value is not None and value < minimum - margin:
                failed.append(name)
        return failed

    def set_texts(self, caption: str, members: list[dict]) -> tuple[list[str], dict[str, np.ndarray]]:
        """The set's attribute prompts, and the embeddings of its caption, targets and those prompts."""
        prompts = [self.config.attribute_prompt.format(phrase=m["phrase"]) for m in members]
        return prompts, self.text_embeddings([caption] + [m["target_caption"] for m in members] + prompts)

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
            below = f" - {margin:g} margin" if margin else ""
            reasons = [f"{n} {scores[n]:.4f} < {getattr(self.config.thresholds, n):.4f}{below}" for n in failed]
            out.append({"scores": scores, "failed_checks": failed, "reason": "; ".join(reasons)})
        return out

    def _rank(self, cand: dict) -> float:
        value = cand.get(self.config.rank_by)
        return -np.inf if value is None else value

    def judge_set(self, row: dict) -> None:
        members = row["members"]
        index_of = {m["member_id"]: i for i, m in enumerate(members)}
        prompts, text = self.set_texts(row["caption"], members)
        # Errors, and members the editor already stopped (early rejection), keep their status.
        live = [c for c in row["candidates"] if c["status"] is None and c["image_rgb"] is not None]
        bases = row.get("candidate_bases")
        # What each candidate is compared with: the seed photo, or in generate mode its own base image.
        if bases is None:
            source_keys, images = [None], [from_raw(row["image_rgb"], row["width"], row["height"])]
        else:
            source_keys = [c for c, base in enumerate(bases) if base is not None]
            images = [from_raw(bases[c], row["width"], row["height"]) for c in source_keys]
        images += [from_raw(c["image_rgb"], c["width"], c["height"]) for c in live]
        embeddings = self.embedder.images(images)
        n_sources = len(source_keys)
        sources = dict(zip(source_keys, embeddings[:n_sources]))
        nsfw = self.safety.scores(embeddings) if self.safety else [None] * len(embeddings)
        unsafe_sources = set()
        if self.safety and self.config.safety.check_source:
            unsafe_sources = {k for k, score in zip(source_keys, nsfw[:n_sources]) if self.safety.is_unsafe(score)}
            if bases is None and unsafe_sources:
                self._reject_unsafe_source(row, live, nsfw)
                return
        # Zero-shot over the members, for every candidate of the set in one product.
        cand_embeddings = embeddings[n_sources:]
        probs = self.embedder.zero_shot(cand_embeddings, np.stack([text[p] for p in prompts])) if live else []
        for cand, img, cand_probs, cand_nsfw in zip(live, cand_embeddings, probs, nsfw[n_sources:]):
            index = index_of[cand["member_id"]]
            key = cand["candidate"] if bases is not None else None
            scores = self.score_candidate(img, sources[key], text, row["caption"], members[index], cand_probs, index)
            cand.update({k: (None if v is None else float(v)) for k, v in scores.items()})
            cand["failed_checks"] = self.failed_checks(scores)
            reasons = [f"{n} {scores[n]:.4f} < {getattr(self.config.thresholds, n):.4f}" for n in cand["failed_checks"]]
            if cand_nsfw is not None:
                cand["nsfw"] = float(cand_nsfw)
                if self.safety.is_unsafe(cand_nsfw):
                    cand["failed_checks"].append("nsfw")
                    reasons.append(self.safety.reason(cand_nsfw))
            if key is not None and key in unsafe_sources:
                cand["failed_checks"].append("nsfw_source")
                reasons.append(self.safety.reason(float(nsfw[source_keys.index(key)]), "base image nsfw"))
            if cand["failed_checks"]:
                cand["status"] = STATUS_REJECTED
                cand["reason"] = "failed: " + "; ".join(reasons)
        passing = [c for c in live if not c["failed_checks"]]
        needed = min(self.config.min_members or len(members), len(members))
        if bases is None:
            self._keep_best_per_member(row, passing, needed)
        else:
            self._keep_best_candidate_set(row, passing, needed)

    def _keep_best_per_member(self, row: dict, passing: list[dict], needed: int) -> None:
        """Photo edits: every candidate shares the seed, so each member keeps its own best candidate."""
        best: dict[str, dict] = {}
        for cand in passing:  # candidates arrive in candidate order: ties keep the earlier one
            current = best.get(cand["member_id"])
            if current is None or self._rank(cand) > self._rank(current):
                best[cand["member_id"]] = cand
        accepted = len(best) >= needed
        total = len(row["members"])
        for cand in passing:
            if best.get(cand["member_id"]) is not cand:
                cand["status"] = STATUS_REJECTED
                cand["reason"] = f"passed, but not the best candidate by {self.config.rank_by}"
            elif accepted:
                cand["status"], cand["reason"] = STATUS_ACCEPTED, None
            else:
                cand["status"] = STATUS_REJECTED
                cand["reason"] = f"set rejected: {len(best)} of {total} members passed (needs {needed})"
        row["set_status"] = STATUS_ACCEPTED if accepted else STATUS_REJECTED
        row["set_reason"] = None if accepted else f"{len(best)} of {total} members passed (needs {needed})"

    def _keep_best_candidate_set(self, row: dict, passing: list[dict], needed: int) -> None:
        """Generate mode: each candidate is a different scene, so members are only counterfactuals of one
        another within a candidate. Keep one whole candidate set: among those with enough passing
        members, the best by mean ``rank_by``; the set's source becomes that candidate's base image."""
        by_candidate: dict[int, list[dict]] = {}
        for cand in passing:
            by_candidate.setdefault(cand["candidate"], []).append(cand)
        eligible = [c for c, cands in by_candidate.items() if len(cands) >= needed]
        mean_rank = {c: float(np.mean([self._rank(x) for x in by_candidate[c]])) for c in eligible}
        chosen = max(sorted(eligible), key=lambda c: mean_rank[c]) if eligible else None
        total = len(row["members"])
        most = max((len(v) for v in by_candidate.values()), default=0)
        for cand in passing:
            if chosen is None:
                cand["status"] = STATUS_REJECTED
                cand["reason"] = f"set rejected: at most {most} of {total} members of one candidate set passed (needs {needed})"
            elif cand["candidate"] != chosen:
                cand["status"] = STATUS_REJECTED
                cand["reason"] = f"passed, but candidate set {chosen} was kept (best mean {self.config.rank_by})"
            else:
                cand["status"], cand["reason"] = STATUS_ACCEPTED, None
        if chosen is None:
            row["set_status"] = STATUS_REJECTED
            row["set_reason"] = f"no candidate set with {needed} of {total} members passing (best had {most})"
            return
        row["image_rgb"] = row["candidate_bases"][chosen]
        row["set_status"], row["set_reason"] = STATUS_ACCEPTED, None

    def _reject_unsafe_source(self, row: dict, live: list[dict], nsfw) -> None:
        reason = self.safety.reason(float(nsfw[0]), "seed image nsfw")
        for cand, cand_nsfw in zip(live, nsfw[1:]):
            cand.update(nsfw=float(cand_nsfw), failed_checks=["nsfw_source"], status=STATUS_REJECTED, reason=reason)
        row["set_status"], row["set_reason"] = STATUS_REJECTED, reason

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.embedder is None:
            self.setup()
        rows = batch.to_pylist()
        for row in rows:
            if row["status"] == STATUS_OK and row["candidates"] is not None and row["set_status"] is None:
                try:
                    faults.check_row("filter", row)
                    self.judge_set(row)
                except Exception as exc:
                    fail_set(row, "filter", exc)
        return rows_to_table(rows, SET)
