"""The ingest stage: SEED_REF rows in, SEED rows out. Every listed input comes out as one row, either a
normalised RGB seed or ``status=error`` with the reason, so nothing is lost.

With ``claim`` (the run's shared record of seeds seen, pipeline.execution.seen_registry) every seed is claimed
as it is read: its content id (dedupe) and, when it decoded, its seed id. A seed whose content a lower seed
index holds is a duplicate at once, and skips everything after ingest."""

from __future__ import annotations

from schemas import keys
from schemas.records import SEED, STATUS_OK
from stages.base import SeedStage, fail_seed
from stages.ingest.config import IngestConfig
from stages.ingest.reading import duplicate_reason, error_seed_id, is_duplicate, read_source_bytes
from stages.utils.imaging import SeedImageError, decode_seed_image, to_raw



class DecodeSeeds(SeedStage):
    """SEED_REF batch -> SEED batch: read bytes, decode, normalise, assign ``seed_id``."""

    name = "ingest"
    output_schema = SEED

    def __init__(self, config: IngestConfig, claim=None):
        """``claim(list of (seed_index, content_id, seed_id)) -> owners`` (SeenRegistry.claim), or None."""
        super().__init__()
        self.config = config
        self.claim = claim
        self.dedupe = config.dedupe and config.kind != "generate"
        self._claims: list[tuple[dict, str | None, str | None]] = []  # this batch's, claimed in one call

    def process_rows(self, rows: list[dict]) -> list[dict]:
        """Every row as the base does, then one claim for the batch: a copy of a lower seed's image becomes a
        duplicate here, and skips every stage after ingest."""
        self._claims = []
        out = super().process_rows(rows)
        if self.claim is not None and self._claims:
            owners = self.claim([(row["seed_index"], content_id, seed_id) for row, content_id, seed_id in self._claims])
            for (row, content_id, _), owner in zip(self._claims, owners):
                if owner is not None and owner < row["seed_index"]:
                    self._make_duplicate(row, owner, content_id)
        return out

    def _make_duplicate(self, row: dict, owner: int, content_id: str) -> None:
        """The row a copy gets (the writer settles copies the claim could not yet see: decide, copy rows)."""
        if row["status"] == STATUS_OK:
            self.counters["errors"] += 1
        reason = duplicate_reason(owner)
        row.update(source_error=reason, source_seed_id=content_id, seed_id=content_id, content_id=content_id,
                   image_rgb=None, width=None, height=None)
        fail_seed(row, self.reason(SeedImageError(reason)))

    def process_row(self, row: dict) -> None:
        if self.config.kind == "generate":
            # generate mode: no image yet; the editor makes it from the caption (the base prompt)
            self._claims.append((row, None, row["source_seed_id"]))
            row.update(seed_id=row["source_seed_id"], image_rgb=None, width=None, height=None, status=STATUS_OK,
                       error=None)
            return
        data = read_source_bytes(row, self.config.fs_options(row["source_uri"] or ""), self.config.max_bytes)
        if self.dedupe:  # kept on the row even if decoding fails: a copy of a bad image is still a copy
            row["content_id"] = keys.content_seed_id(data)
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
            seed_id = row.get("content_id") or keys.content_seed_id(data)
        self._claims.append((row, row.get("content_id"), seed_id))
        raw, width, height = to_raw(image)
        row.update(seed_id=seed_id, image_rgb=raw, width=width, height=height, status=STATUS_OK, error=None)

    def on_error(self, row: dict, exc: Exception) -> list[dict]:
        # A duplicate keeps the original's content id as its seed id, so both are found under one key;
        # other inputs that never decoded still need a key: a hash of where they came from.
        duplicate = is_duplicate(row.get("source_error"))
        content_id = row["source_seed_id"] if duplicate else row.get("content_id")
        self._claims.append((row, content_id, None))  # every seed is claimed: the writer waits for all
        row.update(seed_id=row["source_seed_id"] if duplicate else error_seed_id(row), content_id=content_id,
                   image_rgb=None, width=None, height=None)
        return super().on_error(row, exc)
