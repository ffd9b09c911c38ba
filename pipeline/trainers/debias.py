"""Debiasing maths for trainers: Skew tables, the ASD epoch resampler, the ASD loss, MaxSkew@K.

Anti-stereotype debiasing (Social Debiasing for Fair Multi-modal LLMs, arXiv 2408.06569):
  Skew_a = ln( share of a among the model's positive predictions for a concept / share of a in the pool )
  Skew(P_i) = the largest-magnitude Skew over sample i's attribute values for its concept
  resampling: Skew > 0 -> dropped with probability Skew / (Skew + tau1); Skew <= 0 -> kept, |Skew|
              accumulates, and each time the accumulator passes tau2 one extra copy is inserted
  loss: E = (1/N) sum_i exp(-Skew(P_i)) * CE_i
MaxSkew@K (SocialCounterfactuals, arXiv 2312.00825): Skew_a@K = ln((n_a in top K / K) / (n_a / N)), max over a.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass

# Shares of zero would make a Skew infinite; a value the model never predicts gets this share instead.
MIN_SHARE = 1e-6


@dataclass(frozen=True)
class Prediction:
    """One pool sample as the trainer's model judged it: does the model tie it to ``concept``?"""

    concept: str
    attributes: dict[str, str]  # attribute -> value of the sample
    positive: bool


def skew_table(predictions: list[Prediction]) -> dict[str, dict[tuple[str, str], float]]:
    """concept -> (attribute, value) -> Skew, from the model's predictions over the pool."""
    pool: dict[str, Counter] = defaultdict(Counter)
    positive: dict[str, Counter] = defaultdict(Counter)
    sizes, positives = Counter(), Counter()
    for p in predictions:
        sizes[p.concept] += 1
        positives[p.concept] += p.positive
        for pair in p.attributes.items():
            pool[p.concept][pair] += 1
            positive[p.concept][pair] += p.positive
    table: dict[str, dict[tuple[str, str], float]] = {}
    for concept, counts in pool.items():
        table[concept] = {}
        for pair, n in counts.items():
            pool_share = n / sizes[concept]
            positive_share = positive[concept][pair] / positives[concept] if positives[concept] else 0.0
            table[concept][pair] = math.log(max(positive_share, MIN_SHARE) / pool_share)
    return table


def sample_skew(table: dict, concept: str, attributes: dict[str, str]) -> float:
    """Skew(P_i): the Skew of largest magnitude among the sample's attribute values (0 when unknown)."""
    values = [table.get(concept, {}).get(pair) for pair in attributes.items()]
    values = [v for v in values if v is not None]
    return max(values, key=abs) if values else 0.0


def resample_epoch(skews: list[float], rng: random.Random, tau1: float = 1.0, tau2: float = 1.0) -> list[int]:
    """Indices of the samples for one epoch (a sample may appear twice or more, or not at all)."""
    chosen: list[int] = []
    accumulated = 0.0
    for index, skew in enumerate(skews):
        if skew > 0:
            if rng.random() >= skew / (skew + tau1):
                chosen.append(index)
            continue
        chosen.append(index)
        accumulated += abs(skew)
        while accumulated >= tau2:
            chosen.append(index)
            accumulated -= tau2
    return chosen


def asd_loss(logits, labels, skews, ignore_index: int = -100):
    """``mean_i exp(-Skew_i) * CE_i``; CE_i averages the token losses of sample i's answer tokens
    (labels == ignore_index elsewhere). logits (N, T, V), labels (N, T), skews (N,)."""
    import torch
    import torch.nn.functional as F

    token_loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=ignore_index, reduction="none")
    mask = (labels != ignore_index).to(token_loss.dtype)
    per_sample = (token_loss * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)
    weights = torch.exp(-torch.as_tensor(skews, dtype=per_sample.dtype, device=per_sample.device))
    return (weights * per_sample).mean()


def top_k(scores: list[float], k: int) -> list[int]:
    """Indices of the k highest scores, best first; ties keep the earlier index."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


def max_skew_at_k(scores: list[float], labels: list[str], k: int) -> tuple[float, dict[str, float]]:
    """MaxSkew@K over one concept's images: ``scores`` are similarities to its neutral prompt, ``labels``
    each image's attribute value. Returns (MaxSkew@K, Skew@K per value)."""
    if not 0 < k <= len(scores):
        raise ValueError(f"k={k} must be between 1 and the number of images ({len(scores)})")
    ranked = top_k(scores, k)
    in_top = Counter(labels[i] for i in ranked)
    total = Counter(labels)
    skews = {a: math.log(max(in_top[a] / k, MIN_SHARE) / (n / len(labels))) for a, n in total.items()}
    return max(skews.values()), skews
