"""Multi-task unsupervised domain adaptation in the output space (the paper's MTL-UDA extension).

A network trained on a labelled source domain loses accuracy on an unlabelled target domain. Two
ADVENT-style remedies (Vu et al., CVPR 2019) act on the network's outputs for target images:

- "adversarial" (the reference's method): per task and output scale, a discriminator
  (`densemtl_lab.discriminator`) learns to tell source outputs from target ones, and the network
  learns to make its target outputs look like source outputs;
- "entropy": minimise the entropy of the target class predictions (semseg) directly (ADVENT's MinEnt).

Discriminator inputs: each prediction is bilinearly resized to the working size H x W
(align_corners=True; the reference upsamples to 512 x 1024), then mapped by its task
(`Task.discriminator_input` in densemtl_lab.tasks; each task module says what it reads): e.g. the
weighted self-information of the class probabilities, or a depth min-max normalised with the source
batch's labels. Entropy minimisation acts on the tasks that predict classes.

One training step (the reference's `training/da_train.py`), of which the trainer runs (1) and (4) and
calls the adaptation through its one hook (`densemtl_lab.train.AdaptationHook`) for (2)-(4):
1. supervised source loss, backward;
2. target forward; adversarial loss = weight x mean over discriminators of BCE-with-logits(D(target
   map), source label 0), with the discriminators frozen (requires_grad False); backward;
3. discriminator loss: mean over discriminators of BCE(D(source map, detached), 0), backward; then
   BCE(D(target map, detached), 1), backward;
4. one step of the network's optimiser and of the discriminators' (Adam, poly learning-rate decay).

Importing this module registers "adversarial" and "entropy" with the trainer
(`densemtl_lab.train.register_adaptation`); this module depends on the trainer, never the reverse.
The target training set is read through `UnlabelledView`, which passes on only the image and its
metadata: a target label is never read, so a target set without labels works the same.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from densemtl_lab import distributed
from densemtl_lab.data.build import build_dataset
from densemtl_lab.discriminator import DomainDiscriminators, discriminator_key
from densemtl_lab.evaluation import Batch, to_device
from densemtl_lab.tasks import TASKS, get_task
from densemtl_lab.tasks.base import self_information
from densemtl_lab.train import Outputs, Trainer, register_adaptation, stream_batches

#: Domain labels of the discriminators (the reference's SRC_LABEL / TGT_LABEL).
SOURCE_LABEL = 0.0
TARGET_LABEL = 1.0
#: The keys of a target sample that adaptation may read; every label key is left out.
UNLABELLED_KEYS = ("image", "K", "name", "domain")
#: Input size of the forward pass that finds a model's output scales.
_PROBE_SIZE = (64, 64)


class DomainMismatchError(ValueError):
    """Source and target datasets whose images or class sets differ."""


class UnlabelledView(Dataset):
    """A dataset seen without its labels: each sample keeps only `UNLABELLED_KEYS` (never reading the rest)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]
        return {key: sample[key] for key in UNLABELLED_KEYS if key in sample}

    def __repr__(self) -> str:
        return f"UnlabelledView({self.dataset!r})"


def _image_size(dataset: Dataset) -> tuple[int, int]:
    return tuple(dataset[0]["image"].shape[-2:])


def _comparable(value: Any) -> Any:
    """Class counts as they are, class-name sequences as lists (a tuple and a list may match)."""
    return list(value) if isinstance(value, (list, tuple)) else value


def check_domains(source: Dataset, target: UnlabelledView) -> None:
    """Raise DomainMismatchError unless both domains give images of one size and share one class set."""
    source_size, target_size = _image_size(source), _image_size(target)
    if source_size != target_size:
        raise DomainMismatchError(
            f"the target dataset {target.dataset!r} gives {target_size[0]}x{target_size[1]} images but the "
            f"source dataset {source!r} gives {source_size[0]}x{source_size[1]}; resize both to one "
            "data.size (and data.crop)")
    for name in ("num_classes", "class_names"):
        ours, theirs = _comparable(getattr(source, name, None)), _comparable(getattr(target.dataset, name, None))
        if ours is not None and theirs is not None and ours != theirs:
            raise DomainMismatchError(
                f"the target dataset {target.dataset!r} and the source dataset {source!r} have different "
                f"class sets ({name}: {theirs} vs {ours}); set data.classes so that both use one class set")


