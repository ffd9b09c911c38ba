import pytest

from schemas import keys


def test_content_seed_id_is_stable_and_valid():
    a = keys.content_seed_id(b"image bytes")
    assert a == keys.content_seed_id(b"image bytes")
    assert a != keys.content_seed_id(b"other bytes")
    assert keys.validate_key(a) == a


@pytest.mark.parametrize("bad", ["has.dot", "Upper", "space here", "", "slash/x", "é"])
def test_keys_refuse_dots_and_other_characters(bad):
    with pytest.raises(ValueError):
        keys.validate_key(bad)


def test_set_and_member_ids_have_no_dots():
    assert keys.set_id("s123", "race_gender") == "s123-race_gender"
    assert keys.member_id(["middle_eastern", "female"]) == "middle_eastern-female"
    with pytest.raises(ValueError):
        keys.member_id(["Asian"])


def test_noise_seed_depends_only_on_run_seed_set_and_candidate():
    base = keys.noise_seed(1, "s1-gender", 0)
    assert base == keys.noise_seed(1, "s1-gender", 0)
    assert 0 <= base < 2**63
    assert len({base, keys.noise_seed(2, "s1-gender", 0), keys.noise_seed(1, "s2-gender", 0),
                keys.noise_seed(1, "s1-gender", 1)}) == 4


def test_shard_names_round_trip_and_brace_expand():
    name = keys.shard_name("cf", 12, "tar")
    assert name == "cf-000012.tar"
    assert keys.parse_shard_name(name) == ("cf", 12, "tar")
    with pytest.raises(ValueError):
        keys.parse_shard_name("cf-12.tar")


@pytest.mark.parametrize("bad", ["key\n", "cf-000001.tar\n"])
def test_a_trailing_newline_is_not_a_valid_key_or_shard_name(bad):
    with pytest.raises(ValueError):
        keys.validate_key(bad) if bad.startswith("key") else keys.parse_shard_name(bad)
