"""params.yaml → typed, validated parameters, checked once before any stage does work: the schema,
the limits that keep a hostile file cheap, and the rules between keys."""

import difflib
import itertools
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from mnist_pipeline.core.errors import ParamsError
from mnist_pipeline.core.validation import validate
from mnist_pipeline.core.yaml_guard import MAX_VALUE_CHARS, parse_mapping, read_capped, safe_yaml

PARAMS_FILE = Path("params.yaml")

# params.yaml is input a pull request can change, and CI runs it: limits that keep a mistaken or
# hostile value to a one-line error before any work.
TRAINING_IMAGES = 60_000  # MNIST's training set, split into train and validation
MAX_UNITS = 16384  # per hidden layer
MAX_LAYERS = 32
# An MLP's weights, biases included: 50M float32 is 200 MB, about 800 MB in training with Adam's
# two slots and the gradients. The shipped MLP has 0.67M.
MAX_WEIGHTS = 50_000_000
MAX_EPOCHS = 10_000
MAX_SEED = 2**32 - 1  # NumPy's and scikit-learn's limit


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the split ------------------------------------------------------------------------------
class DataParams(Strict):
    validation_size: Annotated[int, Field(ge=10, le=30000)]
    # A cap on training images after the split: small values make quick trial runs.
    train_size: Annotated[int, Field(ge=10)] | None = None
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)]


# --- models -------------------------------------------------------------------------------
class Augmentation(Strict):
    """Random changes to each training image, drawn afresh every batch from the model's seed
    (training/augmentation.py): the fit sees other hands' digits; the saved model never holds them.
    Off unless `enabled`; the amounts' defaults are those bench/AUGMENTATION.md measured best."""

    enabled: bool = False
    # Move by up to this fraction of the side (0.1 = 2.8 pixels), either way on each axis.
    shift: Annotated[float, Field(ge=0, le=0.5)] = 0.1
    # Turn by up to this many degrees, either way.
    rotation: Annotated[float, Field(ge=0, le=180)] = 10.0
    # Scale by up to this fraction, larger or smaller.
    zoom: Annotated[float, Field(ge=0, le=0.5)] = 0.1
    # Thicken or thin the strokes by up to this many pixels (a dilation or erosion); 0 = never.
    stroke: Annotated[int, Field(ge=0, le=3)] = 1

    @property
    def on(self) -> bool:
        return self.enabled and any((self.shift, self.rotation, self.zoom, self.stroke))


class _Training(Strict):
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"]
    learning_rate: Annotated[float, Field(gt=0, le=10)]
    # constant, or cosine decay from learning_rate to zero over all `epochs`.
    lr_schedule: Literal["constant", "cosine"]
    # Epochs of linear warm-up from 0 to learning_rate before the schedule: a large batch's higher
    # rate, applied at once, jolts the fresh weights. 0: none. At most half the epochs are spent on it,
    # so a quick run with fewer epochs (`-P epochs=1`) needs no change here.
    warmup_epochs: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] = 0
    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)]
    batch_size: Annotated[int, Field(ge=1, le=TRAINING_IMAGES)]
    # Stop after this many epochs without a lower validation loss; 0 turns it off.
    early_stopping_patience: Annotated[int, Field(ge=0, le=MAX_EPOCHS)]
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)]
    # The arithmetic of the fit (models.compute_dtype): auto is bfloat16 on a CPU that multiplies it
    # natively, else float32. The weights, and the saved model, are float32 either way.
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    augmentation: Augmentation = Augmentation()

    @field_validator("augmentation", mode="before")
    @classmethod
    def _a_block_or_empty(cls, value):
        # `augmentation:` with nothing under it is YAML's null: the defaults, off, as an absent block.
        if value is None:
            return {}
        if not isinstance(value, (dict, Augmentation)):  # pydantic would say "instance of Augmentation"
            raise PydanticCustomError(
                "augmentation", "give keys under it (enabled, shift, rotation, zoom, stroke), or nothing for off"
            )
        return value


class LogisticParams(_Training):
    type: Literal["logistic"]
    l2: Annotated[float, Field(ge=0)] = 0.0


class MLPParams(_Training):
    type: Literal["mlp"]
    hidden_units: Annotated[list[Annotated[int, Field(ge=1, le=MAX_UNITS)]], Field(min_length=1, max_length=MAX_LAYERS)]
    activation: Literal["relu", "gelu", "elu", "selu", "swish", "tanh", "sigmoid"]
    dropout: Annotated[float, Field(ge=0, lt=1)]
    l2: Annotated[float, Field(ge=0)] = 0.0


