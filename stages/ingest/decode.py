"""The ingest stage: SEED_REF rows in, SEED rows out. Every listed input comes out as one row, either a
normalised RGB seed or ``status=error`` with the reason, so nothing is lost."""

from __future__ import annotations

from schemas import keys
from schemas.records import SEED, STATUS_OK
from stages.base import SeedStage
from stages.ingest.config import IngestConfig
from stages.ingest.reading import error_seed_id, is_duplicate, read_source_bytes
from stages.utils.imaging import SeedImageError, decode_seed_image, to_raw



class DecodeSeeds(SeedStage):
    """SEED_REF batch -> SEED batch: read bytes, decode, normalise, assign ``seed_id``."""

    name = "ingest"
    output_schema = SEED

    def __init__(self, config: IngestConfig):
        super().__init__()
        self.config = config

    def process_row(self, row: dict) -> None:
        if self.config.kind == "generate":
            # generate mode: no image yet; the editor makes it from the caption (the base prompt)
            row.update(seed_id=row["source_seed_id"], image_rgb=None, width=None, height=None, status=STATUS_OK,
                       error=None)
            return
        data = read_source_bytes(row)
        image = decode_seed_image(
            data, max_pixels=self.config.max_pixels, min_side=self.config.min_side, max_side=self.config.max_side,
        )
        given = row.get("source_seed_id")
        if given is not None:
            try:
                seed_id = keys.validate_key(str(given), "seed_id")
            except keys.KeyFormatError as exc:
                raise SeedImageError(str(exc)) from None
        else:
            seed_id = keys.content_seed_id(data)
        raw, width, height = to_raw(image)
        row.update(seed_id=seed_id, image_rgb=raw, width=width, height=height, status=STATUS_OK, error=None)

    def on_error(self, row: dict, exc: Exception) -> list[dict]:
        # A duplicate keeps the original's content id as its seed id, so both are found under one key;
        # other inputs that never decoded still need a key: a hash of where they came from.
        row.update(seed_id=row["source_seed_id"] if is_duplicate(row.get("source_error")) else error_seed_id(row),
                   image_rgb=None, width=None, height=None)
        return super().on_error(row, exc)
