"""The seed screen: before any edit, the filter's VLM judge asks three closed questions of each seed photo.

A seed that shows a child becomes an error seed (edits of minors are never made), as does one that shows no
person, or, with ``input.people: one``, several people (whose attributes would be edited together). The
planner turns an error seed into error sets with the reason, so the manifest and the card count them. An
abstention on the child question counts as a child: a seed is edited only when the judge says it is not one.
Runs only with ``filter.judge.enabled`` (and ``filter.judge.screen_seeds``), on the judge's model.
"""

from __future__ import annotations

from schemas.records import SEED, STATUS_OK
from stages.base import SeedStage
from stages.models.judge_checks import JudgeConfig, shown
from stages.models.vlm_judge import VlmJudge
from stages.utils.imaging import from_raw

PERSON = "Is there a person in this image?"
CHILD = "Is there a child in this image?"
SEVERAL = "Is there more than one person in this image?"
SCREEN_REASONS = ("child", "no person", "several people")  # what a screened-out seed's reason starts with


class SeedScreen(SeedStage):
    name = "screen"
    output_schema = SEED

    def __init__(self, judge: JudgeConfig, people: str, device: str = "auto"):
        super().__init__()
        self.config = judge
        self.people = people
        self.device = device

    def setup(self) -> None:
        from stages.utils.torch_runtime import resolve_device

        self.judge = VlmJudge(self.config.model, self.config.revision, resolve_device(self.device), self.config.dtype,
                              self.config.allow_pickle, self.config.min_answer_mass, self.config.batch_size)
        self.judge.setup()

    def wants(self, row: dict) -> bool:
        return row["status"] == STATUS_OK

    def process_row(self, row: dict) -> None:
        # one seed's questions in one call: its answers never depend on which seeds share its batch
        questions = [PERSON, CHILD] + ([SEVERAL] if self.people == "one" else [])
        image = shown(from_raw(row["image_rgb"], row["width"], row["height"]), self.config.image_side)
        answers = dict(zip(questions, self.judge.answer([([image], q) for q in questions])))
        reason = self.verdict(answers)
        if reason is not None:
            self.counters[f"screened_{reason.split(' (')[0].replace(' ', '_')}"] += 1
            row["status"], row["error"] = "error", f"screen: {reason}"
        self.counters["screened"] += 1

    def verdict(self, answers: dict) -> str | None:
        """Why the seed is not edited, or None."""
        child = answers[CHILD]
        if child.p_yes is None:
            return f"child (the judge abstained on {CHILD!r}: yes + no {child.mass:.2f}; a seed is edited only " \
                   "when the judge says no)"
        if child.p_yes > 0.5:
            return f"child (P(yes) {child.p_yes:.2f} to {CHILD!r}): edits of minors are never made"
        person = answers[PERSON]
        if person.p_yes is not None and person.p_yes < 0.5:
            return f"no person (P(yes) {person.p_yes:.2f} to {PERSON!r})"
        several = answers.get(SEVERAL) if self.people == "one" else None
        if several is not None and several.p_yes is not None and several.p_yes > 0.5:
            return f"several people (P(yes) {several.p_yes:.2f} to {SEVERAL!r}; input.people is one)"
        return None
