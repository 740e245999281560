"""The training loop: an MLP classifier of the next bar's direction, trained with Adam on a
chronological split, stopped early on validation loss, checkpointed every epoch so that an
attempt that replaces a lost one resumes where it left off.

Deterministic on the CPU: the same params and bars give the same model, and a run resumed from
a checkpoint gives the same model as one never interrupted (the checkpoint holds the weights,
Adam's moments, the best weights so far and the shuffling generator's state).
"""

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from workfleet.operations.backtest.bars import Bars
from workfleet.operations.context import Cancelled
from workfleet.operations.training.evaluation import (
    chronological_split,
    classification_report,
    majority_baseline,
    normalisation,
)
from workfleet.operations.training.features import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    WARMUP,
    samples,
)
from workfleet.operations.training.model_file import TrainedModel
from workfleet.operations.training.params import Device, TrainingParams

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class Checkpoints:
    """Where the loop keeps its state: `save` after every epoch, `load` once at the start
    (None when there is nothing to resume)."""

    save: Callable[[bytes], None]
    load: Callable[[], bytes | None]


@dataclass(frozen=True, eq=False)
class TrainingOutcome:
    result: dict[str, Any]
    model: TrainedModel


@dataclass
class _Run:
    """What an epoch changes, apart from the model and the optimizer."""

    epochs_done: int = 0
    best_epoch: int = 0
    best_validation_loss: float = float("inf")
    best_validation_accuracy: float = 0.0
    best_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    epochs_since_best: int = 0
    last_train_loss: float = float("nan")


