"""A trained model as a file: weights, feature spec and normalisation in one `.npz`, read back
without pickle (a model downloaded from the fleet can hold numbers, never code) and evaluated
with numpy, so backtests of a model need no torch."""

import io
import json
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from workfleet.operations.training.features import FEATURE_NAMES, FEATURE_VERSION

MODEL_ARTIFACT: Final = "model.npz"
FORMAT: Final = "workfleet-mlp/1"


class ModelFileError(ValueError):
    """The bytes are not a model this version can use."""


@dataclass(frozen=True, eq=False)
class TrainedModel:
    """An MLP (ReLU between layers) whose single output is the logit of `next bar up`."""

    layers: list[tuple[NDArray[np.float64], NDArray[np.float64]]]  # (weight[out, in], bias[out])
    mean: NDArray[np.float64]  # normalisation fitted on the training split
    std: NDArray[np.float64]
    feature_names: tuple[str, ...]
    feature_version: int

    def probability_up(self, features: NDArray[np.float64]) -> NDArray[np.float64]:
        """P(next bar up) for each row of raw (unnormalised) features; NaN rows give NaN."""
        hidden = (features - self.mean) / self.std
        for index, (weight, bias) in enumerate(self.layers):
            hidden = hidden @ weight.T + bias
            if index < len(self.layers) - 1:
                hidden = np.maximum(hidden, 0.0)
        logit = hidden[:, 0]
        return 0.5 * (1.0 + np.tanh(0.5 * logit))  # the logistic function, without overflow

    def to_bytes(self) -> bytes:
        meta = {
            "format": FORMAT,
            "feature_version": self.feature_version,
            "feature_names": list(self.feature_names),
            "layers": len(self.layers),
        }
        arrays: dict[str, NDArray[Any]] = {
            "meta": np.array(json.dumps(meta)),
            "mean": self.mean,
            "std": self.std,
        }
        for index, (weight, bias) in enumerate(self.layers):
            arrays[f"weight{index}"] = weight
            arrays[f"bias{index}"] = bias
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "TrainedModel":
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                meta = json.loads(str(archive["meta"]))
                if meta.get("format") != FORMAT:
                    raise ModelFileError(f"not a {FORMAT} model (format {meta.get('format')!r})")
                layers = [
                    (_floats(archive[f"weight{i}"]), _floats(archive[f"bias{i}"]))
                    for i in range(int(meta["layers"]))
                ]
                model = cls(
                    layers=layers,
                    mean=_floats(archive["mean"]),
                    std=_floats(archive["std"]),
                    feature_names=tuple(meta["feature_names"]),
                    feature_version=int(meta["feature_version"]),
                )
        except ModelFileError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelFileError(f"unreadable model file: {exc}") from exc
        model.check_usable()
        return model

    def check_usable(self) -> None:
        """The model fits the features this version computes, and its shapes chain."""
        if self.feature_version != FEATURE_VERSION or self.feature_names != FEATURE_NAMES:
            raise ModelFileError(
                f"the model was trained on features v{self.feature_version} "
                f"{list(self.feature_names)}; this worker computes v{FEATURE_VERSION} "
                f"{list(FEATURE_NAMES)}"
            )
        width = len(FEATURE_NAMES)
        if self.mean.shape != (width,) or self.std.shape != (width,) or not self.layers:
            raise ModelFileError("the model's normalisation does not match its features")
        for weight, bias in self.layers:
            if weight.ndim != 2 or weight.shape[1] != width or bias.shape != (weight.shape[0],):
                raise ModelFileError("the model's layer shapes do not chain")
            width = weight.shape[0]
        if width != 1:
            raise ModelFileError("the model must end in one output (the logit of an up bar)")


def _floats(array: NDArray[Any]) -> NDArray[np.float64]:
    if array.dtype.kind != "f":
        raise ModelFileError(f"expected floating-point arrays, found {array.dtype}")
    return np.asarray(array, dtype=np.float64)
