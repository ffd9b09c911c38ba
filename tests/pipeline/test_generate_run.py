"""Generate mode end to end through Ray: the shipped configs/mini_generate.yaml, the session's output of it."""

import pyarrow.parquet as pq
import pytest

from pipeline.output.verify import verify_output
from schemas.sample import member_errors, set_errors
from stages.utils.provenance import read_provenance
from tests.helpers import read_output_sets


@pytest.fixture(scope="module")
def generated(mini_generate_output):
    return mini_generate_output


def test_generate_mode_output_passes_verify_and_accounts_for_every_planned_candidate(generated):
    problems, _ = verify_output(str(generated))
    assert problems == []
    rows = pq.read_table(generated / "manifest").to_pylist()
    # 2 concepts x 2 prompts = 4 seeds; gender (2 members) + race_gender (6) per seed; 2 candidates each
    assert len(rows) == 4 * (2 + 6) * 2
    assert {r["seed_id"] for r in rows} == {f"{c}-p{t}-0" for c in ("chef", "science") for t in (0, 1)}
    assert all(r["caption"] in ("a photo of a chef", "a picture of a chef at work", "a photo of a scientist",
                                "a picture of a scientist at work") or "science" in r["seed_id"] for r in rows)
    for r in rows:
        assert 7.5 <= r["guidance_scale"] <= 15.0 and 0.1 <= r["p2p_fraction"] <= 0.9
        assert r["captioner"] is None
    # early rejection ran in the edit actors: stopped members are rejected rows with the reason
    stopped = [r for r in rows if (r["reason"] or "").startswith("early rejection after 2 of 4 steps: ")]
    assert stopped and all(r["status"] == "rejected" and r["shard"] is None for r in stopped)
    assert any(r["status"] == "accepted" for r in rows)


def test_generated_samples_keep_one_candidate_set_and_say_the_base_is_generated(generated):
    found = read_output_sets(generated)
    assert found
    for sample in found.values():
        meta, members = sample["meta"], [m["meta"] for m in sample["members"].values()]
        assert set_errors(meta) == [] and all(member_errors(m) == [] for m in members)
        assert meta["source"]["generated"] is True and meta["models"]["captioner"] is None
        assert len({m["candidate"] for m in members}) == 1  # a whole candidate set
        assert len({(m["guidance_scale"], m["p2p_fraction"]) for m in members}) == 1
        assert meta["generation"]["p2p"]["cross_attention"] is True
        source = read_provenance(sample["src"])
        assert source["synthetic"] and source["record"]["role"] == "base"
        assert source["record"]["base_prompt"] == meta["source"]["caption"]
