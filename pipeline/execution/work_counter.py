"""The stages' work counters, added up across actors (a Ray actor; kept free of heavy imports so that its
worker starts in a moment)."""

from __future__ import annotations

from collections import Counter


class WorkCounter:
    """A batch retried after a crash counts twice: these are the work done, retries included."""

    def __init__(self):
        self.totals: dict[str, Counter] = {}

    def add(self, counts_by_stage: dict[str, dict]) -> None:
        for stage, counts in counts_by_stage.items():
            self.totals.setdefault(stage, Counter()).update(counts)

    def read(self) -> dict[str, dict]:
        return {stage: dict(sorted(c.items())) for stage, c in self.totals.items()}
