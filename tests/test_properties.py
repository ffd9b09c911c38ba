"""Property tests: key formats, caption phrasing, config parsing, manifest and shard round trips."""

import json

import pyarrow.parquet as pq
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config.loading import parse_config
from pipeline.config.errors import ConfigError
from pipeline.output.verify import read_tar_samples
from schemas import keys
from stages.sets.phrasing import swap_caption
from stages.encode import ShardConfig
from tests.conftest import REPO
from tests.helpers import set_row, write_sets

KEY_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=40)


@given(st.binary(max_size=512))
def test_content_seed_ids_are_valid_keys(data):
    assert keys.validate_key(keys.content_seed_id(data))


def test_ids_and_noise_seeds_are_pinned():
    """The same bytes give the same ids on every machine and in every version: pinned values, worked out with
    coreutils (``printf '' | sha256sum``: e3b0c442...; ``printf '1234:s1021dba64afc64f731ca-gender:0' | sha256sum``,
    its first 8 bytes big-endian with the top bit cleared) and matching the mini-run's manifest (run.seed 1234)."""
    assert keys.content_seed_id(b"") == "se3b0c44298fc1c149afb"
    assert keys.set_id("s1021dba64afc64f731ca", "gender") == "s1021dba64afc64f731ca-gender"
    assert keys.noise_seed(1234, "s1021dba64afc64f731ca-gender", 0) == 4004753171383454418
    assert keys.noise_seed(1234, "s1021dba64afc64f731ca-gender", 1) == 6710166009530260925


@given(KEY_TEXT, KEY_TEXT, st.integers(0, 2**31), st.integers(0, 1000))
def test_set_ids_and_noise_seeds(seed_id, axis, run_seed, candidate):
    set_key = keys.set_id(seed_id, axis)
    assert "." not in set_key and set_key.startswith(seed_id)
    seed = keys.noise_seed(run_seed, set_key, candidate)
    assert 0 <= seed < 2**63 and seed == keys.noise_seed(run_seed, set_key, candidate)


@given(st.text(max_size=30))
def test_validate_key_accepts_exactly_the_key_alphabet(text):
    valid = bool(text) and len(text) <= keys.MAX_KEY_LENGTH and all(c in "abcdefghijklmnopqrstuvwxyz0123456789_-" for c in text)
    try:
        keys.validate_key(text)
        assert valid
    except ValueError:
        assert not valid


WORDS = st.sampled_from("a an the man woman person chef kitchen in at white shirt cooking his her he she old young "
                        "black dog photo of with".split())


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(caption=st.lists(WORDS, min_size=1, max_size=12).map(" ".join), data=st.data())
def test_swapped_captions_name_the_target_and_are_idempotent(taxonomy, caption, data):
    axis = data.draw(st.sampled_from(["gender", "race", "race_gender", "physical_gender"]))
    combo = data.draw(st.sampled_from(taxonomy.axis_value_combinations(axis)))
    attributes = taxonomy.axes[axis].attributes
    swapped = swap_caption(caption, taxonomy, attributes, combo)
    lowered = swapped.lower()
    for value in combo:
        assert any(word in lowered for word in [value.adjective.lower(), *(f for f in value.forms.values())])
    assert swap_caption(swapped, taxonomy, attributes, combo) == swapped


MINI = yaml.safe_load((REPO / "configs" / "mini.yaml").read_text())
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False, width=32),
                    st.text(max_size=8), st.lists(st.integers(), max_size=2))


@given(section=st.sampled_from(["edit", "plan", "filter", "caption", "shards", "input"]),
       key=st.sampled_from(["steps", "axes", "thresholds", "model", "prefix", "path", "max_batch", "bogus"]),
       value=SCALARS)
def test_config_parsing_either_loads_or_names_the_field(section, key, value):
    data = json.loads(json.dumps(MINI))
    data[section][key] = value
    try:
        loaded = parse_config(data, "prop.yaml", REPO / "configs")
        assert loaded.config_hash
    except ConfigError as exc:
        assert exc.field.startswith(section) or exc.field.startswith("plan")
        assert str(exc).startswith("prop.yaml: ")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=25, deadline=None)
@given(statuses=st.lists(st.sampled_from(["accepted", "rejected"]), min_size=1, max_size=4))
def test_manifest_and_shard_round_trip(tmp_path_factory, statuses):
    out = tmp_path_factory.mktemp("roundtrip")
    rows = [set_row(i, status) for i, status in enumerate(statuses)]
    result = write_sets(out, rows, 0, ShardConfig(prefix="p", thumbnail_size=0))
    samples = read_tar_samples((out / "shards" / result.tar_name).read_bytes())
    sets = read_tar_samples((out / "sets" / result.tar_name).read_bytes())
    manifest = pq.read_table(out / "manifest" / result.manifest_name).to_pylist()
    assert set(sets) == {f"s{i}-gender" for i, s in enumerate(statuses) if s == "accepted"}
    assert set(samples) == {f"{key}-{m}" for key in sets for m in ("male", "female")}
    assert len(manifest) == 4 * len(statuses)
    assert {(r["sample_key"], r["set_id"], r["member_id"]) for r in manifest if r["status"] == "accepted"} == {
        (f"{key}-{m}", key, m) for key in sets for m in ("male", "female")}
    for key, files in samples.items():
        assert json.loads(files["json"])["key"] == key and set(files) == {"jpg", "json"}
