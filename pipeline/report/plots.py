"""Report plots (PNG, matplotlib): acceptance per concept and axis, score histograms with thresholds,
accepted members per attribute value."""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict

from schemas.records import CLIP_SCORES, STATUS_ACCEPTED, in_shards


def _png(fig) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return out.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def acceptance_plot(sets: list[dict]) -> bytes:
    totals, accepted = Counter(), Counter()
    for s in sets:
        key = f"{s['concept']} / {s['axis']}"
        totals[key] += 1
        accepted[key] += s["set_status"] == STATUS_ACCEPTED
    keys = sorted(totals)
    rates = [accepted[k] / totals[k] for k in keys]
    notes = [f"{accepted[k]}/{totals[k]}" for k in keys]
    return _bars(keys, rates, "#2a9d4b", "share of sets accepted", "Acceptance per concept and axis", notes, 1.0)


def _bars(labels: list[str], values: list[float], color: str, xlabel: str, title: str,
          notes: list[str] | None = None, xmax: float | None = None) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.38 * max(len(labels), 1) + 1.2))
    ax.barh(labels or ["(none)"], values or [0], color=color)
    for i, note in enumerate(notes or []):
        ax.text(min(values[i] + 0.01, 0.9 * (xmax or max(values))), i, note, va="center", fontsize=8)
    if xmax is not None:
        ax.set_xlim(0, xmax)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.invert_yaxis()
    data = _png(fig)
    plt.close(fig)
    return data


def score_histograms(rows: list[dict], thresholds: dict) -> bytes:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(CLIP_SCORES), figsize=(4 * len(CLIP_SCORES), 3))
    for ax, name in zip(axes, CLIP_SCORES):
        values = [r[name] for r in rows if r.get(name) is not None]
        ax.hist(values, bins=30, color="#4a6fa5")
        if thresholds.get(name) is not None:
            ax.axvline(thresholds[name], color="#b3261e", linestyle="--", label=f"threshold {thresholds[name]:g}")
            ax.legend(fontsize=8)
        ax.set_title(f"{name} (n={len(values)})", fontsize=10)
    fig.suptitle("CLIP scores of every candidate", y=1.04)
    data = _png(fig)
    plt.close(fig)
    return data


def members_per_value(rows: list[dict]) -> bytes:
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        if in_shards(r):
            for attribute, value in json.loads(r["attributes"] or "{}").items():
                counts[attribute][value] += 1
    labels, values = [], []
    for attribute in sorted(counts):
        for value in sorted(counts[attribute]):
            labels.append(f"{attribute}={value}")
            values.append(counts[attribute][value])
    return _bars(labels, values, "#7a5195", "accepted member images", "Accepted members per attribute value")


def acceptance_per_value(stats: dict) -> bytes:
    """Parity: the share of judged members accepted per axis and attribute value (over all concepts); the
    values under four fifths of their attribute's best are drawn red."""
    labels, values, notes, colours = [], [], [], []
    for scope, attributes in sorted((stats.get("parity") or {}).items()):
        if not scope.startswith("all/"):
            continue
        for attribute, by_value in attributes.items():
            for value, entry in by_value.items():
                labels.append(f"{scope.split('/', 1)[1]}: {attribute}={value}")
                values.append(entry["acceptance"])
                notes.append(f"{entry['accepted']}/{entry['members']}" + (" < 4/5 of best" if entry["flagged"] else ""))
                colours.append("#b3261e" if entry["flagged"] else "#2a9d4b")
    return _bars(labels, values, colours or "#2a9d4b", "share of judged members accepted",
                 "Acceptance per attribute value (red: under four fifths of the best)", notes, 1.0)
