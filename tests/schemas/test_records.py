import pytest

from schemas.records import MANIFEST, SEED_REF, rows_to_table
from schemas.sample import sample_errors


def test_rows_to_table_fills_missing_columns_and_refuses_unknown_ones():
    table = rows_to_table([{"seed_index": 0, "shard_index": 0, "source_uri": "a.png"}], SEED_REF)
    assert table.column("caption").to_pylist() == [None]
    with pytest.raises(ValueError, match="not in the schema"):
        rows_to_table([{"seed_index": 0, "shard_index": 0, "source_uri": "a", "surprise": 1}], SEED_REF)


def test_manifest_schema_has_a_status_and_reason_for_every_row():
    assert {"status", "reason", "set_status", "shard", "config_hash", "noise_seed"} <= set(MANIFEST.names)
    assert not MANIFEST.field("status").nullable


def test_sample_schema_reports_the_broken_field():
    errors = sample_errors({"schema_version": 1, "synthetic": False})
    assert any(e.startswith("synthetic") for e in errors)
    assert any("required" in e for e in errors)
