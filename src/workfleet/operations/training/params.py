"""`training` operation parameters (wire names as in DESIGN §3.1); free of torch, so the backend
validates submits without it."""

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from workfleet.operations.market_params import MarketSliceParams

Device = Literal["auto", "cpu", "cuda", "mps"]
LayerSize = Annotated[int, Field(ge=1, le=4096)]
MIN_TRAIN_FRACTION = 0.1


class TrainingParams(MarketSliceParams):
    epochs: int = Field(20, ge=1, le=10_000, description="most passes over the training data")
    batch_size: int = Field(256, ge=1, le=1_000_000)
    learning_rate: float = Field(1e-3, gt=0, le=10, description="Adam's step size")
    hidden_sizes: list[LayerSize] = Field(
        default_factory=lambda: [32, 16],
        max_length=8,
        description="units per hidden layer; [] is logistic regression",
    )
    seed: int = Field(
        0, ge=0, le=2**32 - 1, description="weights and shuffling; same seed, same model on CPU"
    )
    device: Device = Field("auto", description="auto picks CUDA, then MPS, then the CPU")
    validation_fraction: float = Field(
        0.15, gt=0, lt=1, description="share of samples, after train"
    )
    test_fraction: float = Field(0.15, gt=0, lt=1, description="share of samples, the most recent")
    patience: int = Field(
        5, ge=1, le=10_000, description="epochs without a better validation loss before stopping"
    )

    @model_validator(mode="after")
    def _room_to_train(self) -> Self:
        held_out = self.validation_fraction + self.test_fraction
        if held_out > 1 - MIN_TRAIN_FRACTION:
            raise ValueError(
                f"validation_fraction + test_fraction is {held_out:g}: at most "
                f"{1 - MIN_TRAIN_FRACTION:g}, so that at least {MIN_TRAIN_FRACTION:.0%} of the "
                "samples are left to train on"
            )
        return self
