"""Device and dtype choices shared by the model stages."""

from __future__ import annotations

import contextlib


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str):
    """Half precision only where the device runs it well; a CPU always computes in float32."""
    import torch

    if device == "cpu":
        return torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def set_threads(threads: int) -> None:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


@contextlib.contextmanager
def one_cpu_thread(device: str):
    """The block computed at one CPU thread, whatever the process's thread count, then the count as it was. A
    matrix product splits its sums by thread, so a CLIP score differed in the seventh digit between the editor's
    process (two threads) and the filter's own actor (one): a run's bytes then hung on how its stages were pooled
    (``ray.fuse``) and on ``threads``, which the config hash leaves out. Nothing changes on a GPU."""
    if device != "cpu":
        yield
        return
    import torch

    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)
