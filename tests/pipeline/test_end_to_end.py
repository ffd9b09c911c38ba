"""The mini config end to end on a local Ray: shards, manifests, verify, reproducibility, bad seeds."""

import itertools
import json
import shutil
from html.parser import HTMLParser

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from pipeline.commands import cli
from pipeline.output.verify import verify_output
from schemas.sample import member_errors


@pytest.fixture(scope="module")
def run(mini_output):
    """The session's mini run (over the mini seeds and a duplicate) and its stats. (That a second run gives the
    same bytes is shown by the resume tests: a killed and resumed run against an uninterrupted one.)"""
    return mini_output, json.loads((mini_output / "stats.json").read_text())


def manifest(out):
    return pq.read_table(out / "manifest").to_pylist()


def test_output_passes_verify_from_the_command_line(run, capsys):
    out, stats = run
    assert verify_output(str(out))[0] == []
    assert cli.main(["verify", str(out)]) == 0 and "verify: OK" in capsys.readouterr().out
    assert stats["samples"] > 0 and stats["sets"].get("rejected", 0) > 0
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "croissant.json", "manifest", "plots", "preview.html", "run.json", "sets", "shards", "sizes.json",
        "stats.json", "thumbs"]


def test_every_input_is_accounted_for_and_the_bad_seed_is_an_error_row(run, mini_seeds):
    out, stats = run
    rows = manifest(out)
    inputs = [p for p in mini_seeds.rglob("*") if p.is_file()]
    assert {r["seed_index"] for r in rows} == set(range(len(inputs)))
    broken = [r for r in rows if r["source_uri"].endswith("broken.jpg")]
    assert broken and all(r["status"] == "error" and "not a decodable image" in r["reason"] for r in broken)
    assert stats["seeds"] == {"total": 8, "ok": 6, "error": 2}  # broken.jpg and the duplicate


def test_a_duplicate_image_is_generated_once(run):
    out, _ = run
    rows = manifest(out)
    copy = [r for r in rows if r["source_uri"].endswith("seed9_copy.png")]
    original = [r for r in rows if r["source_uri"].endswith("chef/seed0.png")]
    assert copy and copy[0]["seed_id"] == original[0]["seed_id"]
    assert all(r["status"] == "error" and r["reason"].startswith("ingest: duplicate: same image as seed_index")
               and r["shard"] is None and r["text_image"] is None for r in copy)  # never edited nor scored


def test_shards_read_back_with_webdataset_and_ray_data(run):
    out, stats = run
    sizes = json.loads((out / "sizes.json").read_text())
    pattern = str(out / "shards" / f"mini-{{000000..{len(sizes) - 1:06d}}}.tar")
    samples = list(wds.WebDataset(pattern, shardshuffle=False))
    assert len(samples) == sum(sizes.values()) == stats["samples"]
    accepted = {r["sample_key"] for r in manifest(out) if r["status"] == "accepted"}
    assert {s["__key__"] for s in samples} == accepted
    for sample in samples:
        assert member_errors(json.loads(sample["json"])) == [] and set(sample) >= {"jpg", "json"}
    keys = sorted(accepted)

    from pipeline.trainers.readers import ray_dataset

    assert sorted(row["__key__"] for row in ray_dataset(str(out)).iter_rows()) == keys


def test_verify_catches_a_tampered_output(run, tmp_path, capsys):
    out, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    sizes = json.loads((copy / "sizes.json").read_text())
    first = sorted(sizes)[0]
    sizes[first] += 1
    (copy / "sizes.json").write_text(json.dumps(sizes))
    (copy / "shards" / sorted(sizes)[-1]).unlink()
    problems, _ = verify_output(str(copy))
    assert any("sizes.json says" in p for p in problems)
    assert any("without manifest" in p for p in problems)
    assert cli.main(["verify", str(copy)]) == 1 and "FAIL" in capsys.readouterr().out


def test_run_json_records_config_versions_and_hash(run):
    out, _ = run
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["edit"]["model"] == "tiny:instruct-pix2pix"
    assert run["versions"]["diffusers"] and run["versions"]["ray"]
    assert {r["config_hash"] for r in manifest(out)} == {run["config_hash"]}


class PreviewParser(HTMLParser):
    """Collects the preview's sets, figures, filters and every URL it refers to."""

    def __init__(self):
        super().__init__()
        self.sets, self.selects, self.urls = [], {}, []
        self._select = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs:
                self.urls.append(attrs[key])
        if tag == "section" and "set" in attrs.get("class", ""):
            self.sets.append({"attrs": attrs, "figures": []})
        elif tag == "figure" and self.sets:
            self.sets[-1]["figures"].append(attrs)
        elif tag == "select":
            self._select = attrs["id"]
            self.selects[self._select] = []
        elif tag == "option" and self._select:
            self.selects[self._select].append(attrs["value"])

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None


def test_preview_shows_every_set_with_every_candidate_and_no_external_assets(run):
    out, _ = run
    page = PreviewParser()
    page.feed((out / "preview.html").read_text())
    rows = manifest(out)
    sets = {(r["seed_index"], r["set_id"]) for r in rows}
    assert len(page.sets) == len(sets)
    for section in page.sets:
        seed_index = int(section["attrs"]["id"].rsplit("-", 1)[1])
        set_id = section["attrs"]["id"].rsplit("-", 1)[0]
        candidates = [r for r in rows if r["seed_index"] == seed_index and r["set_id"] == set_id]
        assert section["attrs"]["data-status"] == candidates[0]["set_status"]
        figures = section["figures"]
        assert figures[0]["class"] == "src" and len(figures) == len(candidates) + 1
        assert sorted(f["class"] for f in figures[1:]) == sorted(r["status"] for r in candidates)
        assert all(f["title"] for f in figures[1:] if f["class"] != "accepted")  # the reason, on hover
    assert set(page.selects["f-status"]) == {"", "accepted", "rejected", "error"}
    assert set(page.selects["f-axis"]) == {"", "gender", "race_gender"}
    assert all(url.startswith("data:image/jpeg;base64,") for url in page.urls)