def pick_device(requested: Device) -> torch.device:
    """`auto`: CUDA, then MPS, then the CPU; a named accelerator that is absent is an error."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if requested == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (requested == "cuda" and not cuda) or (requested == "mps" and not mps):
        raise ValueError(f"device {requested!r} was asked for, but this worker has none")
    return torch.device(requested)


def train(
    params: TrainingParams,
    bars: Bars,
    *,
    progress: Callable[..., None],
    cancelled: Callable[[], bool],
    checkpoints: Checkpoints | None = None,
) -> TrainingOutcome:
    features, labels = samples(bars)
    split = chronological_split(len(labels), params.validation_fraction, params.test_fraction)
    mean, std = normalisation(features[split.train])
    device = pick_device(params.device)
    inputs = torch.as_tensor((features - mean) / std, dtype=torch.float32, device=device)
    targets = torch.as_tensor(labels, dtype=torch.float32, device=device)

    torch.manual_seed(params.seed)
    model = _mlp(len(FEATURE_NAMES), params.hidden_sizes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    shuffle = torch.Generator().manual_seed(params.seed)  # on the CPU whatever the device
    run = _Run(best_weights=_copy(model))
    saved = checkpoints.load() if checkpoints is not None else None
    resumed_from = None
    if saved is not None:
        _restore(saved, _fingerprint(params), model, optimizer, shuffle, run)
        resumed_from = run.epochs_done
    progress(
        percentage=100.0 * run.epochs_done / params.epochs,
        message=f"training on {device.type}"
        + (f", resumed after epoch {resumed_from}" if resumed_from else ""),
        epoch=run.epochs_done,
        total_steps=params.epochs,
    )

    loss_of = nn.BCEWithLogitsLoss()
    train_x, train_y = inputs[split.train], targets[split.train]
    while run.epochs_done < params.epochs and run.epochs_since_best < params.patience:
        model.train()
        order = torch.randperm(len(train_y), generator=shuffle).to(device)
        total = 0.0
        for start in range(0, len(order), params.batch_size):
            if cancelled():
                raise Cancelled("training cancelled")
            batch = order[start : start + params.batch_size]
            optimizer.zero_grad()
            loss = loss_of(model(train_x[batch]).squeeze(1), train_y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        run.epochs_done += 1
        run.last_train_loss = total / len(order)
        validation_loss, validation_accuracy = _evaluate(
            model, loss_of, inputs[split.validation], targets[split.validation]
        )
        if validation_loss < run.best_validation_loss:
            run.best_epoch, run.epochs_since_best = run.epochs_done, 0
            run.best_validation_loss = validation_loss
            run.best_validation_accuracy = validation_accuracy
            run.best_weights = _copy(model)
        else:
            run.epochs_since_best += 1
        progress(
            percentage=100.0 * run.epochs_done / params.epochs,
            message=f"epoch {run.epochs_done}/{params.epochs}: train loss "
            f"{run.last_train_loss:.4f}, validation loss {validation_loss:.4f}, "
            f"accuracy {validation_accuracy:.3f}",
            current_step=run.epochs_done,
            total_steps=params.epochs,
            epoch=run.epochs_done,
            train_loss=run.last_train_loss,
            validation_loss=validation_loss,
            validation_accuracy=validation_accuracy,
        )
        if checkpoints is not None:
            checkpoints.save(_checkpoint(_fingerprint(params), model, optimizer, shuffle, run))

    model.load_state_dict(run.best_weights)
    trained = _export(model, mean, std)
    test_labels = labels[split.test]
    predicted = (trained.probability_up(features[split.test]) > 0.5).astype(np.int64)
    result = classification_report(test_labels, predicted) | {
        "baseline_accuracy": majority_baseline(labels[split.train], test_labels),
        "epochs_run": run.epochs_done,
        "best_epoch": run.best_epoch,
        "stopped_early": run.epochs_done < params.epochs,
        "device": device.type,
        "resumed_from_epoch": resumed_from,
        "train_loss": run.last_train_loss,
        "validation_loss": run.best_validation_loss,
        "validation_accuracy": run.best_validation_accuracy,
        "samples": {
            "train": len(labels[split.train]),
            "validation": len(labels[split.validation]),
            "test": len(test_labels),
        },
        "features": list(FEATURE_NAMES),
        # backtest the model from here on to trade only bars it was never fitted or selected on
        "test_start": _iso(bars.timestamps[WARMUP + split.test.start]),
    }
    return TrainingOutcome(result, trained)


def _iso(stamp: np.datetime64) -> str:
    return f"{np.datetime_as_string(stamp, unit='s')}Z"


def _mlp(inputs: int, hidden_sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = inputs
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, 1))  # the logit of "next bar up"
    return nn.Sequential(*layers)


def _evaluate(
    model: nn.Module, loss_of: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(x).squeeze(1)
        loss = float(loss_of(logits, y))
        accuracy = float(((logits > 0).float() == y).float().mean())
    return loss, accuracy


def _copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _export(
    model: nn.Sequential, mean: np.ndarray[Any, Any], std: np.ndarray[Any, Any]
) -> TrainedModel:
    linear = [module for module in model if isinstance(module, nn.Linear)]
    return TrainedModel(
        layers=[
            (
                module.weight.detach().cpu().double().numpy(),
                module.bias.detach().cpu().double().numpy(),
            )
            for module in linear
        ],
        mean=mean,
        std=std,
        feature_names=FEATURE_NAMES,
        feature_version=FEATURE_VERSION,
    )


def _fingerprint(params: TrainingParams) -> str:
    """What a checkpoint must have been made with to be resumed (the device may change)."""
    relevant = params.model_dump(mode="json", exclude={"device"})
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def _checkpoint(
    fingerprint: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    shuffle: torch.Generator,
    run: _Run,
) -> bytes:
    buffer = io.BytesIO()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": fingerprint,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "shuffle": shuffle.get_state(),
            "epochs_done": run.epochs_done,
            "best_epoch": run.best_epoch,
            "best_validation_loss": run.best_validation_loss,
            "best_validation_accuracy": run.best_validation_accuracy,
            "best_weights": run.best_weights,
            "epochs_since_best": run.epochs_since_best,
            "last_train_loss": run.last_train_loss,
        },
        buffer,
    )
    return buffer.getvalue()


def _restore(
    data: bytes,
    fingerprint: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    shuffle: torch.Generator,
    run: _Run,
) -> None:
    # weights_only: a checkpoint from the network may hold tensors and numbers, never code
    saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if saved.get("format") != CHECKPOINT_FORMAT or saved.get("fingerprint") != fingerprint:
        raise ValueError("the operation's checkpoint was not made by these parameters")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    shuffle.set_state(saved["shuffle"])
    run.epochs_done = int(saved["epochs_done"])
    run.best_epoch = int(saved["best_epoch"])
    run.best_validation_loss = float(saved["best_validation_loss"])
    run.best_validation_accuracy = float(saved["best_validation_accuracy"])
    run.best_weights = saved["best_weights"]
    run.epochs_since_best = int(saved["epochs_since_best"])
    run.last_train_loss = float(saved["last_train_loss"])
