"""Run under `torchrun --nproc_per_node=2`: train the smoke profile with DDP; every rank saves its weights.

Usage: torchrun --standalone --nproc_per_node=2 tests/helpers/ddp_train.py OUT_DIR [ASSIGNMENT...]
(assignments as `-p` takes them, e.g. train.aggregator=mgda).
Writes OUT_DIR/rank<r>.pt (the model state_dict of rank r) and OUT_DIR/seen<r>.json (sample names, and
the gradient-conflict statistics each rank logged: train.conflict_every=2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from densemtl_lab import distributed
from densemtl_lab.config import get_profile, override
from densemtl_lab.train import Trainer

out = Path(sys.argv[1])
config = override(get_profile("smoke", steps=3, eval_every=3, checkpoint_every=3, quiet=True, device="cpu",
                              conflict_every=2), *sys.argv[2:])
trainer = Trainer(config, out / "run")
seen, conflicts = [], []
original_step = trainer.train_step


def recording_step(batch):
    seen.extend(batch["name"])
    values = original_step(batch)
    conflicts.append(trainer.conflict_row)
    return values


trainer.train_step = recording_step
result = trainer.fit()
rank = trainer.context.rank
torch.save(trainer.model.state_dict(), out / f"rank{rank}.pt")
(out / f"seen{rank}.json").write_text(json.dumps({"names": seen, "world_size": trainer.context.world_size,
                                                  "metrics": result.metrics, "conflicts": conflicts}))
distributed.shutdown()
