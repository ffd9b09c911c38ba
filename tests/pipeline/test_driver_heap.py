"""The driver's heap handed back to the system: the free pages glibc keeps inside its heap."""

from __future__ import annotations

import ctypes

import pytest

from pipeline.execution.driver_heap import HeapTrimmer


def private_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:")) / 1024


def test_a_tick_hands_back_freed_heap_pages_that_glibc_keeps():
    """80 MB of 4 KB allocations (glibc's heap, not mmap), freed but for the last, which pins the top: glibc keeps
    the pages resident until trimmed. The trimmer waits ``every_s`` before it trims."""
    trimmer = HeapTrimmer(every_s=0.0)
    if trimmer._trim is None:
        pytest.skip("not glibc: no malloc_trim")
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(4096) for _ in range(20_000)]
    try:
        for block in blocks:
            ctypes.memset(block, 1, 4096)
        for block in blocks[:-1]:
            libc.free(block)
        held = private_mib()
        HeapTrimmer(every_s=3600).tick()  # not yet due: nothing handed back
        assert private_mib() > held - 20
        trimmer.tick()
        assert trimmer.trims == 1 and private_mib() < held - 60
    finally:
        libc.free(blocks[-1])
