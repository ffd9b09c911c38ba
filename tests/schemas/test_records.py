import pytest

from schemas.records import MANIFEST, SEED_REF, rows_to_table
from schemas.sample import member_errors, set_errors


def test_rows_to_table_fills_missing_columns_and_refuses_unknown_ones():
    table = rows_to_table([{"seed_index": 0, "shard_index": 0, "source_uri": "a.png"}], SEED_REF)
    assert table.column("caption").to_pylist() == [None]
    with pytest.raises(ValueError, match="not in the schema"):
        rows_to_table([{"seed_index": 0, "shard_index": 0, "source_uri": "a", "surprise": 1}], SEED_REF)


def test_manifest_schema_has_a_status_and_reason_for_every_row():
    assert {"status", "reason", "set_status", "shard", "config_hash", "noise_seed"} <= set(MANIFEST.names)
    assert not MANIFEST.field("status").nullable


def test_sample_schemas_report_the_broken_field():
    errors = member_errors({"schema_version": 3, "synthetic": False})
    assert any(e.startswith("synthetic") for e in errors)
    assert any("required" in e for e in errors)
    assert any(e.startswith("schema_version") for e in set_errors({"schema_version": 1}))


def test_member_attributes_have_the_same_shape_whatever_the_axis():
    # A list of {attribute, value}: an object keyed by attribute would give gender and race_gender samples
    # different fields, which schema-inferring readers drop or refuse.
    errors = member_errors({"attributes": {"gender": "female"}})
    assert any(e.startswith("attributes") and "not of type 'array'" in e for e in errors)
