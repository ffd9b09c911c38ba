"""Parity by attribute value: does the filter accept one group less than another?

For each concept and axis (and each axis over all concepts), per attribute value: the members the filter
judged (sets that were edited), how many it accepted, the acceptance rate, and the mean judge and drift
scores of their candidates (identity members, asked to change nothing, and editor errors left out). A value
judged at least ``MIN_MEMBERS`` times whose acceptance rate is under four fifths of the best value's of the
same attribute is flagged (the four-fifths rule of the US EEOC's adverse-impact guideline): the accepted data
then under-represents it, and the data card says so.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

from schemas.records import JUDGE_SCORES, STATUS_ACCEPTED, STATUS_ERROR

MIN_MEMBERS = 10  # a value judged fewer times is reported but not flagged: its rate says too little
PARITY_SCORES = JUDGE_SCORES + ("delta_l", "delta_hue", "outside_mad")
PARITY_COLUMNS = ["set_id", "seed_index", "concept", "axis", "member_id", "attributes", "status", "set_status",
                  "identity_member", *PARITY_SCORES]
ALL_CONCEPTS = "all"


@dataclass
class _Member:
    attributes: dict
    accepted: bool = False
    scores: dict = field(default_factory=lambda: defaultdict(list))


class ParityCounter:
    """Fed manifest rows (``PARITY_COLUMNS``; absent columns as None), in any order; ``result()`` gives the
    stats.json section."""

    def __init__(self):
        self.members: dict[tuple, _Member] = {}

    def add(self, row: dict) -> None:
        if row["set_status"] == STATUS_ERROR or row["member_id"] is None or row["status"] == STATUS_ERROR:
            return  # never edited or judged: no verdict of the filter to compare
        if row.get("identity_member"):
            return  # asked to change nothing: its value is the seeds' own, not an edit the filter judged
        key = (row["concept"], row["axis"], row["seed_index"], row["set_id"], row["member_id"])
        member = self.members.setdefault(key, _Member(json.loads(row["attributes"] or "{}")))
        member.accepted |= row["status"] == STATUS_ACCEPTED
        for name in PARITY_SCORES:
            if row.get(name) is not None:
                member.scores[name].append(row[name])

    def result(self) -> dict:
        groups: dict[str, dict[str, dict[str, list[_Member]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
        for (concept, axis, *_), member in self.members.items():
            for attribute, value in member.attributes.items():
                for scope in (f"{concept}/{axis}", f"{ALL_CONCEPTS}/{axis}"):
                    groups[scope][attribute][value].append(member)
        out = {}
        for scope in sorted(groups):
            entry = {}
            for attribute, by_value in sorted(groups[scope].items()):
                values = {value: _summary(members) for value, members in sorted(by_value.items())}
                counted = [v for v in values.values() if v["members"] >= MIN_MEMBERS] or list(values.values())
                best = max(counted, key=lambda v: (v["accepted"] / v["members"], v["members"]))
                for value in values.values():
                    # exact counts, not rounded rates: accepted / members < 4/5 x best's accepted / best's members
                    under = value["accepted"] * best["members"] * 5 < 4 * best["accepted"] * value["members"]
                    value["ratio_to_best"] = (round(value["accepted"] * best["members"] / (best["accepted"] * value["members"]), 4)
                                              if best["accepted"] else None)
                    value["too_few"] = value["members"] < MIN_MEMBERS
                    value["flagged"] = bool(best["accepted"]) and under and not value["too_few"]
                entry[attribute] = values
            out[scope] = entry
        return out


def _summary(members: list[_Member]) -> dict:
    accepted = sum(m.accepted for m in members)
    means = {}
    for name in PARITY_SCORES:
        values = [x for m in members for x in m.scores.get(name, [])]
        means[f"mean_{name}"] = round(sum(values) / len(values), 4) if values else None
    return {"members": len(members), "accepted": accepted, "acceptance": round(accepted / len(members), 4), **means}


def flagged(parity: dict) -> list[dict]:
    """The values under four fifths of their attribute's best, each with where and by how much."""
    return [{"scope": scope, "attribute": attribute, "value": value, "acceptance": entry["acceptance"],
             "ratio_to_best": entry["ratio_to_best"], "members": entry["members"]}
            for scope, attributes in parity.items() for attribute, values in attributes.items()
            for value, entry in values.items() if entry["flagged"]]
