"""Turning an exception on one row into an error row, so the rest of the batch goes on."""

from __future__ import annotations

from schemas.records import STATUS_ERROR
from stages.imaging import describe_error


def fail_seed(row: dict, stage: str, exc: Exception) -> None:
    """A seed-level row (before plan) that a stage could not handle."""
    row["status"] = STATUS_ERROR
    row["error"] = f"{stage}: {describe_error(exc)}"


def fail_set(row: dict, stage: str, exc: Exception) -> None:
    """A set row (plan onward): the set and every candidate it has are errors, with the reason."""
    reason = f"{stage}: {describe_error(exc)}"
    row["set_status"], row["set_reason"] = STATUS_ERROR, reason
    for cand in row.get("candidates") or []:
        cand["status"], cand["reason"] = STATUS_ERROR, reason
