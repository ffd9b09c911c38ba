"""Drift checks of every candidate (``filter.drift``): what the editor changed that it was not asked to.

The person's skin colour in seed and member (CIELAB L* and hue angle over the face region, the
multidimensional measure of Thong et al., ICCV 2023), and the change outside the person (mean absolute pixel
difference and structural similarity), all measured without a model (stages/models/drift.py) over regions
CLIPSeg finds (the seed's person; the seed's and the member's own face). Open editors lighten skin in 62-71%
of edits, more for Indian and Black sources (Seo et al., 2026): on an axis that does not change race, a
member whose |delta L*| or |delta hue| passes its maximum is rejected; on an axis that does, the values are
recorded only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stages.models.drift import MIN_HUE_CHROMA, DriftMeasure, outside_change, skin_colour
from stages.models.segmenter import MaskConfig, RegionSegmenter, region_mask


@dataclass
class DriftConfig:
    enabled: bool = False
    max_delta_l: float | None = 6.0  # |member L* - seed L*| above this rejects (null: record only)
    max_delta_hue: float | None = 10.0  # degrees
    # Axes that change one of these attributes only record skin drift: changing skin colour is their edit.
    record_only_attributes: list[str] = field(default_factory=lambda: ["race"])
    mask: MaskConfig = field(default_factory=MaskConfig)  # the person region (CLIPSeg), as edit.mask
    skin_prompt: str = "face"  # the skin region, found in the seed and in each member

    def problems(self) -> list[tuple[str, str]]:
        found = []
        for name in ("max_delta_l", "max_delta_hue"):
            value = getattr(self, name)
            if value is not None and value < 0:
                found.append((name, "must be >= 0 or null"))
        if not self.skin_prompt.strip():
            found.append(("skin_prompt", "must not be empty"))
        return found


class DriftChecks:
    def __init__(self, config: DriftConfig, device: str, allow_pickle: bool = False):
        self.config = config
        self.segmenter = RegionSegmenter(config.mask, device, allow_pickle)

    def setup(self) -> None:
        self.segmenter.setup()

    def region(self, image, prompt: str) -> np.ndarray:
        """Pixels CLIPSeg puts above the mask threshold for ``prompt``, not grown or feathered (may be empty)."""
        probs = self.segmenter.probabilities(image, [prompt])
        return region_mask(probs, self.config.mask.threshold, 0, 0).hard

    def judge_set(self, row: dict, seed, judged: list[tuple[dict, object]]) -> list[tuple[list[str], list[str]]]:
        """Measure the ``judged`` (candidate, image) of one set in place; per candidate the checks it fails
        and their reasons."""
        seed_array = np.asarray(seed)
        person = self.region(seed, self.config.mask.prompt)
        seed_skin = skin_colour(seed_array, self.region(seed, self.config.skin_prompt))  # once per set
        attributes = {a["attribute"] for a in row["members"][0]["attributes"]}
        record_only = bool(attributes & set(self.config.record_only_attributes))
        out = []
        for cand, image in judged:
            member = np.asarray(image)
            member_skin = skin_colour(member, self.region(image, self.config.skin_prompt))
            outside = outside_change(seed_array, member, person) if person.any() else None
            values = DriftMeasure(seed_skin, member_skin, outside).scores()
            notes = []
            if seed_skin is not None and member_skin is not None and values["delta_hue"] is None:
                notes.append(f"skin hue: chroma under {MIN_HUE_CHROMA:g} (a grey or black-and-white image), not compared")
            cand.update({k: (None if v is None else float(v)) for k, v in values.items()})
            if values["delta_l"] is None:
                notes.append(f"skin drift: no {self.config.skin_prompt!r} region to measure")
            if values["outside_mad"] is None:
                notes.append(f"outside change: no {self.config.mask.prompt!r} region found")
            if record_only and values["delta_l"] is not None:
                notes.append("skin drift recorded only: the axis changes race")
            cand["score_notes"] = "; ".join(n for n in (cand.get("score_notes"), *notes) if n) or None
            failed, reasons = [], []
            if not record_only:
                for name, limit, what in (("delta_l", self.config.max_delta_l, "lightness"),
                                          ("delta_hue", self.config.max_delta_hue, "hue")):
                    value = values[name]
                    if limit is not None and value is not None and abs(value) > limit:
                        failed.append(name)
                        reasons.append(f"{name} {value:+.4f} beyond +/-{limit:.4f} (the person's skin {what} changed)")
            out.append((failed, reasons))
        return out
