"""The search, Optuna's side: the study that every worker shares through one database, the values a
trial draws from tune.yaml's `tune:` space, how many trials a study still needs, and the lines a
worker prints. No TensorFlow and no MLflow here (tune.py trains and logs), so all of it is tested
without either."""

import json
import os
import shlex
import sqlite3
import time
import warnings
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Literal

import numpy as np
import optuna
import sqlalchemy.exc
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from mnist_pipeline.core.errors import InputError, PipelineError, first_line
from mnist_pipeline.core.params import LogisticParams, MLPParams, Params
from mnist_pipeline.core.validation import field_type
from mnist_pipeline.tracking.sqlite_url import sqlite_file, sqlite_url
from mnist_pipeline.tuning.schema import TuneParams

STORE_FILE = "optuna.db"  # the default storage, at the repository root beside mlflow.db; git-ignored
# Study user attrs: the MLflow parent run every worker logs under, and the search the study was made for.
PARENT_ATTR = "mlflow_parent_run_id"
SEARCH_ATTR = "search"
# Trial user attrs: its MLflow run, the values it trained with (as models.<name> takes them), and why
# it was pruned or never ran.
RUN_ATTR = "mlflow_run_id"
VALUES_ATTR = "values"
PRUNED_ATTR = "pruned"
SURPLUS_ATTR = "surplus"
# A study's trials so far: finished ones and those a worker is training. A trial that failed (its
# worker was interrupted, or died and missed its heartbeats) is not one: another worker runs it again.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
# A worker killed outright (SIGKILL, a machine lost) leaves its trial RUNNING; with no heartbeat for
# GRACE_S another worker marks it failed, and the study runs one more in its place.
HEARTBEAT_S = 60
GRACE_S = 180
PARENT_WAIT_S = 60  # for the worker that created the study to record its MLflow parent run
WAIT_S = 2  # between looks at the last trials other workers are training
# Tables of MLflow's schema that Optuna's lacks (both have alembic_version): a file with them is an MLflow store.
MLFLOW_TABLES = {"alembic_version", "experiments", "runs"}
SIGNIFICANT_DIGITS = 3  # of a float drawn from a range: params.yaml gets 0.00282, not 0.0028183829312644534


class Surplus(Exception):
    """A trial asked for by two workers at once when the study needed only one more."""


def default_storage(root: Path) -> str:
    return sqlite_url((Path(root) / STORE_FILE).resolve())


def check_not_tracking_store(url: str, tracking: str) -> None:
    """Refuse a study storage that is the MLflow tracking store (`tracking`), or any MLflow database:
    Optuna would add its tables to MLflow's and then fail on MLflow's alembic_version ("no longer
    compatible with the table schema"). Read only, before anything is written."""
    fix = (
        "give the study a database of its own: leave out --storage (optuna.db at the repository root) "
        "or name another, e.g. --storage sqlite:///optuna-mlp.db"
    )
    if same_database(url, tracking):
        raise InputError(f"--storage {shown(url)} is the MLflow tracking store ({shown(tracking)}); {fix}")
    path = sqlite_file(url)
    if path is not None and sqlite_tables(path) >= MLFLOW_TABLES:
        raise InputError(f"--storage {shown(url)}: {path} is an MLflow tracking store (it has MLflow's tables); {fix}")


def same_database(a: str, b: str) -> bool:
    """Whether two database URLs open one database: the same SQLite file (resolved, or one file under
    two names), else the same backend, host, port and database, whatever the driver or credentials."""
    file_a, file_b = sqlite_file(a), sqlite_file(b)
    if file_a is not None and file_b is not None:
        both = file_a.exists() and file_b.exists()
        return file_a.resolve() == file_b.resolve() or (both and os.path.samefile(file_a, file_b))
    try:
        url_a, url_b = sqlalchemy.engine.make_url(a), sqlalchemy.engine.make_url(b)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # not a database URL (an MLflow server's http://)
        return False
    return all(getattr(url_a, key) == getattr(url_b, key) for key in ("host", "port", "database")) and (
        url_a.get_backend_name() == url_b.get_backend_name()
    )


def sqlite_tables(path: Path) -> set[str]:
    """The tables of the SQLite file at `path`, read only; none when it is missing or not a database."""
    if not path.is_file():
        return set()
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:  # not a database: open_storage says so
        return set()


