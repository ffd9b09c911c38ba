"""``plan.candidates.stop: first_pass``: an editor's batch of sets rendered in rounds, not every candidate at once.

Photo mode. Round 0 renders candidate 0 of every member. After it, a member that passed stops, and a set renders
the next candidate of only as many members as it can afford to lose plus one: with ``filter.min_members`` 0 (every
member must pass) one member at a time, so that the first member to fail all its candidates stops the set before
the others spend theirs. A set stops once enough members passed, or when too few can still pass.
Each set's new candidates are judged by the filter's own checks (``ClipFilter.judge_set`` on a copy of the set:
CLIP, safety, drift and the judge as configured), one set at a time, so which candidates are rendered next
depends only on the set's own scores, never on what shares its batch; a candidate's noise is its own seed's.
The filter stage judges every rendered candidate again and decides; candidates never rendered are not rows.

With a backend whose pipeline takes an image per prompt (``mixes_sets``: instruct_pix2pix, img2img) a round's
jobs of all the sets are packed into the editor's chunks, and every call is full: kernels pick their blocking by
batch size, so a job's pixels then never depend on what shares its call. A short call's free slots first take
jobs the sets will need if what is rendered now fails (each set's live members in order, their next candidates),
kept until a later round asks for them (``lookahead_rows``, ``lookahead_used``; ``lookahead_unused`` were never
asked for), then repeats of its last job (``padded_rows``). Other backends render one set's jobs a call, chunked
as the set alone would be.

Generate mode: round r renders candidate r whole (its base image and every member, early rejection inside the
call, one set a call: a call's base rows are its own set's), and the set stops at the first candidate set with
enough passing members.

Counted: ``rounds`` (set-rounds), ``round_calls``, ``round_images`` (jobs in calls, base rows included, padding
not) and ``round_slots`` (calls x the batch limit: ``round_images / round_slots`` is the batch fill),
``members_stopped`` (members that passed before their last candidate), and what the judging did, as ``judge_*``.
``images_rendered`` counts the candidates that became rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain, zip_longest

from stages.edit.calls import SetWork
from stages.filter import ClipFilter
from stages.utils import faults


@dataclass
class SetRounds:
    index: int  # the row's position in the batch
    row: dict
    work: SetWork
    tries: dict[str, int]  # member_id -> its next candidate
    passed: set[str] = field(default_factory=set)
    candidates: list[dict] = field(default_factory=list)
    ahead: dict[tuple[str, int], dict] = field(default_factory=dict)  # rendered ahead, not yet asked for
    new: list[dict] = field(default_factory=list)  # this round's candidates
    step: int = 0
    going: bool = True

    @property
    def most(self) -> int:
        return len(self.row["candidate_seeds"])

    def live(self) -> list[dict]:
        """Members with no pass yet and candidates left, in the set's order."""
        return [m for m in self.row["members"]
                if m["member_id"] not in self.passed and self.tries[m["member_id"]] < self.most]


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
                tries = {m["member_id"]: 0 for m in row["members"]}
                sets.append(SetRounds(index, row, editor.begin_set(row), tries))
            except Exception as exc:  # one bad set must not take its batch down
                self._fail(out, index, row, exc)
        while True:
            fronts = [(s, self.front(s)) for s in sets if s.going]
            going = [(s, jobs) for s, jobs in fronts if jobs]
            for s, jobs in fronts:
                s.going = bool(jobs)
            if not going:
                break
            self.round(going)
            for s, jobs in going:
                try:
                    self.settle(s, jobs)
                except Exception as exc:
                    s.going = False
                    self._fail(out, s.index, s.row, exc)
        for s in sets:
            editor.counters["lookahead_unused"] += len(s.ahead)
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

    def job(self, s: SetRounds, member: dict, candidate: int) -> dict:
        return self.editor.jobs(s.row, candidate, [member])[0]

    def front(self, s: SetRounds) -> list[dict]:
        """The set's jobs for this round; none when the set is done."""
        if self.editor.makes_own_seeds:
            return self.editor.jobs(s.row, s.step) if s.going and s.step < s.most else []
        still = self.judge.checks.members_needed(len(s.row["members"])) - len(s.passed)
        live = s.live()
        if still <= 0 or len(live) < still:
            return []
        width = len(live) if s.step == 0 else len(live) - still + 1  # can lose len(live) - still of them
        return [self.job(s, m, s.tries[m["member_id"]]) for m in live[:width]]

    def lookahead(self, going: list[tuple[SetRounds, list[dict]]], free: int) -> list[tuple[SetRounds, dict]]:
        """Up to ``free`` jobs the going sets will ask for if this round's fail, a set at a time in turn."""
        if free <= 0:
            return []
        futures = []
        for s, jobs in going:
            now = {(j["member_id"], j["candidate"]) for j in jobs}
            futures.append([(s, m, k) for m in s.live() for k in range(s.tries[m["member_id"]], s.most)
                            if (m["member_id"], k) not in now and (m["member_id"], k) not in s.ahead])
        taken = [p for p in chain.from_iterable(zip_longest(*futures)) if p is not None][:free]
        return [(s, self.job(s, m, k)) for s, m, k in taken]

    def round(self, going: list[tuple[SetRounds, list[dict]]]) -> None:
        """Render the going sets' jobs (``s.new``: the set's this round, in its jobs' order)."""
        editor = self.editor
        mixing = editor.mixes_sets and not editor.makes_own_seeds
        made: dict[int, dict] = {}  # id(job) -> its candidate
        pairs = []
        for s, jobs in going:
            s.new = []
            for job in jobs:
                kept = s.ahead.pop((job["member_id"], job["candidate"]), None)
                if kept is None:
                    pairs.append((s, job))
                else:
                    made[id(job)] = kept
                    editor.counters["lookahead_used"] += 1
                    editor.counters["images_rendered"] += 1
        groups = [pairs] if mixing else [[p for p in pairs if p[0] is s] for s, _ in going]
        limit = editor.batch_limit(editor.config)
        for group in groups:
            start = 0
            for chunk in editor.chunks([job for _, job in group]):
                owners = [s for s, _ in group[start : start + len(chunk)]]
                start += len(chunk)
                ahead = self.lookahead(going, limit - len(chunk)) if mixing else []
                pad = limit - len(chunk) - len(ahead) if mixing else 0
                jobs = chunk + [job for _, job in ahead]
                contexts = [s.work.context for s in owners] + [s.work.context for s, _ in ahead]
                before = editor.counters["images_rendered"]
                candidates = editor.render_jobs(jobs + jobs[-1:] * pad, contexts + contexts[-1:] * pad)
                if editor.counters["images_rendered"] > before:  # rows are the candidates asked for now
                    editor.counters["images_rendered"] -= len(ahead) + pad
                    editor.counters["padded_rows"] += pad
                    editor.counters["lookahead_rows"] += len(ahead)
                    for (s, job), cand in zip(ahead, candidates[len(chunk) :]):
                        s.ahead[(job["member_id"], job["candidate"])] = cand
                for job, cand in zip(chunk, candidates):
                    made[id(job)] = cand
                bases = len({job["candidate"] for job in chunk}) if editor.makes_own_seeds else 0
                editor.counters["round_calls"] += 1
                editor.counters["round_images"] += len(jobs) + bases
                editor.counters["round_slots"] += limit
        for s, jobs in going:
            s.new = [made[id(job)] for job in jobs]
        editor.counters["rounds"] += len(going)

    def settle(self, s: SetRounds, jobs: list[dict]) -> None:
        """Judge the set's new candidates; the members that passed stop."""
        new, s.new = s.new, []
        self.editor.finish_candidates(s.work, new)
        s.candidates += new
        passing = self.passing(s, new)
        s.step += 1
        if self.editor.makes_own_seeds:
            s.going = len(passing) < self.judge.checks.members_needed(len(s.row["members"]))
            return
        for job in jobs:
            s.tries[job["member_id"]] = job["candidate"] + 1
            if job["member_id"] in passing:
                s.passed.add(job["member_id"])
                self.editor.counters["members_stopped"] += job["candidate"] + 1 < s.most

    def passing(self, s: SetRounds, new: list[dict]) -> set[str]:
        """The members whose new candidate passes every check of the filter, judged on a copy of the set."""
        copies = [dict(c) for c in new]
        live = [c for c in copies if c["status"] is None and c["image_rgb"] is not None]
        if not live:
            return set()
        probe = dict(s.row, candidates=copies, set_status=None, set_reason=None)
        if self.editor.makes_own_seeds:
            r = s.step
            base = s.work.context.bases.get(r)
            if base is None:
                return set()
            probe.update(candidate_bases=[base.tobytes() if k == r else None for k in range(r + 1)],
                         width=base.shape[1], height=base.shape[0])
        self.judge.judge_set(probe)
        return {c["member_id"] for c in live if c.get("failed_checks") == []}
