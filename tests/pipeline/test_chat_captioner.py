"""The mini config end to end with a chat VLM as captioner (the tiny LLaVA and its chat template), in one
process: captions pass the checks before planning, and what the checks did is in the manifest and stats."""

import json

import pyarrow.parquet as pq
import webdataset as wds

from pipeline.config.loading import load_config
from pipeline.execution.local import run_local
from pipeline.output.verify import verify_output
from tests.conftest import REPO


def test_the_mini_config_runs_with_a_chat_captioner_and_records_its_caption_checks(tiny_cache, tmp_path):
    out = tmp_path / "out"
    overrides = {"input.path": str(REPO / "configs" / "mini_seeds"), "caption.model": "tiny:llava",
                 "caption.style": "chat", "caption.max_new_tokens": 12, "caption.num_beams": 1}
    result = run_local(load_config(REPO / "configs" / "mini.yaml", overrides), str(out))
    assert result.stages["caption"].counters["images_captioned"] > 0
    assert verify_output(str(out))[0] == []
    rows = pq.read_table(out / "manifest").to_pylist()
    captions = {r["set_id"]: (r["caption"], r["caption_note"]) for r in rows if r["seed_status"] == "ok"}
    assert captions and all("ASSISTANT" not in c and "Describe this image" not in c for c, _ in captions.values())
    stats = json.loads((out / "stats.json").read_text())
    counted = {}
    for _, note in captions.values():
        for part in (note or "").split("; "):
            if part:
                counted[part.split(":")[0]] = counted.get(part.split(":")[0], 0) + 1
    assert counted and stats["caption_notes"] == counted  # tiny captions are word salad: the checks act
    # what a user reads (plain webdataset): each set sample's caption is the checked one the manifest has
    urls = sorted(str(p) for p in (out / "sets").glob("*.tar"))
    read = {json.loads(s["json"])["set_id"]: json.loads(s["json"])["source"]["caption"]
            for s in wds.WebDataset(urls, shardshuffle=False)}
    accepted = {r["set_id"] for r in rows if r["status"] == "accepted"}
    assert read and set(read) == accepted and all(read[k] == captions[k][0] for k in read)
