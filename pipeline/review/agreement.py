"""Agreement between reviewers on the sets they share: Cohen's kappa for two, Fleiss' kappa for more.

A reviewer's decision on a set is ``reject`` when they rejected the set or any of its members, ``accept`` when
they gave only accepts. Kappa is left undefined (None) when chance agreement is total (everyone gave the same
single answer), where the formula divides by zero.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from schemas.records import VERDICT_ACCEPT, VERDICT_REJECT

CATEGORIES = (VERDICT_ACCEPT, VERDICT_REJECT)


def set_decisions(standing: dict[tuple, dict]) -> dict[str, dict[str, str]]:
    """reviewer -> set_id -> accept | reject, from the verdicts that stand (verdicts.latest)."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for (reviewer, set_id, _member), row in sorted(standing.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
        if row["verdict"] == VERDICT_REJECT or out[reviewer].get(set_id) == VERDICT_REJECT:
            out[reviewer][set_id] = VERDICT_REJECT
        else:
            out[reviewer][set_id] = VERDICT_ACCEPT
    return dict(out)


def cohen_kappa(first: list[str], second: list[str]) -> float | None:
    """Cohen (1960): (p_o - p_e) / (1 - p_e) over paired labels."""
    n = len(first)
    if n == 0 or n != len(second):
        return None
    observed = sum(a == b for a, b in zip(first, second)) / n
    left, right = Counter(first), Counter(second)
    chance = sum(left[c] * right[c] for c in set(left) | set(right)) / (n * n)
    return None if chance == 1 else (observed - chance) / (1 - chance)


def fleiss_kappa(table: list[list[int]]) -> float | None:
    """Fleiss (1971): ``table[i][j]`` raters who put subject i in category j, the same number of raters each."""
    if not table:
        return None
    raters = sum(table[0])
    if raters < 2 or any(sum(row) != raters for row in table):
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of raters for every subject")
    subjects = len(table)
    shares = [sum(row[j] for row in table) / (subjects * raters) for j in range(len(table[0]))]
    per_subject = [(sum(c * c for c in row) - raters) / (raters * (raters - 1)) for row in table]
    observed = sum(per_subject) / subjects
    chance = sum(p * p for p in shares)
    return None if chance == 1 else (observed - chance) / (1 - chance)


def agreement(decisions: dict[str, dict[str, str]]) -> dict:
    """Kappa on the sets every reviewer decided, and the sets where decisions differ (any overlap)."""
    reviewers = sorted(decisions)
    result = {"reviewers": reviewers, "method": None, "kappa": None, "shared_sets": 0, "observed": None,
              "pairs": [], "disagreements": []}
    if len(reviewers) < 2:
        return result
    shared = sorted(set.intersection(*(set(decisions[r]) for r in reviewers)))
    result["shared_sets"] = len(shared)
    if shared:
        labels = [[decisions[r][s] for r in reviewers] for s in shared]
        result["observed"] = sum(len(set(row)) == 1 for row in labels) / len(shared)
        if len(reviewers) == 2:
            result["method"] = "Cohen's kappa"
            result["kappa"] = cohen_kappa([row[0] for row in labels], [row[1] for row in labels])
        else:
            result["method"] = "Fleiss' kappa"
            result["kappa"] = fleiss_kappa([[row.count(c) for c in CATEGORIES] for row in labels])
    if len(reviewers) > 2:  # every pair too: with many reviewers, few sets are shared by all
        for i, first in enumerate(reviewers):
            for second in reviewers[i + 1:]:
                both = sorted(set(decisions[first]) & set(decisions[second]))
                if both:
                    kappa = cohen_kappa([decisions[first][s] for s in both], [decisions[second][s] for s in both])
                    result["pairs"].append({"reviewers": [first, second], "shared_sets": len(both), "kappa": kappa})
    all_sets = sorted(set().union(*(decisions[r] for r in reviewers)))
    for set_id in all_sets:
        given = {r: decisions[r][set_id] for r in reviewers if set_id in decisions[r]}
        if len(given) > 1 and len(set(given.values())) > 1:
            result["disagreements"].append({"set_id": set_id, "decisions": given})
    return result


def describe(standing: dict[tuple, dict]) -> str:
    """``review OUT --stats``: per-reviewer counts, agreement, disagreements with the reasons given."""
    decisions = set_decisions(standing)
    if not decisions:
        return "review: no verdicts yet"
    lines = [f"{'reviewer':<16} {'sets':>5} {'accepted':>9} {'rejected':>9} {'members rejected':>17}"]
    for reviewer in sorted(decisions):
        counts = Counter(decisions[reviewer].values())
        members = sum(1 for (r, _s, m), row in standing.items()
                      if r == reviewer and m is not None and row["verdict"] == VERDICT_REJECT)
        lines.append(f"{reviewer:<16} {len(decisions[reviewer]):>5} {counts[VERDICT_ACCEPT]:>9} "
                     f"{counts[VERDICT_REJECT]:>9} {members:>17}")
    found = agreement(decisions)
    if found["method"] is None:
        lines.append("agreement: needs two reviewers who share a set" if len(decisions) < 2
                     else f"agreement: no set is shared by all {len(decisions)} reviewers")
    else:
        kappa = "undefined (every decision the same)" if found["kappa"] is None else f"{found['kappa']:.3f}"
        lines.append(f"agreement: {found['method']} {kappa} on {found['shared_sets']} sets shared by "
                     f"{', '.join(found['reviewers'])} (raw agreement {found['observed']:.2f})")
    for pair in found["pairs"]:
        kappa = "undefined" if pair["kappa"] is None else f"{pair['kappa']:.3f}"
        lines.append(f"  Cohen's kappa {' & '.join(pair['reviewers'])}: {kappa} on {pair['shared_sets']} shared sets")
    lines.append(f"disagreements: {len(found['disagreements'])}")
    for item in found["disagreements"]:
        parts = []
        for reviewer, decision in sorted(item["decisions"].items()):
            reasons = sorted({row["reason"] for (r, s, _m), row in standing.items()
                              if r == reviewer and s == item["set_id"] and row["verdict"] == VERDICT_REJECT
                              and row["reason"]})
            parts.append(f"{reviewer} {decision}" + (f" ({'; '.join(reasons)})" if reasons else ""))
        lines.append(f"  {item['set_id']}: {', '.join(parts)}")
    return "\n".join(lines)
