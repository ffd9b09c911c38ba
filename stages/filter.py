"""Filter: score every member candidate with open_clip, measure its drift, ask a VLM judge about the
survivors, and decide what the set keeps.

The scores and checks are stages/models/clip_checks.py's, then with ``drift.enabled`` the model-free drift
measures of every candidate (stages/models/drift_checks.py), then with ``judge.enabled`` the VLM judge's
questions about the candidates that passed every other check (stages/models/judge_checks.py). A candidate passes when every enabled threshold
holds and, with ``safety.enabled``, its NSFW score (stages/models/safety.py, on the same embeddings) is at most the safety threshold. Per member the best passing candidate by
``rank_by`` is kept; a set is accepted when at least ``min_members`` members have one (0 = all).
The identity member (the value the seed already shows) has no ``directional`` score: with ``rank_by:
directional`` its candidates are ranked by ``identity_rank_by`` instead (default ``image_image``: nothing
was asked to change, so the candidate closest to the seed), and in generate mode the mean over a candidate
set leaves it out.
In generate mode (the set carries ``candidate_bases``) each candidate is judged against its own base
image and one whole candidate set is kept: members of different candidates show different scenes.
Every candidate leaves with ``status`` accepted / rejected / error and a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from schemas.records import SET, STATUS_ACCEPTED, STATUS_OK, STATUS_REJECTED, ClipScoreName
from stages.base import Resources, SetStage
from stages.models.clip_checks import ClipChecks, Thresholds
from stages.models.drift_checks import DriftChecks, DriftConfig
from stages.models.judge_checks import JudgeChecks, JudgeConfig, JudgeVocabulary
from stages.models.safety import SafetyConfig, SafetyScorer
from stages.utils.imaging import from_raw, square_crop


@dataclass
class FilterConfig:
    model: str = "ViT-L-14"  # open_clip name, hf-hub:ID, local directory, or tiny:NAME
    pretrained: str | None = "openai"  # open_clip pretrained tag (only with a plain model name)
    thresholds: Thresholds = field(default_factory=Thresholds)
    rank_by: ClipScoreName = "directional"
    # how the identity member's candidates are ranked when rank_by is directional (which it has not)
    identity_rank_by: ClipScoreName = "image_image"
    min_members: int = 0  # members a set needs to be accepted; 0 = all of them
    attribute_prompt: str = "a photo of {phrase}"
    device: str = "auto"
    precision: Literal["fp32", "fp16", "bf16"] = "fp16"
    # Pickle checkpoints (.bin/.pt/.ckpt) can run code when loaded: refused unless you trust them.
    allow_pickle: bool = False
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)  # a chat VLM's closed questions, after CLIP
    drift: DriftConfig = field(default_factory=DriftConfig)  # skin colour and the scene outside the person
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, num_gpus=0.25, batch_size=16))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.min_members < 0:
            found.append(("min_members", "must be >= 0 (0 means every member)"))
        if self.identity_rank_by == "directional":
            found.append(("identity_rank_by", "the identity member has no directional score; allowed: "
                          "text_image, image_image, attribute_margin"))
        if "{phrase}" not in self.attribute_prompt:
            found.append(("attribute_prompt", "must contain {phrase}"))
        return found


class ClipFilter(SetStage):
    name = "filter"
    output_schema = SET

    def __init__(self, config: FilterConfig, vocabulary: JudgeVocabulary | None = None):
        super().__init__()
        self.config = config
        self.vocabulary = vocabulary  # the taxonomy's words for the judge's questions

    def setup(self) -> None:
        self.checks = ClipChecks(self.config)
        self.embedder = self.checks.embedder
        self.safety = SafetyScorer(self.config.safety, self.embedder) if self.config.safety.enabled else None
        device = self.embedder.device
        self.drift = None
        if self.config.drift.enabled:
            self.drift = DriftChecks(self.config.drift, device, self.config.allow_pickle)
            self.drift.setup()
        self.judge = None
        if self.config.judge.enabled:
            if self.vocabulary is None:
                raise ValueError("filter.judge asks about the taxonomy's values and concepts: pass its vocabulary")
            self.judge = JudgeChecks(self.config.judge, self.vocabulary, device)
            self.judge.setup()

    def wants(self, row: dict) -> bool:
        return row["status"] == STATUS_OK and row["candidates"] is not None and row["set_status"] is None

    def process_row(self, row: dict) -> None:
        self.judge_set(row)

    def _rank_name(self, identity: bool) -> str:
        """The score a member's candidates are ranked by: ``rank_by``, or for an identity member, which has no
        direction, ``identity_rank_by``."""
        return self.config.identity_rank_by if identity and self.config.rank_by == "directional" else self.config.rank_by

    def _rank(self, cand: dict, identity: bool = False) -> float:
        value = cand.get(self._rank_name(identity))
        return -np.inf if value is None else value

    def judge_set(self, row: dict) -> None:
        members = row["members"]
        index_of = {m["member_id"]: i for i, m in enumerate(members)}
        checks = self.checks
        prompts, text = checks.set_texts(row["caption"], members)
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
        self.counters["images_scored"] += len(images)
        n_sources = len(source_keys)
        sources = dict(zip(source_keys, embeddings[:n_sources]))
        nsfw = self.safety.scores(embeddings) if self.safety else [None] * len(embeddings)
        unsafe_sources = set()
        if self.safety and self.config.safety.check_source:
            unsafe_sources = {k for k, score in zip(source_keys, nsfw[:n_sources]) if self.safety.is_unsafe(score)}
            if bases is None and unsafe_sources:
                self._reject_unsafe_source(row, live, nsfw)
                return
        # Generate mode: a base image that does not show its own prompt fails its whole candidate set.
        base_failures = self._base_failures(sources, text[row["caption"]]) if bases is not None else {}
        failure_reasons: dict[int, list[str]] = {}
        # Zero-shot over the members, for every candidate of the set in one product.
        cand_embeddings = embeddings[n_sources:]
        probs = self.embedder.zero_shot(cand_embeddings, np.stack([text[p] for p in prompts])) if live else []
        for cand, img, cand_probs, cand_nsfw in zip(live, cand_embeddings, probs, nsfw[n_sources:]):
            index = index_of[cand["member_id"]]
            key = cand["candidate"] if bases is not None else None
            scores = checks.score_candidate(img, sources[key], text, row["caption"], members[index], cand_probs, index)
            cand.update({k: (None if v is None else float(v)) for k, v in scores.items()})
            cand["score_notes"] = checks.score_notes(members[index])
            cand["failed_checks"] = checks.failed_checks(scores)
            reasons = checks.failure_reasons(scores, cand["failed_checks"])
            if cand_nsfw is not None:
                cand["nsfw"] = float(cand_nsfw)
                if self.safety.is_unsafe(cand_nsfw):
                    cand["failed_checks"].append("nsfw")
                    reasons.append(self.safety.reason(cand_nsfw))
            if key in base_failures:
                cand["failed_checks"].append("base_text_image")
                reasons.append(base_failures[key])
            if key is not None and key in unsafe_sources:
                cand["failed_checks"].append("nsfw_source")
                reasons.append(self.safety.reason(float(nsfw[source_keys.index(key)]), "base image nsfw"))
            failure_reasons[id(cand)] = reasons
        cand_images = images[n_sources:]
        # drift and the judge's scene question compare pixels and framing: the seed as the editor saw it, its crop
        side = live[0]["width"] if live else None
        source_images = {key: (square_crop(image, side) if bases is None and side else image)
                         for key, image in zip(source_keys, images[:n_sources])}
        if self.drift is not None:  # every candidate: drift is what the other checks do not see
            self._add_failures(self._by_source(list(zip(live, cand_images)), bases, lambda key, group:
                                               self.drift.judge_set(row, source_images[key], group)), failure_reasons)
            self.counters["drift_measured"] += len(live)
        if self.judge is not None:  # the survivors of every other check only
            survivors = [(c, im) for c, im in zip(live, cand_images) if not c["failed_checks"]]
            self._add_failures(self._by_source(survivors, bases, lambda key, group: self.judge.judge_set(
                row, source_images[key], [(c, members[index_of[c["member_id"]]], im) for c, im in group])),
                failure_reasons)
            self.counters["judged"] += len(survivors)
        for cand in live:
            if cand["failed_checks"]:
                cand["status"] = STATUS_REJECTED
                cand["reason"] = "failed: " + "; ".join(failure_reasons[id(cand)])
        passing = [c for c in live if not c["failed_checks"]]
        needed = checks.members_needed(len(members))
        if bases is None:
            self._keep_best_per_member(row, passing, needed)
        else:
            self._keep_best_candidate_set(row, passing, needed)

    @staticmethod
    def _by_source(pairs: list[tuple[dict, object]], bases, judge) -> list[tuple[dict, tuple[list, list]]]:
        """Call ``judge(source key, [(candidate, image)])`` once per source image (the seed, or in generate mode
        each candidate's own base); returns (candidate, (failed checks, reasons)) pairs."""
        groups: dict = {}
        for cand, image in pairs:
            groups.setdefault(cand["candidate"] if bases is not None else None, []).append((cand, image))
        out = []
        for key, group in groups.items():
            out += [(cand, verdict) for (cand, _), verdict in zip(group, judge(key, group))]
        return out

    @staticmethod
    def _add_failures(verdicts, failure_reasons: dict[int, list[str]]) -> None:
        for cand, (failed, reasons) in verdicts:
            cand["failed_checks"] += failed
            failure_reasons[id(cand)] += reasons

    def _base_failures(self, sources: dict, caption_embedding) -> dict[int, str]:
        """candidate -> reason, for the bases whose similarity to the base prompt is below the minimum."""
        minimum = self.config.thresholds.base_minimum()
        if minimum is None:
            return {}
        scores = {key: float(np.dot(embedding, caption_embedding)) for key, embedding in sources.items()}
        return {key: f"base text_image {score:.4f} < {minimum:.4f} (the base image does not match its prompt)"
                for key, score in scores.items() if score < minimum}

    def _keep_best_per_member(self, row: dict, passing: list[dict], needed: int) -> None:
        """Photo edits: every candidate shares the seed, so each member keeps its own best candidate."""
        identity = {m["member_id"]: bool(m.get("identity")) for m in row["members"]}
        best: dict[str, dict] = {}
        for cand in passing:  # candidates arrive in candidate order: ties keep the earlier one
            current, own = best.get(cand["member_id"]), identity[cand["member_id"]]
            if current is None or self._rank(cand, own) > self._rank(current, own):
                best[cand["member_id"]] = cand
        accepted = len(best) >= needed
        total = len(row["members"])
        for cand in passing:
            if best.get(cand["member_id"]) is not cand:
                cand["status"] = STATUS_REJECTED
                cand["reason"] = f"passed, but not the best candidate by {self._rank_name(identity[cand['member_id']])}"
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
        identity = {m["member_id"]: bool(m.get("identity")) for m in row["members"]}

        def mean_rank_of(cands: list[dict]) -> float:
            ranked = [x for x in cands if not (identity[x["member_id"]] and self.config.rank_by == "directional")]
            return float(np.mean([self._rank(x) for x in ranked])) if ranked else -np.inf

        mean_rank = {c: mean_rank_of(by_candidate[c]) for c in eligible}
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
