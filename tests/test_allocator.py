"""The heap policy the commands run with: freed large blocks are reused without page faults."""

import json
import subprocess
import sys

import pytest

from parity import allocator

# In a fresh process: malloc, fill and free a 64 MiB block 10 times, with or without the policy; print
# the minor page faults of the last 9 rounds (the first round faults its pages in either way).
ROUNDS = """
import ctypes, json, resource, sys
from parity import allocator
kept = allocator.keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": sum(faults[1:]), "first": faults[0]}))
"""


def _rounds(mode: str, env=None) -> dict:
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout)


@pytest.mark.skipif(allocator._libc() is None, reason="glibc's mallopt: Linux with glibc only")
def test_kept_policy_reuses_a_freed_large_block_without_faulting_it_in_again():
    default, kept = _rounds("default"), _rounds("keep")
    assert kept["kept"] and not default["kept"]
    # glibc's default maps a 64 MiB block afresh each round: thousands of faults (one per 4 KiB page, or
    # per 2 MiB with transparent huge pages); with the policy the block stays in the heap
    assert default["faults"] >= 9 * 16
    assert kept["faults"] <= default["faults"] / 8, (default, kept)


def test_the_environment_switch_leaves_glibcs_defaults(monkeypatch):
    monkeypatch.setenv(allocator.ENVIRONMENT_SWITCH, "0")
    monkeypatch.setattr(allocator, "_kept", False)
    assert allocator.keep_freed_memory() is False
    assert allocator.policy() == {"keeps_freed_memory": False, "threshold_bytes": None}


def test_results_say_which_policy_they_ran_with():
    from parity import sysinfo

    assert sysinfo.environment()["allocator"] == allocator.policy()
