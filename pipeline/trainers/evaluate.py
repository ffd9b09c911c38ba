"""``counterfactory evaluate OUT --clip MODEL``: MaxSkew@K of a CLIP model over a generated dataset.

SocialCounterfactuals' probe: for each concept and axis, take the concept's neutral prompt ("a photo
of a chef"), rank that concept's accepted counterfactual images on the axis by CLIP similarity to it,
and compare each attribute value's share of the top K with its share of all N images:
``Skew_a@K = ln((n_a in top K / K) / (n_a / N))``, MaxSkew@K = max over a, K = the axis's member count.
Counterfactual sets make N balanced by construction, so any skew comes from the model.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass

from pipeline.trainers.debias import max_skew_at_k, top_k
from pipeline.trainers.readers import iter_members

DEFAULT_PROMPT = "a photo of a {concept}"


@dataclass
class SkewRow:
    concept: str
    axis: str
    images: int  # N
    k: int
    max_skew: float
    skews: dict[str, float]  # member (attribute value combination) -> Skew@K
    top_k: list[str]  # member ids of the top K images, best first


def evaluate_output(output: str, clip_model: str, pretrained: str | None = None, prompt: str = DEFAULT_PROMPT,
                    concept_words: dict[str, str] | None = None, device: str = "auto", batch_size: int = 64,
                    embedder=None) -> list[SkewRow]:
    """MaxSkew@K per (concept, axis) with ``clip_model`` (open_clip name, hf-hub id, local dir, tiny:NAME)."""
    from stages.models.clip import ClipEmbedder

    if embedder is None:
        from pipeline.config.model_refs import resolve_model_ref

        embedder = ClipEmbedder(resolve_model_ref(clip_model), pretrained, device, "fp32")
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for member in iter_members(output):
        groups[(member["concept"], member["axis"])].append(member)
    if concept_words is None:
        concept_words = concept_words_of(output)
    rows = []
    for (concept, axis), members in sorted(groups.items()):
        members_per_set = defaultdict(int)
        for m in members:
            members_per_set[m["set_id"]] += 1
        k = max(members_per_set.values())  # the axis's member count (sets are complete when accepted)
        if len(members) < k:
            continue
        words = concept_words.get(concept, concept.replace("_", " "))
        text = embedder.texts([prompt.format(concept=words)])[0]
        scores = []
        for start in range(0, len(members), batch_size):
            images = [m["image"].convert("RGB") for m in members[start : start + batch_size]]
            scores.extend((embedder.images(images) @ text).tolist())
        labels = [m["member_id"] for m in members]
        max_skew, skews = max_skew_at_k(scores, labels, k)
        rows.append(SkewRow(concept, axis, len(members), k, max_skew, skews, [labels[i] for i in top_k(scores, k)]))
    return rows


def concept_words_of(output: str) -> dict[str, str]:
    """Concept id -> words ("authority" -> "person in a position of authority") from the run's run.json."""
    from pipeline.output.storage import Storage
    from schemas.layout import RUN_FILE

    storage = Storage(output)
    if not storage.exists(RUN_FILE):
        return {}
    return json.loads(storage.read_bytes(RUN_FILE)).get("concept_words", {})


def format_table(rows: list[SkewRow]) -> str:
    if not rows:
        return "evaluate: no accepted sets to evaluate"
    lines = [f"{'concept':<16} {'axis':<14} {'N':>5} {'K':>3} {'MaxSkew@K':>10}  most over-represented in top K"]
    for r in rows:
        worst = max(r.skews, key=r.skews.get)
        lines.append(f"{r.concept:<16} {r.axis:<14} {r.images:>5} {r.k:>3} {r.max_skew:>10.4f}  {worst}")
    mean = sum(r.max_skew for r in rows) / len(rows)
    lines.append(f"mean MaxSkew@K over {len(rows)} concept x axis pairs: {mean:.4f}")
    return "\n".join(lines)


def to_json(rows: list[SkewRow], clip_model: str, prompt: str) -> str:
    return json.dumps({"clip_model": clip_model, "prompt": prompt, "results": [asdict(r) for r in rows]},
                      indent=1, sort_keys=True)