def shown(url: str) -> str:
    """The storage URL without its password, for tags and printed lines."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def quiet_optuna() -> None:
    """Optuna's own logger prints coloured INFO lines for every trial, and a traceback for each failed
    one (an interrupted worker's too): the worker prints its own lines instead, and Optuna's errors
    still reach the log through the root logger."""
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The study database at `url`, its tables created if new.

    Workers that start together on a new database race to create its tables, and the loser's
    CREATE fails: it tries again and finds them. The heartbeat lets a worker tell a trial whose
    worker died from one still training.
    """
    engine_kwargs: dict[str, object] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}  # SQLite has one writer: wait for it, as mlflow.db does
    elif url.startswith("postgresql"):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeat_interval is marked experimental
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
                )
        except ImportError as exc:
            raise PipelineError(
                f"cannot open the study storage {shown(url)}: its database driver is not installed "
                f"({first_line(exc.__cause__ or exc)}); install it, e.g. pip install 'psycopg[binary]' "
                f"for postgresql://"
            ) from None
        except sqlalchemy.exc.ArgumentError as exc:
            raise PipelineError(
                f"--storage {shown(url)}: not a database URL ({first_line(exc)}); give one such as "
                f"sqlite:///optuna.db or postgresql://user@host/optuna"
            ) from None
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if attempt == 4 or (isinstance(exc, sqlalchemy.exc.OperationalError) and not url.startswith("sqlite")):
                cause = getattr(exc, "orig", None) or exc  # the driver's error, on the errors that carry one
                raise PipelineError(
                    f"cannot use the study storage {shown(url)}: {first_line(cause)[:300]}; "
                    f"fix: start the database or correct --storage"
                ) from None
            time.sleep(1 + attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def pruner(tune: TuneParams) -> optuna.pruners.BasePruner:
    """The pruner judges a trial by its objective each epoch (step = epoch, from 1); the earliest it
    stops one is at the end of epoch `warmup_epochs` (Optuna's warm-up steps, SH's first rung)."""
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=tune.warmup_epochs)
    if tune.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, tune.warmup_epochs))
    return optuna.pruners.NopPruner()


def direction(tune: TuneParams) -> Literal["minimize", "maximize"]:
    return "minimize" if tune.objective == "val_loss" else "maximize"


def definition(name: str, params: Params, tune: TuneParams) -> dict:
    """What makes two workers' trials comparable: the model's params but the tuned keys, the data,
    the objective, the pruner and the space. Workers whose params.yaml or tune.yaml differ in any of
    it must not share a study; the number of trials and the sampler's seed may differ."""
    base = params.model(name).model_dump()
    for key in tune.space:
        base.pop(key)
    if tune.epochs:
        base["epochs"] = tune.epochs
    return json.loads(
        json.dumps(
            {
                "model": name,
                "models": base,
                "data": params.data.model_dump(),
                "objective": tune.objective,
                "pruner": [tune.pruner, tune.startup_trials, tune.warmup_epochs],
                "space": {key: d.model_dump(exclude_defaults=True) for key, d in tune.space.items()},
            }
        )
    )


