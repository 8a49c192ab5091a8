"""tune.yaml, the tune command's own file beside params.yaml: per model, a study's size, objective,
pruner and search space, checked against the model's own rules before any trial. No stage reads it,
and DVC lists every key of params.yaml in `dvc exp show`, where thirty columns of search space pushed
the models' scores out."""

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from mnist_pipeline.core.errors import ParamsError
from mnist_pipeline.core.params import MAX_EPOCHS, MAX_SEED, MAX_WEIGHTS, MLPParams, Params, Strict, mlp_weights
from mnist_pipeline.core.validation import field_type, short, validate
from mnist_pipeline.core.yaml_guard import parse_mapping, read_capped

TUNE_FILE = "tune.yaml"
MAX_TRIALS = 10_000  # per study


# --- tuning (the `tune` command; no stage reads it) ------------------------------------------
class Distribution(Strict):
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
            raise PydanticCustomError(
                "tune_distribution", "give a range {low: ..., high: ...} or a list {choices: [...]}"
            )
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
                raise problem(f"choices lists {short(repeated[0])} twice; keep one")
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


class TuneParams(Strict):
    trials: Annotated[int, Field(ge=1, le=MAX_TRIALS)]  # finished trials the study aims at, all workers together
    objective: Literal["val_loss", "val_accuracy"]  # the validation split's, never the test set's
    pruner: Literal["median", "successive_halving", "none"] = "median"
    startup_trials: Annotated[int, Field(ge=0, le=MAX_TRIALS)] = 5  # median: trials that finish before any is pruned
    warmup_epochs: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] = 1  # epochs every trial runs before it can be pruned
    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] | None = None  # per trial; empty: the model's epochs
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 42  # the sampler's, in the worker that creates the study
    space: Annotated[dict[str, Distribution], Field(min_length=1)]


class TuneFile(Strict):
    tune: dict[str, TuneParams]


def load_tuning(params_path: Path, params: Params) -> dict[str, TuneParams]:
    """The searches of tune.yaml beside `params_path`, each checked against its model in `params`;
    any problem becomes a one-line ParamsError naming tune.yaml."""
    path = Path(params_path).parent / TUNE_FILE
    raw = parse_mapping(read_capped(path, f"copy the shipped {TUNE_FILE} beside {Path(params_path).name}"), path)
    if set(raw) != {"tune"}:
        raise ParamsError(
            f"{path}: expected one section, tune (a search per model); found {', '.join(map(str, raw)) or 'none'}"
        )
    return checked_tuning(raw["tune"], params, str(path))


def checked_tuning(raw: Any, params: Params, source: str) -> dict[str, TuneParams]:
    """The `tune:` section `raw` validated, and every search usable with the models of `params`."""
    tunes = validate(TuneFile, {"tune": raw}, source).tune
    for name, tune in tunes.items():
        if problem := _tune_problem(params, name, tune):
            raise ParamsError(f"{source}: {problem}")
    return tunes


def search_for(tunes: dict[str, TuneParams], params: Params, name: str) -> TuneParams:
    """tune.<name>, for a model of params.yaml; a one-line error when either is missing."""
    params.model(name)
    if name not in tunes:
        sections = f" (it has {', '.join(tunes)})" if tunes else ""
        raise ParamsError(
            f"{TUNE_FILE} has no tune.{name} section{sections}; add one with the search space "
            f"(see `tune: mlp:` in the shipped {TUNE_FILE})"
        )
    return tunes[name]


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
            hint = (
                f"did you mean {match[0]!r}?"
                if match
                else f"allowed here: the keys of models.{name}: {', '.join(keys)}"
            )
            return f"unknown key {where!r}; {hint}"
        if key == "epochs" and tune.epochs is not None:
            return f"tune.{name}.epochs and {where}: both set the trials' epochs; keep one"
        annotation = field_type(model, key)
        if distribution.choices is None and annotation not in (int, float):
            return (
                f"{where}: {key} is not a number, so it takes choices, not a range: e.g. "
                f"{{choices: {short([getattr(model, key)])}}}"
            )
        if distribution.choices is None and annotation is int:
            assert distribution.low is not None and distribution.high is not None  # a range (Distribution.one_kind)
            if not all(float(v).is_integer() for v in (distribution.low, distribution.high, distribution.step or 1)):
                return f"{where}: {key} takes whole numbers; give low, high (and step) without a fraction"
        values = (
            [(f"choices[{i}]", v) for i, v in enumerate(distribution.choices)]
            if distribution.choices is not None
            else [("low", distribution.low), ("high", distribution.high)]
        )
        for part, value in values:
            try:
                checked = type(model).model_validate(model.model_dump() | {key: value})
            except ValidationError as exc:
                return f"{where}.{part} = {short(value)}: {exc.errors()[0]['msg']} (as models.{name}.{key})"
            if isinstance(checked, MLPParams) and (weights := mlp_weights(checked.hidden_units)) > MAX_WEIGHTS:
                return (
                    f"{where}.{part} = {short(value)}: {weights:,} weights, more than the limit of "
                    f"{MAX_WEIGHTS:,}; use fewer or smaller layers"
                )
    return None
