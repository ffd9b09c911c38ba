"""The sets stage: each seed x each configured axis -> one counterfactual set row with all its members.
Configured by the ``plan`` section (how sets are planned).

A member per value (or value combination, for an intersectional axis), each with its target caption
and editor instruction; the set's concept; and one deterministic noise seed per candidate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from schemas import keys
from schemas.records import SET, STATUS_ERROR, STATUS_OK
from schemas.taxonomy import Taxonomy
from stages.base import Resources, Stage, fail_seed
from stages.sets.phrasing import has_anchor, instruction, person_phrase, swap_caption


CANDIDATE_STOPS = ("best_of", "first_pass")


@dataclass
class CandidatesConfig:
    """How many candidates a member may get, and when its rendering stops. ``best_of``: all ``max`` are rendered
    and the filter keeps the best. ``first_pass``: rendered in rounds (stages/edit/rounds.py), judged in the editor
    by the filter's own checks: candidate 0 of every member, then the next candidate of only as many unpassed members
    as the set can afford to lose plus one; a member stops at its first pass, a set once it has enough members or
    can no longer reach ``filter.min_members``."""

    max: int | None = None  # null: candidates_per_set
    stop: Literal["best_of", "first_pass"] = "best_of"


@dataclass
class PlanConfig:
    axes: list[str] = field(default_factory=lambda: ["gender"])
    concepts: list[str] = field(default_factory=list)  # allowed concepts; empty = all in the taxonomy
    default_concept: str = "career"  # when neither the source nor the caption names one
    concept_from_caption: bool = True  # match concept keywords in the caption
    candidates_per_set: int = 1  # the same as candidates: {max: N, stop: best_of}
    candidates: CandidatesConfig = field(default_factory=CandidatesConfig)
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=0.25, batch_size=32))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if not self.axes:
            found.append(("axes", "must name at least one axis"))
        if len(set(self.axes)) != len(self.axes):
            found.append(("axes", "lists an axis twice"))
        if self.candidates_per_set < 1:
            found.append(("candidates_per_set", "must be >= 1"))
        given = self.candidates.max
        if given is not None and given < 1:
            found.append(("candidates.max", "must be >= 1 (or null: candidates_per_set)"))
        if given is not None and self.candidates_per_set not in (1, given):
            found.append(("candidates.max", f"{given} conflicts with candidates_per_set {self.candidates_per_set}: "
                                            "set one of them"))
        if self.candidates.stop not in CANDIDATE_STOPS:
            found.append(("candidates.stop", f"unknown {self.candidates.stop!r}; allowed: {', '.join(CANDIDATE_STOPS)}"))
        return found

    def max_candidates(self) -> int:
        """Candidates a member may get: ``candidates.max``, else ``candidates_per_set``."""
        return self.candidates.max or self.candidates_per_set


def _keyword_pattern(keyword: str) -> re.Pattern:
    return re.compile(r"\b" + re.escape(keyword) + r"\b", re.IGNORECASE)


class SetPlanner(Stage):
    """Seed rows in, set rows out (several per seed); a seed that failed before still gets its sets, as
    error sets, so the manifest lists every planned candidate."""

    name = "sets"
    output_schema = SET

    def __init__(self, config: PlanConfig, taxonomy: Taxonomy, run_seed: int):
        super().__init__()
        self.config = config
        self.taxonomy = taxonomy
        self.run_seed = int(run_seed)
        allowed = config.concepts or list(taxonomy.concepts)
        self.allowed_concepts = [c for c in allowed if c in taxonomy.concepts]
        self.concept_keywords = [
            (concept_id, _keyword_pattern(k))
            for concept_id in self.allowed_concepts
            for k in taxonomy.concepts[concept_id].keywords
        ]
        self.members = {axis: self._members(axis) for axis in config.axes}

    def _members(self, axis_id: str) -> list[tuple]:
        axis = self.taxonomy.axes[axis_id]
        out = []
        for combo in self.taxonomy.axis_value_combinations(axis_id):
            out.append(
                (
                    keys.member_id([v.id for v in combo]),
                    [{"attribute": a, "value": v.id} for a, v in zip(axis.attributes, combo)],
                    combo,
                )
            )
        return out

    def resolve_concept(self, row: dict) -> tuple[str, str]:
        given = row.get("concept")
        if given and given in self.allowed_concepts:
            return given, row.get("concept_source") or "source"
        caption = row.get("caption") or ""
        if self.config.concept_from_caption and caption:
            for concept_id, pattern in self.concept_keywords:
                if pattern.search(caption):
                    return concept_id, "caption"
        return self.config.default_concept, "default"

    def plan_seed(self, row: dict) -> list[dict]:
        concept, concept_source = self.resolve_concept(row) if row["status"] == STATUS_OK else (row.get("concept"), None)
        sets = []
        for axis_id in self.config.axes:
            set_key = keys.set_id(row["seed_id"], axis_id)
            attribute_ids = self.taxonomy.axes[axis_id].attributes
            members = []
            conversations = self.taxonomy.conversation(concept)
            for member_key, attributes, combo in self.members[axis_id]:
                ok = row["status"] == STATUS_OK
                target = swap_caption(row["caption"], self.taxonomy, attribute_ids, combo) if ok else None
                members.append(
                    {
                        "member_id": member_key,
                        "attributes": attributes,
                        "phrase": person_phrase(combo),
                        "target_caption": target,
                        "instruction": instruction(self.taxonomy, combo),
                        "identity": ok and target == row["caption"],
                        "conversations": conversations,
                    }
                )
            out = dict(row)
            if row["status"] == STATUS_OK and not all(has_anchor(row["caption"], self.taxonomy, a) for a in attribute_ids):
                fallback = ("fallback phrasing: no person noun or attribute word to swap in the caption, "
                            "so each member's phrase is appended to it")
                out["caption_note"] = "; ".join(n for n in (row.get("caption_note"), fallback) if n)
                self.counters["fallback_phrasings"] += 1
            out.update(
                set_id=set_key,
                axis=axis_id,
                concept=concept,
                concept_source=concept_source,
                members=members,
                candidate_seeds=[keys.noise_seed(self.run_seed, set_key, c) for c in range(self.config.max_candidates())],
                candidates=None,
                set_status=None if row["status"] == STATUS_OK else STATUS_ERROR,
                set_reason=None if row["status"] == STATUS_OK else row.get("error"),
            )
            sets.append(out)
        return sets

    def process_row(self, row: dict) -> list[dict]:
        return self.plan_seed(row)

    def on_error(self, row: dict, exc: Exception) -> list[dict]:
        failed = dict(row, caption=None)
        fail_seed(failed, self.reason(exc))
        return self.plan_seed(failed)
