"""A decoder that crashes its worker is an expected outcome: reported in the result, no crash dump printed."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import ctypes, sys
from vidscore_core.media.isolation import IsolatedPool
with IsolatedPool(ctypes.string_at, workers=1, start_method=sys.argv[1]) as pool:
    pool.submit("null", 0)  # ctypes.string_at(0): a NULL dereference in C, as a broken decoder does
    outcomes = []
    while not outcomes:
        outcomes = pool.collect()
print(outcomes[0].error)
"""


@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_a_crashing_worker_prints_no_fatal_error_dump(start_method: str) -> None:
    # -X faulthandler: the parent has a fault handler, as under pytest; the worker must not inherit it.
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", SCRIPT, start_method],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "SIGSEGV" in proc.stdout
    assert "Fatal Python error" not in proc.stderr and "Extension modules" not in proc.stderr, proc.stderr
