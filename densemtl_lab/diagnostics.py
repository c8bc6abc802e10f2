"""Is the exchange used? Statistics of a trained DenseMTL's cross-task attention, and test-time ablations.

Three questions, each per ordered pair (target <- source) of the mTEB:

- how far the correlation branch is open: the mean |alpha| over its channels (alpha starts at 0, so
  the branch starts switched off; paper, method section; `models/xtam.py`);
- how selective its attention is: the entropy of each attention row (a query's distribution over the
  source positions) divided by log(N), its value for uniform attention: 1 = uniform, 0 = one position;
- what the network loses when a branch is switched off at test time (`switched_off`): the correlation
  branch's output, the self-attention branch's output, or the whole exchange (the refined features
  become the features before it). A branch the network does not use costs nothing.
"""

from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from densemtl_lab.config import ExperimentConfig
from densemtl_lab.models.mteb import MultiTaskExchangeBlock, pair_name
from densemtl_lab.models.xtam import CorrelationBranch, SelfAttentionBranch
from densemtl_lab.tasks import TASKS
from densemtl_lab.evaluation import evaluate

#: What `switched_off` can remove at test time.
SWITCHES = ("correlation", "self_attention", "exchange")


class DiagnosticsError(ValueError):
    """A model or request the diagnostics cannot serve."""


def exchange_block(model: nn.Module) -> MultiTaskExchangeBlock:
    """The model's mTEB; a model without one (STL, MTL, PAD-Net, 3-Ways) raises DiagnosticsError."""
    exchange = getattr(model, "exchange", None)
    if not isinstance(exchange, MultiTaskExchangeBlock):
        raise DiagnosticsError(f"{type(model).__name__} has no mTEB exchange; the attention diagnostics "
                               "need a DenseMTL model")
    return exchange


def alpha_magnitudes(model: nn.Module) -> dict[str, float | None]:
    """{"target<-source": mean |alpha|} per pair; None where the pair has no alpha or no correlation branch."""
    exchange = exchange_block(model)
    values: dict[str, float | None] = {}
    for target, source in exchange.pairs:
        branch = exchange.xtams[pair_name(target, source)].correlation
        alpha = None if branch is None else branch.alpha
        values[f"{target}<-{source}"] = None if alpha is None else float(alpha.detach().abs().mean())
    return values


@torch.inference_mode()
def attention_entropy(model: nn.Module, dataset: Dataset, *, batch_size: int = 4, max_images: int | None = None,
                      device: torch.device | str = "cpu") -> dict[str, float | None]:
    """{"target<-source": mean normalised row entropy} over `dataset`'s images (the first `max_images`).

    The rows are the attention of every query position over the source positions, from the
    inspectable path, in full precision. None where the pair has no correlation branch.
    """
    exchange_block(model)
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    rows: dict[str, int] = {}
    seen = 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        images = batch["image"].to(device)
        if max_images is not None:
            images = images[: max_images - seen]
        _, inspection = model(images, return_attention=True)
        for (target, source), pair in inspection.items():
            key = f"{target}<-{source}"
            if pair.attention is None:
                sums.setdefault(key, math.nan)
                continue
            attention = pair.attention.float()
            entropy = -(attention * attention.clamp_min(1e-30).log()).sum(dim=-1)  # B, Nq
            sums[key] = sums.get(key, 0.0) + float(entropy.sum()) / math.log(attention.shape[-1])
            rows[key] = rows.get(key, 0) + entropy.numel()
        seen += len(images)
        if max_images is not None and seen >= max_images:
            break
    model.train(was_training)
    return {key: (total / rows[key] if key in rows else None) for key, total in sums.items()}


def _zero_output(module: nn.Module, inputs: Any, output: Any) -> Any:
    """Forward hook: the branch's output replaced by zeros (the attention it returns is kept)."""
    if isinstance(output, tuple):
        return (torch.zeros_like(output[0]), *output[1:])
    return torch.zeros_like(output)


def _features_unchanged(module: nn.Module, inputs: Any, output: Any) -> Any:
    """Forward hook on the mTEB: refined features = the features it was given."""
    return dict(inputs[0])


@contextmanager
def switched_off(model: nn.Module, *switches: str) -> Iterator[nn.Module]:
    """Within the block, `model` runs with the named parts removed (see SWITCHES); restored after.

    For the fast path (`model(image)`: training, evaluation, prediction). The inspectable path
    (`return_attention=True`) sees the branch switches but not "exchange".
    """
    unknown = [name for name in switches if name not in SWITCHES]
    if unknown:
        raise DiagnosticsError(f"cannot switch off {', '.join(unknown)}; choose from {', '.join(SWITCHES)}")
    exchange = exchange_block(model)
    targets = {"correlation": [m for m in exchange.modules() if isinstance(m, CorrelationBranch)],
               "self_attention": [m for m in exchange.modules() if isinstance(m, SelfAttentionBranch)],
               "exchange": [exchange]}
    with ExitStack() as stack:
        for name in switches:
            if not targets[name]:
                raise DiagnosticsError(f"this model has no {name.replace('_', '-')} branch to switch off")
            hook = _features_unchanged if name == "exchange" else _zero_output
            for module in targets[name]:
                stack.callback(module.register_forward_hook(hook).remove)
        yield model


def ablation_costs(model: nn.Module, dataset: Dataset, config: ExperimentConfig, device: torch.device,
                   switches: tuple[str, ...] = SWITCHES) -> dict[str, dict[str, Any]]:
    """{"full" or "no <switch>": {task: {metric: value}}}: the model evaluated whole and with each part
    switched off (parts the model lacks are skipped), with `config`'s evaluation settings."""
    exchange = exchange_block(model)
    present = {"correlation": any(x.correlation is not None for x in exchange.xtams.values()),
               "self_attention": any(x.self_attention is not None for x in exchange.xtams.values()),
               "exchange": True}
    options = config.evaluation_options()
    results = {"full": evaluate(model, dataset, device=device, **options)}
    for name in switches:
        if present[name]:
            with switched_off(model, name):
                results[f"no {name}"] = evaluate(model, dataset, device=device, **options)
    return results


def diagnose(model: nn.Module, dataset: Dataset, config: ExperimentConfig, device: torch.device, *,
             entropy_images: int = 16) -> dict[str, Any]:
    """Everything above for one trained DenseMTL: alpha, entropy (first `entropy_images` images) and
    the ablation costs, with each task's main-metric change when a part is switched off."""
    costs = ablation_costs(model, dataset, config, device)
    full = costs["full"]
    changes = {variant: {task: metrics[task][TASKS[task].main_metric] - full[task][TASKS[task].main_metric]
                         for task in model.tasks}
               for variant, metrics in costs.items() if variant != "full"}
    return {"alpha": alpha_magnitudes(model),
            "entropy": attention_entropy(model, dataset, batch_size=config.train.batch_size,
                                         max_images=entropy_images, device=device),
            "metrics": costs, "main_metric_change": changes}
