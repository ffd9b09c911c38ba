"""Debiasing maths for trainers: Skew tables, the ASD epoch resampler, the ASD loss, MaxSkew@K.

Anti-stereotype debiasing (Social Debiasing for Fair Multi-modal LLMs, arXiv 2408.06569):
  Skew_a = ln( share of value a among the model's positive predictions for a concept / share of a in the pool ),
           both shares taken over the concept's samples that carry a's attribute (a race-axis sample says
           nothing about gender), the positive share smoothed (add-alpha) and Skew clipped to a range
  Skew(P_i) = the largest-magnitude Skew over sample i's attribute values for its concept
  resampling: Skew > 0 -> dropped with probability Skew / (Skew + tau1); Skew <= 0 -> kept, |Skew|
              accumulates, and each time the accumulator passes tau2 one extra copy is inserted; the epoch
              is then shuffled, so a sample's copies and its set's siblings do not share a batch
  loss: E = (1/N) sum_i exp(-Skew(P_i)) * CE_i
MaxSkew@K (SocialCounterfactuals, arXiv 2312.00825): Skew_a@K = ln((n_a in top K / K) / (n_a / N)), max over a.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass

# Add-alpha smoothing of the positive shares: a value the model never names gets a small share, not zero
# (whose log is -inf; the old floor of 1e-6 gave Skew -13 and weights of 5e5). alpha = 1 is Laplace's rule.
SMOOTHING = 1.0
# The paper's Skews lie within about [-3, 1.5]; a clip keeps a small pool's estimate from exploding the weights.
SKEW_RANGE = (-3.0, 3.0)
# MaxSkew@K counts real images in a top K: an empty share there is a measurement, floored only to stay finite.
MIN_SHARE = 1e-6


@dataclass(frozen=True)
class Prediction:
    """One pool sample as the trainer's model judged it: does the model tie it to ``concept``?"""

    concept: str
    attributes: dict[str, str]  # attribute -> value of the sample
    positive: float  # 1/True = yes, 0/False = no, or the model's probability of yes


def skew_table(predictions: list[Prediction], alpha: float = SMOOTHING,
               skew_range: tuple[float, float] = SKEW_RANGE) -> dict[str, dict[tuple[str, str], float]]:
    """concept -> (attribute, value) -> Skew, from the model's predictions over the pool.

    For each concept and attribute, over the samples that carry the attribute:
    ``Skew_a = ln(((pos_a + alpha) / (pos + alpha * V)) / (n_a / n))`` with V the attribute's values in the
    pool, clipped to ``skew_range``. A model that says yes to every sample, or to none, gets Skew 0 on a
    balanced pool; one blind to the attribute gets 0 whatever the other axes do.
    """
    pool: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    positive: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for p in predictions:
        for attribute, value in p.attributes.items():
            pool[(p.concept, attribute)][value] += 1
            positive[(p.concept, attribute)][value] += float(p.positive)
    low, high = skew_range
    table: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    for (concept, attribute), counts in pool.items():
        n, values = sum(counts.values()), len(counts)
        positives = sum(positive[(concept, attribute)].values())
        for value, n_value in counts.items():
            positive_share = (positive[(concept, attribute)][value] + alpha) / (positives + alpha * values) \
                if positives + alpha * values > 0 else n_value / n
            skew = math.log(positive_share / (n_value / n)) if positive_share > 0 else low
            table[concept][(attribute, value)] = min(max(skew, low), high)
    return dict(table)


def sample_skew(table: dict, concept: str, attributes: dict[str, str]) -> float:
    """Skew(P_i): the Skew of largest magnitude among the sample's attribute values (0 when unknown)."""
    values = [table.get(concept, {}).get(pair) for pair in attributes.items()]
    values = [v for v in values if v is not None]
    return max(values, key=abs) if values else 0.0


def resample_epoch(skews: list[float], rng: random.Random, tau1: float = 1.0, tau2: float = 1.0,
                   shuffle: bool = True) -> list[int]:
    """Indices of the samples for one epoch (a sample may appear twice or more, or not at all), shuffled
    with ``rng`` unless ``shuffle`` is off. The drop draws come first, one ``rng.random()`` per positive
    Skew in pool order, so a seeded ``rng`` gives the same epoch every time."""
    if tau1 <= 0 or tau2 <= 0:
        raise ValueError(f"tau1 and tau2 must be > 0 (got {tau1}, {tau2})")
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
    if shuffle:
        rng.shuffle(chosen)
    return chosen


def asd_loss(logits, labels, skews, ignore_index: int = -100, token_reduction: str = "sum"):
    """``mean_i exp(-Skew_i) * CE_i`` over the batch. logits (N, T, V), labels (N, T), skews (N,).

    CE_i *sums* the negative log-likelihoods of sample i's answer tokens (labels == ignore_index elsewhere)
    by default, as the paper writes it (L = -sum_t log P(y_t | ...)): a sample's weight then scales the
    whole answer, and a sample's share of the gradient does not depend on how short its siblings' answers
    are. ``token_reduction="mean"`` averages instead (the scale of LLaVA's own trainer, which averages
    over the batch's tokens)."""
    import torch
    import torch.nn.functional as F

    if token_reduction not in ("sum", "mean"):
        raise ValueError(f"token_reduction={token_reduction!r}; allowed: sum, mean")
    token_loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=ignore_index, reduction="none")
    mask = (labels != ignore_index).to(token_loss.dtype)
    per_sample = (token_loss * mask).sum(dim=1)
    if token_reduction == "mean":
        per_sample = per_sample / mask.sum(dim=1).clamp_min(1)
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
