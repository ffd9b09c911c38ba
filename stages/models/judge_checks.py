"""The VLM judge's checks of a candidate (``filter.judge``): closed questions a chat VLM answers about what CLIP
cannot see, each answer P(yes) / (P(yes) + P(no)) from one forward pass (stages/models/vlm_judge.py).

  judge_attribute  for each attribute of the member, "Is the person in this image {phrase}?" asked for every
                   value of that attribute in the set: P(yes | own value) - the highest P(yes | other value),
                   the worst attribute's (contrasted, so a judge that says yes to everything scores 0)
  judge_concept    "Does this image show {a_concept}?": the chef's apron, the microscope survived the edit
  judge_scene      seed and member as two images, "Apart from the person's {attributes}, are these two images
                   the same scene, clothing and pose?" (only a judge that takes two images in one prompt)

A check fails when its score is below its threshold (``filter.judge.thresholds``; null turns it off). An
answer whose yes + no carry less than ``min_answer_mass`` of the next token's probability (a refusal, a
hedge) is an abstention: the score is null with a note, neither pass nor fail. The judge runs on the
candidates that passed the CLIP checks only, and a set's questions go to the model together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from PIL import Image

from stages.models.vlm_judge import Answer, VlmJudge


@dataclass
class JudgeThresholds:
    judge_attribute: float | None = 0.0  # the member's value wins the contrast
    judge_concept: float | None = 0.5
    judge_scene: float | None = 0.5


@dataclass
class JudgeConfig:
    enabled: bool = False
    model: str | None = None  # a chat VLM in transformers; null: the captioner's (caption.model and revision)
    revision: str | None = None
    dtype: Literal["float32", "float16", "bfloat16"] = "bfloat16"
    min_answer_mass: float = 0.5  # P(yes) + P(no) below this: the judge abstained
    batch_size: int = 16  # questions per forward pass
    # the judge sees each image scaled down to this side (null: as rendered): whether a person is a woman or the
    # concept is there needs no megapixel, and a Qwen2.5-VL token is 28 x 28 pixels (1,337 tokens at 1024 px)
    image_side: int | None = 448
    # before any edit, ask of each seed whether it shows a person, a child, several people (stages/screen.py)
    screen_seeds: bool = True
    thresholds: JudgeThresholds = field(default_factory=JudgeThresholds)
    attribute_question: str = "Is the person in this image {phrase}?"
    concept_question: str = "Does this image show {a_concept}?"
    scene_question: str = ("Apart from the person's {attributes}, are these two images the same scene, "
                           "clothing and pose?")
    allow_pickle: bool = False

    def problems(self) -> list[tuple[str, str]]:
        found = []
        for name, placeholder in (("attribute_question", "{phrase}"), ("concept_question", "{a_concept}"),
                                  ("scene_question", "{attributes}")):
            template = getattr(self, name)
            if placeholder not in template:
                found.append((name, f"must contain {placeholder}"))
                continue
            try:
                template.format(**{placeholder.strip("{}"): "x"})
            except (KeyError, IndexError, ValueError):
                found.append((name, f"may contain no placeholder but {placeholder} (braces: {{{{ and }}}})"))
        for name, low in (("judge_attribute", -1.0), ("judge_concept", 0.0), ("judge_scene", 0.0)):
            value = getattr(self.thresholds, name)
            if value is not None and not low <= value <= 1.0:
                found.append((f"thresholds.{name}", f"must be in [{low:g}, 1] or null (a P(yes){' difference' if low else ''})"))
        if not 0.0 <= self.min_answer_mass <= 1.0:
            found.append(("min_answer_mass", "must be in [0, 1]"))
        if self.batch_size < 1:
            found.append(("batch_size", "must be >= 1"))
        if self.image_side is not None and self.image_side < 28:
            found.append(("image_side", "must be >= 28 (one vision token) or null"))
        return found


@dataclass
class JudgeVocabulary:
    """The taxonomy's words the questions use: a phrase per attribute value ("a woman", "an Asian person"), a
    name per attribute, a phrase per concept ("a chef")."""

    value_phrases: dict[str, dict[str, str]]
    attribute_names: dict[str, str]
    concept_phrases: dict[str, str]


@dataclass
class Question:
    candidate: int  # index into the judged candidates
    check: str  # attribute | concept | scene
    images: list  # PIL images: the member, or the seed and the member
    text: str
    attribute: str | None = None
    value: str | None = None


def shown(image, side: int | None):
    """The image as the judge sees it: scaled so its longer side is at most ``side`` (``image_side``)."""
    if side is None or max(image.size) <= side:
        return image
    scale = side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.Resampling.LANCZOS)


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


class JudgeChecks:
    def __init__(self, config: JudgeConfig, vocabulary: JudgeVocabulary, device: str):
        self.config = config
        self.vocabulary = vocabulary
        self.judge = VlmJudge(config.model, config.revision, device, config.dtype, config.allow_pickle,
                              config.min_answer_mass, config.batch_size)

    def setup(self) -> None:
        self.judge.setup()

    def questions(self, row: dict, seed, judged: list[tuple[dict, dict, object]]) -> list[Question]:
        """Every question about the ``judged`` (candidate, member, image) of one set."""
        vocab, config = self.vocabulary, self.config
        seed = shown(seed, config.image_side)
        judged = [(cand, member, shown(image, config.image_side)) for cand, member, image in judged]
        values: dict[str, list[str]] = {}
        for member in row["members"]:
            for pair in member["attributes"]:
                values.setdefault(pair["attribute"], [])
                if pair["value"] not in values[pair["attribute"]]:
                    values[pair["attribute"]].append(pair["value"])
        attributes = list(values)
        out = []
        for index, (_, member, image) in enumerate(judged):
            for attribute in attributes:
                if len(values[attribute]) < 2:
                    continue
                for value in values[attribute]:
                    phrase = vocab.value_phrases[attribute][value]
                    out.append(Question(index, "attribute", [image], config.attribute_question.format(phrase=phrase),
                                        attribute, value))
            concept = vocab.concept_phrases.get(row.get("concept") or "")
            if concept:
                out.append(Question(index, "concept", [image], config.concept_question.format(a_concept=concept)))
            if self.judge.takes_two_images:
                names = _join([vocab.attribute_names.get(a, a) for a in attributes])
                out.append(Question(index, "scene", [seed, image], config.scene_question.format(attributes=names)))
        return out

    def judge_set(self, row: dict, seed, judged: list[tuple[dict, dict, object]]) -> list[tuple[list[str], list[str]]]:
        """Score the ``judged`` candidates in place (``judge_*`` and ``judge_answers``); returns per candidate the
        checks it fails and their reasons."""
        questions = self.questions(row, seed, judged)
        answers = self.judge.answer([(q.images, q.text) for q in questions]) if questions else []
        by_candidate: dict[int, list[tuple[Question, Answer]]] = {}
        for question, answer in zip(questions, answers):
            by_candidate.setdefault(question.candidate, []).append((question, answer))
        out = []
        for index, (cand, member, _) in enumerate(judged):
            asked = by_candidate.get(index, [])
            scores, notes = self._scores(member, asked)
            cand.update(scores)
            cand["judge_answers"] = json.dumps(
                [{"check": q.check, "question": q.text, "p_yes": a.p_yes, "mass": round(a.mass, 6)} for q, a in asked])
            cand["score_notes"] = "; ".join(n for n in (cand.get("score_notes"), *notes) if n) or None
            failed, reasons = [], []
            for name, value in scores.items():
                minimum = getattr(self.config.thresholds, name)
                if minimum is not None and value is not None and value < minimum:
                    failed.append(name)
                    reasons.append(f"{name} {value:.4f} < {minimum:.4f}")
            out.append((failed, reasons))
        return out

    def _scores(self, member: dict, asked: list[tuple[Question, Answer]]) -> tuple[dict, list[str]]:
        notes: list[str] = []
        scores = {"judge_attribute": None, "judge_concept": None, "judge_scene": None}
        abstained = [(q, a) for q, a in asked if a.p_yes is None]
        own = {p["attribute"]: p["value"] for p in member["attributes"]}
        margins = []
        for attribute, value in own.items():
            answers = {q.value: a for q, a in asked if q.check == "attribute" and q.attribute == attribute}
            others = [a.p_yes for v, a in answers.items() if v != value and a.p_yes is not None]
            # the own value's answer is needed; an abstention on another value only leaves it out of the contrast
            if value in answers and answers[value].p_yes is not None and others:
                margins.append(answers[value].p_yes - max(others))
        if margins:
            scores["judge_attribute"] = min(margins)
        for check in ("concept", "scene"):
            answer = next((a for q, a in asked if q.check == check), None)
            if answer is not None:
                scores[f"judge_{check}"] = answer.p_yes
        for question, answer in abstained:
            notes.append(f"judge_{question.check}: abstained (yes + no {answer.mass:.2f} < "
                         f"{self.config.min_answer_mass:.2f}) on {question.text!r}")
        if self.config.thresholds.judge_scene is not None and asked and not getattr(self.judge, "takes_two_images", True):
            notes.append("judge_scene: the judge model takes one image a prompt")
        return scores, notes
