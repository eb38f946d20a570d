"""Data-parallel training: 2 CPU processes on gloo (launched by torchrun) reach the weights
of one process with the same global batch."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from deeparch.cli import main

# no batch norm (CPU has no SyncBatchNorm) and no dropout (its masks depend on the shard)
# CONV3-16 -> RELU -> POOL2 is the block that prepare_for_training fuses (the compiled kernel)
PATTERN = "INPUT(8x8x1) -> CONV3-16 -> RELU -> POOL2 -> FC-16 -> RELU -> FC-10"
# 91 samples -> 73 train / 18 val; global batch 16: 4 full batches + 9 split 5/4 over ranks
ARGS = ["--data", "digits", "--subset", "91", "--epochs", "2", "--batch-size", "16",
        "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9", "--no-progress"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_gloo_processes_match_one_process(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert main(["train", PATTERN, "--out", str(single), *ARGS]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "deeparch", "train", PATTERN, "--out", str(ddp), *ARGS],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch 2/2") == 1              # only rank 0 prints
    cfg = json.loads((ddp / "config.json").read_text())
    assert cfg["world_size"] == 2
    a = load_file(single / "checkpoints" / "last.safetensors")
    b = load_file(ddp / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        if k.startswith("optimizer.") and k.endswith(".step"):
            assert torch.equal(a[k], b[k])
        else:
            assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k
    ha = json.loads((single / "history.json").read_text())
    hb = json.loads((ddp / "history.json").read_text())
    for ea, eb in zip(ha, hb):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert ea[key] == pytest.approx(eb[key], rel=1e-4, abs=1e-6), key