def differences(made_for: dict, here: dict) -> list[str]:
    """The keys (`models.mlp.optimizer`, `space.dropout`, `objective`) whose values differ."""
    found = []
    for key in sorted(set(made_for) | set(here)):
        a, b = made_for.get(key), here.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key != "space":
            prefix = f"models.{here['model']}" if key == "models" else key
            found += [f"{prefix}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif key == "space" and isinstance(a, dict) and isinstance(b, dict):
            found += [f"space.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            found.append(key)
    return found


def open_study(
    storage,
    study_name: str,
    tune: TuneParams,
    search: dict,
    make_parent: Callable[[], str],
    wait_s: float = PARENT_WAIT_S,
) -> tuple[optuna.Study, bool]:
    """The study `study_name`, created if new; and whether this worker created it.

    Of the workers that start a new study at once, the database lets one create it; that one makes
    the MLflow parent run and records its id in the study, and the others wait for the id, so every
    worker logs under one parent without searching for it. Only the creator seeds its sampler with
    `tune.seed`: workers with one seed would draw the same values.
    """
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            direction=direction(tune),
            sampler=optuna.samplers.TPESampler(seed=tune.seed),
            pruner=pruner(tune),
        )
    except DuplicatedStudyError:
        study = optuna.load_study(
            study_name=study_name, storage=storage, sampler=optuna.samplers.TPESampler(), pruner=pruner(tune)
        )
    else:
        try:
            study.set_user_attr(SEARCH_ATTR, search)
            study.set_user_attr(PARENT_ATTR, make_parent())
        except BaseException:
            optuna.delete_study(study_name=study_name, storage=storage)  # no study without its parent run
            raise
        return study, True
    deadline = time.monotonic() + wait_s
    while PARENT_ATTR not in study.user_attrs:
        if time.monotonic() > deadline:
            raise PipelineError(
                f"study {study_name!r} has no MLflow parent run after {wait_s:.0f} s: the worker that "
                f"created it stopped first, or it was not made by this command; start a new study "
                f"with --study NAME"
            )
        time.sleep(0.5)
    made_for = study.user_attrs.get(SEARCH_ATTR, {})
    if made_for != search:
        raise PipelineError(
            f"study {study_name!r} was made for another search ({', '.join(differences(made_for, search))} "
            f"differ from this params.yaml and tune.yaml); run the workers with the same two files, "
            f"or start a new study with --study NAME"
        )
    if study.direction.name.lower() != direction(tune):
        raise PipelineError(
            f"study {study_name!r} {study.direction.name.lower()}s its objective, this tune.yaml "
            f"asks to {direction(tune)} {tune.objective}; start a new study with --study NAME"
        )
    return study, False


def counted(study: optuna.Study, before: int | None = None) -> int:
    """The study's trials that count towards its number (all, or those numbered below `before`)."""
    trials = study.get_trials(deepcopy=False, states=COUNTED)
    return sum(1 for t in trials if before is None or t.number < before)


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark failed the RUNNING trials whose worker has missed its heartbeats."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def run_trials(study: optuna.Study, target: int, objective: Callable, on_trial: Callable) -> None:
    """Run trials until the study has `target` finished, whichever workers run them. While the others
    train the last ones, it waits: if one of them is interrupted, or dies and misses its heartbeats,
    its trial fails, and this worker runs one in its place. Two workers that ask at once for the last
    one: the one numbered later is a surplus, failed before it trains (the objective calls
    `check_surplus` first)."""
    while True:
        fail_stale_trials(study)
        if finished(study) >= target:
            return
        if counted(study) >= target:
            time.sleep(WAIT_S)
            continue
        study.optimize(objective, n_trials=1, catch=(Surplus,), callbacks=[on_trial])


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def check_surplus(study: optuna.Study, trial: optuna.Trial, target: int) -> None:
    if counted(study, before=trial.number) >= target:
        trial.set_user_attr(SURPLUS_ATTR, True)
        raise Surplus(f"the study had {target} trials when trial {trial.number} started")


# --- a trial's values ------------------------------------------------------------------------------
def draw(trial: optuna.Trial, tune: TuneParams, model: LogisticParams | MLPParams) -> dict:
    """The trial's value for each key of the space, as models.<name> takes it.

    Optuna's choices are numbers, strings, booleans or None: a list (hidden_units) is offered as its
    JSON text. A float from a range without a step is rounded to a few significant digits, and the
    trial trains with the rounded value: the one --apply writes and `dvc exp run -S` gets.
    """
    values = {}
    for key, space in tune.space.items():
        if space.choices is not None:
            options = [json.dumps(c) if isinstance(c, (list, dict)) else c for c in space.choices]
            values[key] = space.choices[options.index(trial.suggest_categorical(key, options))]
        elif field_type(model, key) is int:
            assert space.low is not None and space.high is not None  # a range (Distribution.one_kind)
            values[key] = trial.suggest_int(
                key, int(space.low), int(space.high), step=int(space.step or 1), log=space.log
            )
        else:
            assert space.low is not None and space.high is not None  # a range (Distribution.one_kind)
            value = trial.suggest_float(key, space.low, space.high, step=space.step, log=space.log)
            if space.step is None:
                value = min(max(float(f"{value:.{SIGNIFICANT_DIGITS}g}"), space.low), space.high)
            values[key] = value
    return values


def trial_model(model: LogisticParams | MLPParams, values: dict, tune: TuneParams) -> LogisticParams | MLPParams:
    """The model's params with a trial's values in (and the tune section's epochs, if it sets them),
    checked by the same rules as models.<name>."""
    epochs = {"epochs": tune.epochs} if tune.epochs else {}
    return type(model).model_validate(model.model_dump() | values | epochs)


# --- what a worker prints --------------------------------------------------------------------------
def text(value) -> str:
    """A value as params.yaml and `dvc exp run -S` take it: 0.00282 (never 2.82e-03), [512,512]."""
    if isinstance(value, float):
        return np.format_float_positional(value, trim="-")
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def values_text(values: dict) -> str:
    return " ".join(f"{key}={text(value)}" for key, value in values.items())


def trial_line(trial: FrozenTrial, objective: str, best: bool) -> str:
    """One line per finished trial: number, outcome, the objective, the values; `best` marks the study's best so far."""
    values = values_text(trial.user_attrs.get(VALUES_ATTR, trial.params))
    if trial.state == TrialState.COMPLETE:
        outcome, value = "complete", trial.value
    elif trial.state == TrialState.PRUNED:
        outcome = f"pruned ({trial.user_attrs.get(PRUNED_ATTR) or 'by the pruner'})"
        value = trial.intermediate_values[trial.last_step] if trial.last_step is not None else None
    else:
        outcome, value = "failed", None
    measured = f"{objective} {value:.4f}" if value is not None else f"{objective} -"
    return f"trial {trial.number}  {outcome}  {measured}  {values}" + ("  (best so far)" if best else "")


def try_command(name: str, values: dict) -> str:
    """The `dvc exp run` line that trains the pipeline with `values`, ready to paste into a shell."""
    return "dvc exp run " + " ".join(
        f"-S {shlex.quote(f'models.{name}.{key}={text(value)}')}" for key, value in values.items()
    )
