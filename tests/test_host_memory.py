"""Freed memory stays in a raylung process: large blocks are reused, not faulted in again.

Each arm is a fresh Python process (glibc's settings are per process and its adaptive threshold
remembers what ran before), running real torch allocations, with page faults counted by the
kernel (``getrusage``)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from raylung.train.host_memory import KEEP_FREED_MEMORY_ENV, THRESHOLD_BYTES, keep_freed_memory

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)

STEPS = 3

# A fresh process trains the tiny ResNet-ours at the paper's input, as a Ray Train worker
# does (its activations are 7-10 MB: glibc hands some back to the kernel and refaults them).
PROBE = f"""
import json, resource, torch
from torch import nn
from raylung.models import create_model
from raylung.train.host_memory import keep_freed_memory
from raylung.train.parts import build_optimizer
kept = keep_freed_memory()
torch.manual_seed(0)
torch.set_num_threads(1)
model = create_model("resnet_ours_tiny").to(memory_format=torch.channels_last)
optimizer = build_optimizer(model, lr=1e-4)
def step():
    images = torch.randn(8, 3, 240, 320).contiguous(memory_format=torch.channels_last)
    optimizer.zero_grad(set_to_none=True)
    nn.functional.binary_cross_entropy_with_logits(model(images), torch.ones(8, 1)).backward()
    optimizer.step()
step(); step()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({STEPS}):
    step()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / {STEPS}
print(json.dumps({{"kept": kept, "faults_per_step": faults}}))
"""


def _probe(setting: str) -> dict:
    env = {**os.environ, KEEP_FREED_MEMORY_ENV: setting}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _thp_mode() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "none"
    return text[text.find("[") + 1 : text.find("]")]


def test_a_training_step_reuses_freed_memory_instead_of_faulting_it_in_again():
    kept, default = _probe("1"), _probe("0")
    assert kept["kept"] is True and default["kept"] is False
    print(
        f"page faults per step: kept {kept['faults_per_step']:.0f}, default {default['faults_per_step']:.0f}"
    )
    # Kept: the step's activations come back from the heap already mapped (0-2,500 stray
    # pages measured, against 16,000-36,000 with glibc's default, which hands blocks back to
    # the kernel and faults them in again, 4 KB at a time, every step; the lowest ratio seen
    # was 6.6x). The setting doing nothing fails the first line; the second checks that the
    # default arm shows what the setting prevents. With THP "always" the kernel maps 2 MB at
    # a time, so the default arm faults less there.
    assert kept["faults_per_step"] < 5_000, kept
    if _thp_mode() != "always":
        assert default["faults_per_step"] > max(10_000, 3 * kept["faults_per_step"]), (default, kept)


def test_the_setting_can_be_turned_off_and_its_threshold_fits_mallopts_int(monkeypatch):
    monkeypatch.setenv(KEEP_FREED_MEMORY_ENV, "0")
    assert keep_freed_memory() is False
    assert THRESHOLD_BYTES == 1 << 30 and THRESHOLD_BYTES < 2**31  # mallopt's value is a C int
