"""The model file: round trip, the numpy forward pass equals torch's, and bad files refused."""

import io
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from workfleet.operations.training.features import FEATURE_NAMES
from workfleet.operations.training.model_file import ModelFileError, TrainedModel

WIDTH = len(FEATURE_NAMES)


def torch_mlp() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Linear(WIDTH, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 1)
    )


def as_model(network: nn.Sequential, mean: np.ndarray, std: np.ndarray) -> TrainedModel:  # type: ignore[type-arg]
    layers = [
        (m.weight.detach().double().numpy(), m.bias.detach().double().numpy())
        for m in network
        if isinstance(m, nn.Linear)
    ]
    return TrainedModel(layers, mean, std, FEATURE_NAMES, 1)


def test_the_numpy_forward_pass_matches_torch() -> None:
    network = torch_mlp()
    rng = np.random.default_rng(0)
    mean, std = rng.normal(size=WIDTH), rng.uniform(0.5, 2, size=WIDTH)
    features = rng.normal(size=(64, WIDTH))
    expected = (
        torch.sigmoid(network(torch.as_tensor((features - mean) / std, dtype=torch.float32)))
        .detach()
        .numpy()[:, 0]
    )
    got = as_model(network, mean, std).probability_up(features)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_model_survives_its_file() -> None:
    model = as_model(torch_mlp(), np.zeros(WIDTH), np.ones(WIDTH))
    again = TrainedModel.from_bytes(model.to_bytes())
    features = np.random.default_rng(1).normal(size=(10, WIDTH))
    np.testing.assert_array_equal(again.probability_up(features), model.probability_up(features))


def test_nan_rows_give_nan() -> None:
    model = as_model(torch_mlp(), np.zeros(WIDTH), np.ones(WIDTH))
    features = np.full((2, WIDTH), np.nan)
    assert np.isnan(model.probability_up(features)).all()


def test_a_pickle_is_refused_without_being_run() -> None:
    class Boom:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (exec, ("raise SystemExit('pickle ran')",))

    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array([Boom()], dtype=object))
    with pytest.raises(ModelFileError, match="unreadable model file"):
        TrainedModel.from_bytes(buffer.getvalue())
    with pytest.raises(ModelFileError):
        TrainedModel.from_bytes(pickle.dumps({"weights": 1}))


def test_a_model_of_other_features_is_refused_naming_them() -> None:
    model = as_model(torch_mlp(), np.zeros(WIDTH), np.ones(WIDTH))
    other = TrainedModel(model.layers, model.mean, model.std, FEATURE_NAMES, 99)
    with pytest.raises(ModelFileError, match="features v99"):
        TrainedModel.from_bytes(other.to_bytes())


def test_layers_that_do_not_chain_are_refused() -> None:
    broken = TrainedModel(
        [(np.zeros((3, WIDTH)), np.zeros(3)), (np.zeros((1, 5)), np.zeros(1))],
        np.zeros(WIDTH),
        np.ones(WIDTH),
        FEATURE_NAMES,
        1,
    )
    with pytest.raises(ModelFileError, match="do not chain"):
        TrainedModel.from_bytes(broken.to_bytes())