# Union[...], not A | B: validation._follow finds a discriminated union by get_origin() is
# typing.Union, which an A | B (types.UnionType before Python 3.14) is not.
ModelParams = Annotated[Union[LogisticParams, MLPParams], Field(discriminator="type")]  # noqa: UP007 - see above
# DVC puts the name into stage names (train@mlp) and into the shell command it runs for them.
ModelName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]


class MlflowParams(Strict):
    experiment: Annotated[str, Field(min_length=1)]


class RegistryParams(Strict):
    # After evaluation, a model that passes every gate against the current champion of its family
    # (evaluation/gates.py) is registered as `<name_prefix><model>` and takes the alias `champion`;
    # ci-report applies the same gates against its base.
    enabled: bool
    min_accuracy: Annotated[float, Field(ge=0, le=1)] = 0.0
    # Test accuracy must rise by at least this much over the champion's (and by something: a tie never counts).
    min_gain: Annotated[float, Field(ge=0, le=1)] = 0.0
    # No digit's test precision or recall may fall more than this below the champion's.
    max_digit_drop: Annotated[float, Field(ge=0, le=1)] = 0.02
    name_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]*$")] = "mnist-"


class Params(Strict):
    data: DataParams
    mlflow: MlflowParams
    registry: RegistryParams = RegistryParams(enabled=False)
    models: Annotated[dict[ModelName, ModelParams], Field(min_length=1)]

    def model(self, name: str) -> LogisticParams | MLPParams:
        if name not in self.models:
            raise ParamsError(f"unknown model {name!r}: params.yaml defines {', '.join(self.models)}")
        return self.models[name]


def load_params(path: Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; any problem becomes a one-line ParamsError."""
    path = Path(path)
    return parse_params(read_capped(path, "run from the repository root or pass --params"), path)


def parse_params(data: bytes, path: Path) -> Params:
    """The checks of load_params on the bytes of a params file (`tune --apply` checks what it would write)."""
    raw = parse_mapping(data, path)
    if "tune" in raw:
        raise ParamsError(
            f"{path}: the tune section belongs in tune.yaml beside it (no stage reads it, and DVC "
            f"lists every key of {path.name} in `dvc exp show`); move it there"
        )
    return checked(raw, str(path))


def override_model(params: Params, name: str, overrides: dict[str, str]) -> Params:
    """`params` with keys of `models.<name>` replaced, each value read as YAML (`mlflow run -P epochs=2`)."""
    fields = [field for field in type(params.model(name)).model_fields if field != "type"]
    raw = params.model_dump()
    for key, text in overrides.items():
        field = key.replace("-", "_")
        if field not in fields:
            match = difflib.get_close_matches(field, fields, n=1)
            hint = f"did you mean --{match[0]}?" if match else f"{name} takes {', '.join(fields)}"
            raise ParamsError(f"override --{key}: not a key of models.{name} that can be overridden; {hint}")
        if len(text) > MAX_VALUE_CHARS:
            raise ParamsError(
                f"override --{key}: a value of {len(text):,} characters; the limit is {MAX_VALUE_CHARS:,}"
            )
        raw["models"][name][field] = safe_yaml(text, f"override --{key}")
    return checked(raw, "override")


def checked(raw: dict, source: str) -> Params:
    """`raw` validated as Params, key by key and then across keys."""
    params = validate(Params, raw, source)
    if problem := _across_fields(params):
        raise ParamsError(f"{source}: {problem}")
    return params


def _across_fields(params: Params) -> str | None:
    """A rule between values, which no later stage should be the first to find (after DVC has
    cleared its outputs); None when all hold."""
    data = params.data
    if data.train_size and data.validation_size + data.train_size > TRAINING_IMAGES:
        return (
            f"data.validation_size + data.train_size = {data.validation_size + data.train_size:,}: more than "
            f"the {TRAINING_IMAGES:,} MNIST training images; lower one of them (an empty train_size "
            f"takes all the rest)"
        )
    for name, model in params.models.items():
        if model.augmentation.enabled and not model.augmentation.on:
            return (
                f"models.{name}.augmentation.enabled = true, but shift, rotation, zoom and stroke are all 0: "
                f"set one of them, or enabled: false"
            )
        if isinstance(model, MLPParams) and (weights := mlp_weights(model.hidden_units)) > MAX_WEIGHTS:
            return (
                f"models.{name}.hidden_units = {model.hidden_units}: {weights:,} weights, more than the "
                f"limit of {MAX_WEIGHTS:,}; use fewer or smaller layers"
            )
    return None


def mlp_weights(hidden_units: list[int]) -> int:
    """Weights and biases of an MLP from 784 pixels through `hidden_units` to 10 digits."""
    sizes = [28 * 28, *hidden_units, 10]
    return sum((fan_in + 1) * fan_out for fan_in, fan_out in itertools.pairwise(sizes))