# --- discriminator inputs -------------------------------------------------------------------------------

def discriminator_input(task: str, pred: torch.Tensor, size: tuple[int, int],
                        source_label: torch.Tensor | None = None) -> torch.Tensor:
    """The map a discriminator of `task` sees: `pred` resized to `size`, then the task's map.

    `source_label` is the source batch's label that the task's map may be normalised by (depth's).
    """
    return get_task(task).discriminator_input(_resized(pred, size), source_label)


def entropy_loss(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """ADVENT's entropy loss: the mean over pixels of the normalised entropy of softmax(logits) at `size`."""
    return self_information(_resized(logits, size)).sum(dim=1).mean()


def _resized(pred: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`pred` [B, C, h, w] in float32, bilinearly resized to `size` (align_corners=True)."""
    return F.interpolate(pred.float(), size=tuple(size), mode="bilinear", align_corners=True)  # B, C, H, W


@torch.no_grad()
def discriminator_inputs(model: nn.Module, images: torch.Tensor, source_label: torch.Tensor | None,
                         scale: int = 0) -> dict[str, torch.Tensor]:
    """{task: the discriminator input map of the model's `scale` output for `images`}, to look at.

    `source_label` goes to every task's map (the source depth label in metres sets depth's range).
    The model runs as it is: put it in eval mode first, as for any evaluation.
    """
    size = tuple(images.shape[-2:])
    outputs = model(images)
    return {task: discriminator_input(task, outputs[task][scale], size, source_label) for task in outputs}


def output_scales(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """{task: the output scales of the model} (found with one small forward pass in eval mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        outputs = model(torch.zeros(1, 3, *_PROBE_SIZE, device=device))
    model.train(was_training)
    return {task: tuple(sorted(scales)) for task, scales in outputs.items()}


# --- the adaptation step --------------------------------------------------------------------------------

class Adaptation:
    """The base of the adaptations: the trainer's hook (`densemtl_lab.train.AdaptationHook`) on a target set.

    `backward` runs after the supervised backward, `step` with the trainer's optimiser step.
    Subclasses set `loss_names` (the values `backward` returns, in order, for the history). They use
    the trainer's plug-in surface only (see `densemtl_lab.train.Trainer`).
    """

    loss_names: tuple[str, ...] = ()

    def __init__(self, trainer: Trainer, target_set: UnlabelledView) -> None:
        self.trainer = trainer
        self.target_set = target_set
        self.loader, self.sampler, self.generator = trainer.training_loader(target_set, trainer.config.train.seed)
        self._target_batches = None

    def target_outputs(self) -> Outputs:
        """The network's outputs for the next target batch (in training mode, as the reference)."""
        trainer = self.trainer
        if self._target_batches is None:  # starts at the trainer's step, also after a resume
            self._target_batches = stream_batches(self.loader, self.sampler, self.generator,
                                                  trainer.config.train.seed, trainer.step)
        batch = to_device(next(self._target_batches), trainer.device, trainer.channels_last)
        with trainer.autocast():
            return trainer.network(batch["image"])

    def backward(self, batch: Batch, outputs: Outputs) -> dict[str, torch.Tensor]:
        """Backward of the target-domain losses; returns them detached, named as `loss_names`."""
        raise NotImplementedError

    def step(self, scaler: torch.amp.GradScaler | None) -> None:
        """Update the adaptation's own parameters (none by default)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._target_batches = None


class EntropyMinimisation(Adaptation):
    """ADVENT's MinEnt: weight x mean of the target entropy loss over the scales of the tasks that
    predict classes (semseg)."""

    loss_names = ("entropy",)

    def backward(self, batch: Batch, outputs: Outputs) -> dict[str, torch.Tensor]:
        size = tuple(batch["image"].shape[-2:])
        target = self.target_outputs()
        logits = [scale for task in self.trainer.tasks if TASKS[task].predicts_classes
                  for scale in target[task].values()]
        loss = self.trainer.config.adapt.entropy_weight * torch.stack(
            [entropy_loss(scale, size) for scale in logits]).mean()
        self.trainer.backward(loss)
        return {"entropy": loss.detach()}


def _domain_loss(discriminators: DomainDiscriminators, maps: Mapping[str, torch.Tensor],
                 label: float) -> torch.Tensor:
    """Mean over discriminators of BCE-with-logits(D(map), label) (ADVENT's bce_loss)."""
    losses = []
    for key, values in maps.items():
        logits = discriminators[key](values)
        losses.append(F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label)))
    return torch.stack(losses).mean()


class AdversarialAdaptation(Adaptation):
    """Output-space adversarial alignment with one discriminator per task and output scale (steps 2-4)."""

    loss_names = ("adversarial", "discriminator_source", "discriminator_target")

    def __init__(self, trainer: Trainer, target_set: UnlabelledView) -> None:
        super().__init__(trainer, target_set)
        adapt = trainer.config.adapt
        scales = output_scales(trainer.model)
        pairs = [(task, scale) for task in trainer.tasks for scale in scales[task]]
        self.discriminators = DomainDiscriminators(pairs, trainer.config.model.num_classes,
                                                   adapt.discriminator_width).to(trainer.device)
        self.optimizer = torch.optim.Adam(self.discriminators.parameters(), lr=adapt.discriminator_lr,
                                          betas=adapt.discriminator_betas)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._poly)

    def _poly(self, step: int) -> float:
        """The reference's lr_poly factor (1 - step / steps) ** power."""
        steps = self.trainer.config.train.steps
        return max(0.0, 1.0 - step / steps) ** self.trainer.config.adapt.poly_power

    def _maps(self, outputs: Outputs, source: Batch) -> dict[str, torch.Tensor]:
        """{discriminator key: its input map} of `outputs`, at the size of the source batch's images."""
        size = tuple(source["image"].shape[-2:])
        return {discriminator_key(task, scale): discriminator_input(task, outputs[task][scale], size,
                                                                    source.get(TASKS[task].label_key))
                for task, scale in self.discriminators.pairs}

    def backward(self, batch: Batch, outputs: Outputs) -> dict[str, torch.Tensor]:
        trainer, discriminators = self.trainer, self.discriminators
        self.optimizer.zero_grad(set_to_none=True)
        target_maps = self._maps(self.target_outputs(), batch)
        discriminators.requires_grad_(False)  # (2) fool the frozen discriminators
        adversarial = trainer.config.adapt.adversarial_weight * _domain_loss(discriminators, target_maps,
                                                                            SOURCE_LABEL)
        trainer.backward(adversarial)
        discriminators.requires_grad_(True)  # (3) train them on detached maps of both domains
        with torch.no_grad():
            source_maps = self._maps(outputs, batch)
        source_loss = _domain_loss(discriminators, source_maps, SOURCE_LABEL)
        trainer.backward(source_loss)
        target_loss = _domain_loss(discriminators, {k: m.detach() for k, m in target_maps.items()}, TARGET_LABEL)
        trainer.backward(target_loss)
        distributed.average_gradients(discriminators.parameters(), trainer.context)
        return {"adversarial": adversarial.detach(), "discriminator_source": source_loss.detach(),
                "discriminator_target": target_loss.detach()}

    def step(self, scaler: torch.amp.GradScaler | None) -> None:
        """(4) The discriminators' Adam step (through the fp16 scaler when there is one), then the poly decay."""
        if scaler is not None:
            scaler.step(self.optimizer)
        else:
            self.optimizer.step()
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"discriminators": self.discriminators.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.discriminators.load_state_dict(state["discriminators"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


ADAPTATIONS: dict[str, type[Adaptation]] = {"adversarial": AdversarialAdaptation, "entropy": EntropyMinimisation}


def build_adaptation(trainer: Trainer, target_set: Dataset | None = None) -> Adaptation:
    """The adaptation of `trainer.config.adapt.method` on the target training set, read without labels.

    `target_set` replaces the one the config would build (`data.target_dataset`, split "train").
    """
    method = trainer.config.adapt.method
    if method not in ADAPTATIONS:
        raise ValueError(f"adapt.method={method!r} has no adaptation step; use one of {', '.join(ADAPTATIONS)}")
    if target_set is None:
        target_set = build_dataset(trainer.config.data, "train", "target", tasks=())
    target = UnlabelledView(target_set)
    check_domains(trainer.train_set, target)
    return ADAPTATIONS[method](trainer, target)


for _method in ADAPTATIONS:
    register_adaptation(_method, build_adaptation)
