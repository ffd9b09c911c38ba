"""The ingest stage: SEED_REF rows in, SEED rows out. Every listed input comes out as one row, either a
normalised RGB seed or ``status=error`` with the reason, so nothing is lost.

With ``claim`` (the run's shared record of seeds seen, pipeline.execution.seen_registry) every seed is claimed
as it is read: its content id (dedupe) and, when it decoded, its seed id. A seed whose content a lower seed
index holds is a duplicate at once, and skips everything after ingest."""

from __future__ import annotations

from schemas import keys
from schemas.records import SEED, STATUS_OK
from stages.base import SeedStage
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
        self._claimed: set[int] = set()

    def _claim(self, row: dict, content_id: str | None, seed_id: str | None) -> None:
        """Record the seed; a copy of a lower seed's image becomes a duplicate here."""
        if self.claim is None:
            return
        owner = self.claim([(row["seed_index"], content_id, seed_id)])[0]
        self._claimed.add(row["seed_index"])
        if owner is not None and owner < row["seed_index"]:
            row.update(source_error=duplicate_reason(owner), source_seed_id=content_id)
            raise SeedImageError(row["source_error"])

    def process_row(self, row: dict) -> None:
        if self.config.kind == "generate":
            # generate mode: no image yet; the editor makes it from the caption (the base prompt)
            self._claim(row, None, row["source_seed_id"])
            row.update(seed_id=row["source_seed_id"], image_rgb=None, width=None, height=None, status=STATUS_OK,
                       error=None)
            return
        data = read_source_bytes(row, self.config.fs_options(row["source_uri"] or ""))
        content_id = keys.content_seed_id(data)
        try:
            image = decode_seed_image(
                data, max_pixels=self.config.max_pixels, min_side=self.config.min_side, max_side=self.config.max_side,
            )
            seed_id = self._seed_id(row, content_id)
        except Exception:
            self._claim(row, content_id if self.dedupe else None, None)  # a copy is a duplicate before a bad image
            raise
        self._claim(row, content_id if self.dedupe else None, seed_id)
        raw, width, height = to_raw(image)
        row.update(seed_id=seed_id, content_id=content_id, image_rgb=raw, width=width, height=height,
                   status=STATUS_OK, error=None)

    @staticmethod
    def _seed_id(row: dict, content_id: str) -> str:
        given = row.get("source_seed_id")
        if given is None:
            return content_id
        try:
            return keys.validate_key(str(given), "seed_id")
        except keys.KeyFormatError as exc:
            raise SeedImageError(str(exc)) from None

    def on_error(self, row: dict, exc: Exception) -> list[dict]:
        if self.claim is not None and row["seed_index"] not in self._claimed:
            self.claim([(row["seed_index"], None, None)])  # every seed is claimed: the writer waits for all
        # A duplicate keeps the original's content id as its seed id, so both are found under one key;
        # other inputs that never decoded still need a key: a hash of where they came from.
        duplicate = is_duplicate(row.get("source_error"))
        row.update(seed_id=row["source_seed_id"] if duplicate else error_seed_id(row),
                   content_id=row["source_seed_id"] if duplicate else None, image_rgb=None, width=None, height=None)
        return super().on_error(row, exc)
