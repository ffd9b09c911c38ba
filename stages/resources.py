"""What a stage asks of the cluster; the graph builder passes it to Ray Data unchanged."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Resources:
    num_cpus: float = 1.0  # per actor; fractional values let small stages share a core
    num_gpus: float = 0.0  # per actor; fractional (0.5) packs two actors on one GPU
    actors: int = 1  # actor-pool size
    batch_size: int = 8  # rows per batch handed to the stage
    max_restarts: int = 3  # times a crashed actor is restarted and its batch retried

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.num_cpus < 0:
            found.append(("num_cpus", "must be >= 0"))
        if self.num_gpus < 0:
            found.append(("num_gpus", "must be >= 0"))
        if self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            found.append(("num_gpus", "above 1 must be a whole number of GPUs"))
        if self.actors < 1:
            found.append(("actors", "must be >= 1"))
        if self.max_restarts < 0:
            found.append(("max_restarts", "must be >= 0"))
        if self.batch_size < 1:
            found.append(("batch_size", "must be >= 1"))
        return found
