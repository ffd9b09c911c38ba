"""``plan.candidates.stop: first_pass``: an editor's batch of sets rendered in rounds, not every candidate at once.

Round r renders candidate r of every member that has no passing candidate yet, in every set still going. With a
backend whose pipeline takes an image per prompt (``mixes_sets``: instruct_pix2pix, img2img) the round's jobs of
all those sets are packed into the editor's chunks, so calls stay full as sets drop out, and a call short of the
batch limit is padded to it, so that a job's pixels do not depend on what shares its call (``padded_rows``
counts the padding); other backends render one set's jobs a call, chunked as the set alone would be.
Each set's new candidates are then judged by the filter's own checks (``ClipFilter.judge_set`` on a copy of the
set: CLIP, safety, drift and the judge as configured), one set at a time, so which candidates are rendered next
depends only on the set's own scores, never on what shares its batch; a candidate's noise is its own seed's.
A member stops at its first pass; a set stops once ``filter.min_members`` of its members passed, or when too
few can still pass. The filter stage judges every rendered candidate again and decides; candidates never
rendered are not rows.

Generate mode: round r renders candidate r whole (its base image and every member, early rejection inside the
call, one set a call: a call's base rows are its own set's), and the set stops at the first candidate set with
enough passing members.

Counted: ``rounds`` (set-rounds), ``round_calls``, ``round_images`` (base rows included, padding not) and
``round_slots`` (calls x the batch limit: ``round_images / round_slots`` is the batch fill), ``members_stopped`` (members that
passed before their last candidate), and what the judging did, as ``judge_*``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stages.edit.calls import SetWork
from stages.filter import ClipFilter
from stages.utils import faults


@dataclass
class SetRounds:
    index: int  # the row's position in the batch
    row: dict
    work: SetWork
    pending: list[dict]  # members with no passing candidate yet (generate mode: every member)
    candidates: list[dict] = field(default_factory=list)
    passed: int = 0
    going: bool = True


class Rounds:
    def __init__(self, editor, filter_config, vocabulary):
        if filter_config is None:
            raise ValueError("plan.candidates.stop first_pass judges with the filter's checks: pass the filter config")
        self.editor = editor
        self.judge = ClipFilter(filter_config, vocabulary)
        self.judge.start()

    def process_rows(self, rows: list[dict]) -> list[dict]:
        editor = self.editor
        out: list[list[dict]] = []
        sets: list[SetRounds] = []
        for index, row in enumerate(rows):
            out.append([row])
            if not editor.wants(row):
                continue
            editor.counters["rows"] += 1
            try:
                faults.check_row(editor.name, row)
                sets.append(SetRounds(index, row, editor.begin_set(row), list(row["members"])))
            except Exception as exc:  # one bad set must not take its batch down
                self._fail(out, index, row, exc)
        for r in range(max((len(s.row["candidate_seeds"]) for s in sets), default=0)):
            going = [s for s in sets if s.going and r < len(s.row["candidate_seeds"])]
            if not going:
                break
            self.round(going, r)
            for s in going:
                if s.going:
                    try:
                        self.settle(s, r)
                    except Exception as exc:
                        s.going = False
                        self._fail(out, s.index, s.row, exc)
        for s in sets:
            if s.row["set_status"] is not None:  # failed on the way
                continue
            try:
                position = {m["member_id"]: k for k, m in enumerate(s.row["members"])}
                s.row["candidates"] = sorted(s.candidates, key=lambda c: (c["candidate"], position[c["member_id"]]))
                editor.finish_set(s.row, s.work)
            except Exception as exc:
                self._fail(out, s.index, s.row, exc)
        for name, value in self.judge.counters.items():
            editor.counters[f"judge_{name}"] += value
        self.judge.counters.clear()
        return [row for part in out for row in part]

    def _fail(self, out: list[list[dict]], index: int, row: dict, exc: Exception) -> None:
        self.editor.counters["errors"] += 1
        out[index] = self.editor.on_error(row, exc)

    def round(self, going: list[SetRounds], r: int) -> None:
        """Render candidate r of the pending members of ``going``; each set's new candidates join its own."""
        editor = self.editor
        pairs = [[(s, job) for job in editor.jobs(s.row, r, s.pending)] for s in going]
        mixing = editor.mixes_sets and not editor.makes_own_seeds
        groups = [[p for part in pairs for p in part]] if mixing else pairs
        limit = editor.batch_limit(editor.config)
        for group in groups:
            start = 0
            for chunk in editor.chunks([job for _, job in group]):
                owners = [s for s, _ in group[start : start + len(chunk)]]
                start += len(chunk)
                # A mixed call is padded to the batch limit (repeats of its last job, dropped after): kernels pick
                # their blocking by batch size, so a job's pixels then never depend on what shares its call.
                pad = limit - len(chunk) if mixing else 0
                contexts = [s.work.context for s in owners]
                before = editor.counters["images_rendered"]
                made = editor.render_jobs(chunk + chunk[-1:] * pad, contexts + contexts[-1:] * pad)[: len(chunk)]
                if pad and editor.counters["images_rendered"] > before:
                    editor.counters["images_rendered"] -= pad
                    editor.counters["padded_rows"] += pad
                for s, cand in zip(owners, made):
                    s.candidates.append(cand)
                bases = len({job["candidate"] for job in chunk}) if editor.makes_own_seeds else 0
                editor.counters["round_calls"] += 1
                editor.counters["round_images"] += len(chunk) + bases
                editor.counters["round_slots"] += limit
        editor.counters["rounds"] += len(going)

    def settle(self, s: SetRounds, r: int) -> None:
        """Judge the set's candidate r; stop the members that passed, and the set when it is done."""
        new = [c for c in s.candidates if c["candidate"] == r]
        self.editor.finish_candidates(s.work, new)
        passing = self.passing(s, new, r)
        needed = self.judge.checks.members_needed(len(s.row["members"]))
        last = r + 1 == len(s.row["candidate_seeds"])
        if self.editor.makes_own_seeds:
            s.going = len(passing) < needed and not last
            return
        s.passed += len(passing)
        s.pending = [m for m in s.pending if m["member_id"] not in passing]
        s.going = needed > s.passed and s.passed + len(s.pending) >= needed and not last
        if not last:
            self.editor.counters["members_stopped"] += len(passing)

    def passing(self, s: SetRounds, new: list[dict], r: int) -> set[str]:
        """The members whose candidate r passes every check of the filter, judged on a copy of the set."""
        copies = [dict(c) for c in new]
        live = [c for c in copies if c["status"] is None and c["image_rgb"] is not None]
        if not live:
            return set()
        probe = dict(s.row, candidates=copies, set_status=None, set_reason=None)
        if self.editor.makes_own_seeds:
            base = s.work.context.bases.get(r)
            if base is None:
                return set()
            probe.update(candidate_bases=[base.tobytes() if k == r else None for k in range(r + 1)],
                         width=base.shape[1], height=base.shape[0])
        self.judge.judge_set(probe)
        return {c["member_id"] for c in live if c.get("failed_checks") == []}