def check_preview_in_chromium(out, shot) -> None:
    """preview.html as a browser shows it (Debian's Chromium driven by Playwright), against the manifest read
    with pyarrow: every set a section, every accepted candidate a green-framed image, every image decoded, the
    status filter showing the accepted sets only, and the seed's caption on its set."""
    from playwright.sync_api import expect, sync_playwright

    rows = manifest(out)
    sets = {(r["seed_index"], r["set_id"]) for r in rows}
    accepted_sets = {(r["seed_index"], r["set_id"]) for r in rows if r["set_status"] == "accepted"}
    accepted = [r for r in rows if r["status"] == "accepted"]
    assert accepted and len(accepted_sets) < len(sets)  # the filter below has something to hide
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto((out / "preview.html").as_uri())  # waits for the load event: every image fetched
        expect(page.locator("section.set")).to_have_count(len(sets))
        expect(page.locator("figure.accepted img")).to_have_count(len(accepted))
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
        assert len(images) >= len(accepted) + len(accepted_sets)  # and the seeds and rejected candidates
        assert all(done and width > 0 and height > 0 for done, width, height in images), images
        for seed_index, set_id in sorted(accepted_sets):
            section = page.locator(f'section.set[id="{set_id}-{seed_index}"]')
            caption = next(r["caption"] for r in rows if r["set_id"] == set_id and r["seed_index"] == seed_index)
            expect(section.locator(".caption")).to_contain_text(caption)
            members = sorted(r["member_id"] for r in accepted if r["set_id"] == set_id)
            expect(section.locator("figure.accepted img")).to_have_count(len(members))
            assert sorted(section.locator("figure.accepted img").evaluate_all("els => els.map(e => e.alt)")) == members
        page.screenshot(path=str(shot), full_page=False)
        page.select_option("#f-status", "accepted")
        expect(page.locator("#shown")).to_have_text(str(len(accepted_sets)))
        shown = page.eval_on_selector_all("section.set", "els => els.filter(e => e.offsetParent !== null).map(e => e.id)")
        assert sorted(shown) == sorted(f"{set_id}-{seed_index}" for seed_index, set_id in accepted_sets)
        browser.close()
    assert shot.stat().st_size > 10_000


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed here")
def test_preview_renders_in_headless_chromium(run, tmp_path):
    out, _ = run
    check_preview_in_chromium(out, tmp_path / "preview.png")


def test_data_card_numbers_equal_the_manifests(run):
    out, _ = run
    card = (out / "README.md").read_text()
    lines = card.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| concept |"))  # accepted images per value
    table = [line for line in itertools.takewhile(lambda line: line.startswith("|"), lines[start:])]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    expected = {}
    for r in manifest(out):
        if r["status"] == "accepted":
            for attribute, value in json.loads(r["attributes"]).items():
                key = (r["concept"], f"{attribute}={value}")
                expected[key] = expected.get(key, 0) + 1
    found = {}
    for line in table[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if set(cells[0]) <= {"-"}:
            continue
        for column, cell in zip(header[1:-1], cells[1:-1]):
            if int(cell):
                found[(cells[0], column)] = int(cell)
    assert found == expected
    stats = json.loads((out / "stats.json").read_text())
    assert f"{stats['samples']} accepted member images" in card
    assert f"their {stats['sets']['accepted']} sets in `sets/`" in card
    assert "sets by status: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["sets"].items())) in card
    notes = ", ".join(f"{k} {v}" for k, v in sorted(stats["caption_notes"].items())) or "every caption used as written"
    assert f"- caption checks (sets): {notes}" in card
    croissant = json.loads((out / "croissant.json").read_text())
    record_sets = {r["name"]: r for r in croissant["recordSet"]}
    fields = [f["name"] for f in record_sets["manifest"]["field"]]
    assert fields == pq.read_schema(next((out / "manifest").glob("*.parquet"))).names
    for plot in ("acceptance", "scores", "members_per_value"):
        assert (out / "plots" / f"{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_readers_select_from_manifests_and_split_shards_over_workers(run):
    import torch.utils.data

    from pipeline.trainers.readers import MemberDataset, accepted_members, iter_members, iter_sets

    out, _ = run
    rows = manifest(out)
    accepted = [r for r in rows if r["status"] == "accepted"]
    assert accepted_members(str(out)).num_rows == len(accepted)
    females = [r for r in accepted if json.loads(r["attributes"]).get("gender") == "female"]
    members = list(iter_members(str(out), values={"gender": "female"}))
    assert sorted(m["key"] for m in members) == sorted(r["sample_key"] for r in females)
    assert all(m["attributes"]["gender"] == "female" and m["image"].size == (64, 64) for m in members)
    concept = accepted[0]["concept"]
    sets = list(iter_sets(str(out), concept=concept, axis="gender"))
    assert sets and all(s["meta"]["concept"] == concept and set(s["members"]) == {"male", "female"} for s in sets)

    loader = torch.utils.data.DataLoader(MemberDataset(str(out)), num_workers=2, batch_size=None,
                                         collate_fn=lambda item: item["key"])
    keys = list(loader)
    assert sorted(keys) == sorted(r["sample_key"] for r in accepted)  # each once
    split = [MemberDataset(str(out), rank=r, world_size=2).my_shards() for r in (0, 1)]
    assert sorted(split[0] + split[1]) == MemberDataset(str(out)).shards and not set(split[0]) & set(split[1])
