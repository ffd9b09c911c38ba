"""Write the report into an output: README.md, croissant.json, and (unless cheap) preview + plots."""

from __future__ import annotations

import json

from pipeline.output.stats import collect
from pipeline.output.storage import Storage
from pipeline.report.card import render_card
from pipeline.report.croissant import render_croissant
from pipeline.report.contents import OutputContents
from pipeline.report.plots import acceptance_plot, acceptance_per_value, members_per_value, score_histograms
from pipeline.report.preview import render_preview
from schemas.layout import CARD_FILE, CROISSANT_FILE, PLOTS_DIR, PREVIEW_FILE

PLOTS = ("acceptance.png", "scores.png", "members_per_value.png", "acceptance_per_value.png")


def write_report(storage: Storage, max_sets: int = 500, pictures: bool = True) -> list[str]:
    """Files written, relative to the output. ``pictures=False`` writes only the card and metadata."""
    contents = OutputContents.load(storage)
    stats, _ = collect(storage)
    written = []
    storage.write_atomic(render_card(contents, stats).encode("utf-8"), CARD_FILE)
    storage.write_atomic((json.dumps(render_croissant(contents), indent=2) + "\n").encode("utf-8"), CROISSANT_FILE)
    written += [CARD_FILE, CROISSANT_FILE]
    if pictures:
        storage.write_atomic(render_preview(contents, max_sets).encode("utf-8"), PREVIEW_FILE)
        thresholds = contents.run.get("config", {}).get("filter", {}).get("thresholds", {})
        sets = contents.sets()
        for name, data in zip(PLOTS, (acceptance_plot(sets), score_histograms(contents.manifest, thresholds),
                                      members_per_value(contents.manifest), acceptance_per_value(stats))):
            storage.write_atomic(data, PLOTS_DIR, name)
        written += [PREVIEW_FILE, *(f"{PLOTS_DIR}/{name}" for name in PLOTS)]
    return written
