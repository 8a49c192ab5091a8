"""The tune command's work: an Optuna study over tune.yaml's `tune:` space whose every trial is a training
run of the train stage's code (the same builder, fit loop and per-epoch logging), logged as an MLflow
child run under one parent run per study; then the best values printed, or written into params.yaml.

Trials see the train and validation splits only: the objective is a validation score, and the test
set, which would leak into the choice, is never loaded."""

import contextlib
import io
import logging
import math
import os
import shlex
import sys
import warnings
from pathlib import Path

import keras
import mlflow
import optuna
from mlflow.entities import Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState
from tqdm import tqdm

from mnist_pipeline.core.errors import PipelineError, first_line
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import Params
from mnist_pipeline.data.splits import load_split
from mnist_pipeline.tracking.liveness import active_run
from mnist_pipeline.tracking.runs import log_metrics, log_training_inputs, run_tags
from mnist_pipeline.tracking.store import tracking_uri, use_experiment
from mnist_pipeline.training.fit_loop import EpochMetrics, StopOnDivergence, StopOnSignal, fit, seed_everything
from mnist_pipeline.training.metric_sender import MetricSender, epochs
from mnist_pipeline.training.models import build, compute_dtype
from mnist_pipeline.tuning import optuna_study
from mnist_pipeline.tuning.params_edit import apply_values
from mnist_pipeline.tuning.schema import TuneParams

log = logging.getLogger(__name__)

BEST_TAG = "tune.best"  # on the run of the study's best trial; moved when a better one finishes


class ReportToTrial(keras.callbacks.Callback):
    """Hands the trial its objective after each epoch (step = epoch, from 1) and stops the fit at the
    end of an epoch the pruner finds hopeless. (optuna-integration's KerasPruningCallback, in a few
    lines: that package is not a dependency.)"""

    def __init__(self, trial: optuna.Trial, objective: str):
        super().__init__()
        self.trial, self.objective, self.pruned_at = trial, objective, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.objective)
        if value is None or not math.isfinite(value):
            return  # a NaN loss stops the fit itself (StopOnDivergence)
        self.trial.report(float(value), epoch + 1)
        if epoch + 1 < self.params["epochs"] and self.trial.should_prune():  # after the last epoch: nothing to save
            self.pruned_at = epoch + 1
            self.model.stop_training = True


def tune(
    name: str,
    params: Params,
    tuning: TuneParams,
    layout: Layout,
    params_file: Path,
    trials: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    apply: bool = False,
) -> None:
    """Run the study `study_name` (default: the model's name) until it has `trials` finished trials
    (default: tune.<name>.trials), with any other workers on the same storage; print its best values,
    or write them into `params_file` with `apply`."""
    target = tuning.trials if trials is None else trials
    url = storage or optuna_study.default_storage(layout.root)
    study_name = study_name or name
    train_set = load_split(layout.processed, "train")
    validation = load_split(layout.processed, "validation")

    optuna_study.quiet_optuna()
    os.environ.pop("MLFLOW_RUN_ID", None)  # trials open runs of their own, never resume one named from outside
    study_storage = optuna_study.open_storage(url)
    experiment_id = use_experiment(params.mlflow.experiment, layout.root)
    client = MlflowClient()
    study, _ = optuna_study.open_study(
        study_storage,
        study_name,
        tuning,
        optuna_study.definition(name, params, tuning),
        lambda: create_parent(client, experiment_id, study_name, url, name, params, tuning),
    )
    parent_id = study.user_attrs[optuna_study.PARENT_ATTR]
    try:
        parent = client.get_run(parent_id)
    except MlflowException:
        raise PipelineError(
            f"study {study_name!r} logs under MLflow run {parent_id}, which {mlflow.get_tracking_uri()} "
            f"does not hold: every worker of a study must log to the same tracking store "
            f"(MLFLOW_TRACKING_URI)"
        ) from None

    ran = 0
    if optuna_study.finished(study) < target:
        if parent.info.status != "RUNNING":  # a finished study that asks for more trials
            client.update_run(parent_id, status="RUNNING")
        client.set_tag(parent_id, "tune.trials", str(target))
        worker = Worker(name, params, tuning, layout, study, parent_id, train_set, validation, target)
        ran = worker.run()
    update_parent_run(client, study, parent_id, tuning, target)
    best, changed = best_trial(study), None
    if apply:
        if best is None:
            raise PipelineError(
                f"study {study_name!r} has no complete trial, so nothing to apply; run trials first (--trials N)"
            )
        changed = apply_values(params_file, name, best.user_attrs.get(optuna_study.VALUES_ATTR, best.params))
    print(closing_lines(name, study, tuning, url, ran, target, params_file, changed))


class Worker:
    """This process's share of the study: one trial after another until the study has its number."""

    def __init__(
        self,
        name: str,
        params: Params,
        tuning: TuneParams,
        layout: Layout,
        study: optuna.Study,
        parent_id: str,
        train_set,
        validation,
        target: int,
    ):
        self.name, self.params, self.tuning, self.layout = name, params, tuning, layout
        self.study, self.parent_id, self.target = study, parent_id, target
        self.train_set, self.validation = train_set, validation
        self.uri = tracking_uri(layout.root)
        # Every trial builds a model of its own, so Keras traces its step functions again, as it should;
        # TensorFlow's warning about retracing says nothing else.
        logging.getLogger("tensorflow").addFilter(
            lambda record: "triggered tf.function retracing" not in record.getMessage()
        )
        self.current: int | None = None  # the number of the trial training now
        self.ran = 0  # trials this worker finished
        self.bar = tqdm(
            total=target,
            initial=min(optuna_study.finished(study), target),
            unit="trial",
            file=sys.stderr,
            disable=not sys.stderr.isatty(),
            dynamic_ncols=True,
            leave=False,
        )

    def run(self) -> int:
        """Train trials until the study has its number; return how many this worker finished."""
        try:
            optuna_study.run_trials(self.study, self.target, self.objective, self.finished)
            return self.ran
        except KeyboardInterrupt as exc:
            if self.current is None:
                raise
            # Optuna has marked the trial FAIL, and active_run its MLflow run KILLED, on the way out.
            raise type(exc)(
                f"trial {self.current} of study {self.study.study_name!r} is marked failed and its "
                f"MLflow run KILLED; the study's other workers carry on, and running the command "
                f"again continues it"
            ) from None
        finally:
            self.bar.close()

    def objective(self, trial: optuna.Trial) -> float:
        optuna_study.check_surplus(self.study, trial, self.target)
        self.current = trial.number
        model = self.params.model(self.name)
        values = optuna_study.draw(trial, self.tuning, model)
        trial.set_user_attr(optuna_study.VALUES_ATTR, values)
        trial_model = optuna_study.trial_model(model, values, self.tuning)
        trial_params = self.params.model_copy(update={"models": self.params.models | {self.name: trial_model}})
        self.bar.set_postfix_str(f"trial {trial.number}: {optuna_study.values_text(values)}")

        keras.backend.clear_session()  # each trial's model is built as in a fresh process: same params, same weights
        seed_everything(trial_model.seed)
        dtype = compute_dtype(trial_model)
        model_net = build(trial_model, math.ceil(len(self.train_set[1]) / trial_model.batch_size), dtype)
        tags = run_tags(self.name, self.layout.root) | {
            "tune.study": self.study.study_name,
            "tune.trial": str(trial.number),
        }
        pruned = None
        with active_run(
            run_name=f"{self.study.study_name}-trial-{trial.number}", tags=tags, parent_run_id=self.parent_id
        ) as run:
            run_id = run.info.run_id
            trial.set_user_attr(optuna_study.RUN_ATTR, run_id)
            log_training_inputs(self.name, trial_params, dtype, self.layout.processed, self.train_set, self.validation)
            sender, stop_on_signal = MetricSender(self.uri, run_id), StopOnSignal()
            report = ReportToTrial(trial, self.tuning.objective)
            # Keras's line per epoch, for every trial, would bury the line per trial: the epochs are in MLflow.
            with sender, stop_on_signal, contextlib.redirect_stdout(io.StringIO()):
                try:
                    fitted = fit(
                        model_net,
                        trial_model,
                        self.train_set,
                        self.validation,
                        callbacks=[
                            stop_on_signal,
                            StopOnDivergence(self.name, trial_model),
                            EpochMetrics(sender),
                            report,
                        ],
                    )
                except PipelineError as exc:  # StopOnDivergence: hopeless values, which the search should learn
                    pruned = first_line(exc).split(";")[0].removeprefix(f"{self.name} ")
            if sender.unsent:
                raise PipelineError(
                    f"the tracking store {self.uri} did not take the metrics of {epochs(sender.unsent)} "
                    f"of trial {trial.number} (run {run_id}); fix the store and run the command again"
                )
            if pruned is None and report.pruned_at is not None:
                pruned = f"at epoch {report.pruned_at}"
            if pruned is None:
                kept = fitted.curves.iloc[fitted.kept_epoch - 1]
                value = float(kept[self.tuning.objective])
                log_metrics(
                    run_id,
                    {
                        "epochs_trained": len(fitted.curves),
                        "best_epoch": fitted.kept_epoch,
                        f"trial_{self.tuning.objective}": value,
                    },
                )
            mlflow.set_tags(
                {"tune.state": "pruned" if pruned else "complete"} | ({"tune.pruned": pruned} if pruned else {})
            )
        self.current = None
        if pruned:
            trial.set_user_attr(optuna_study.PRUNED_ATTR, pruned)
            raise optuna.TrialPruned(pruned)  # after the run ended: FINISHED, tagged, not FAILED
        return value

    def finished(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """After each trial this worker ran: its line, the best run's tag, the bar."""
        if trial.user_attrs.get(optuna_study.SURPLUS_ATTR):
            return
        self.ran += 1
        best = best_trial(study)
        is_best = best is not None and best.number == trial.number
        tqdm.write(optuna_study.trial_line(trial, self.tuning.objective, is_best), file=sys.stdout)
        sys.stdout.flush()
        if is_best and best is not None:
            mark_best(MlflowClient(), self.parent_id, best, self.tuning.objective)
        self.bar.n = min(optuna_study.finished(study), self.target)
        self.bar.refresh()


def create_parent(
    client: MlflowClient, experiment_id: str, study_name: str, url: str, name: str, params: Params, tuning: TuneParams
) -> str:
    """The study's MLflow run: the search as params, the study and its storage (no password) as tags.
    It holds no process tags: it outlives any one worker. Stays RUNNING until the study has its trials."""
    run = client.create_run(
        experiment_id,
        run_name=f"tune-{study_name}",
        tags={
            "tune.study": study_name,
            "tune.storage": optuna_study.shown(url),
            "tune.model": name,
            "tune.objective": tuning.objective,
        },
    )
    shown = {
        "model": name,
        "objective": tuning.objective,
        "direction": optuna_study.direction(tuning),
        "pruner": tuning.pruner,
        "startup_trials": tuning.startup_trials,
        "warmup_epochs": tuning.warmup_epochs,
        "epochs": tuning.epochs or params.model(name).epochs,
        "sampler": "TPE",
        "seed": tuning.seed,
    }
    for key, space in tuning.space.items():
        shown[f"space.{key}"] = describe(space)
    client.log_batch(run.info.run_id, params=[Param(key, str(value)) for key, value in shown.items()])
    return run.info.run_id


def describe(space) -> str:
    """A space as a param: `0.0003..0.01 log`, `0..0.5`, `[[256], [512, 512]]`."""
    if space.choices is not None:
        return str(space.choices)
    return (
        f"{space.low:g}..{space.high:g}"
        + (" log" if space.log else "")
        + (f" step {space.step:g}" if space.step else "")
    )


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def mark_best(client: MlflowClient, parent_id: str, best: optuna.trial.FrozenTrial, objective: str) -> None:
    """Tag the best trial's run, untag the one before, and record the best on the parent. Workers do
    it as their trials finish; the last one to summarize the study leaves it right."""
    run_id = best.user_attrs.get(optuna_study.RUN_ATTR)
    before = client.get_run(parent_id).data.tags.get("tune.best_run_id")
    if run_id and before != run_id:
        client.set_tag(run_id, BEST_TAG, "true")
        if before:
            with contextlib.suppress(MlflowException):  # a tag already gone
                client.delete_tag(before, BEST_TAG)
    values = best.user_attrs.get(optuna_study.VALUES_ATTR, best.params)
    tags = {"tune.best_trial": str(best.number), "tune.best_run_id": run_id or ""}
    tags |= {f"best.{key}": optuna_study.text(value) for key, value in values.items()}
    for key, value in tags.items():
        client.set_tag(parent_id, key, value)
    assert best.value is not None  # the study's best trial is a complete one
    log_metrics(parent_id, {f"best_{objective}": best.value}, step=best.number)


def update_parent_run(
    client: MlflowClient, study: optuna.Study, parent_id: str, tuning: TuneParams, target: int
) -> None:
    """The parent run as the study stands: the best trial, the counts, Optuna's optimisation history
    and parameter importances as images; FINISHED once the study has its trials and none is training."""
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    best = best_trial(study)
    if best is not None:
        mark_best(client, parent_id, best, tuning.objective)
    log_metrics(
        parent_id,
        {
            "trials_complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "trials_pruned": sum(t.state == TrialState.PRUNED for t in trials),
        },
    )
    import matplotlib

    matplotlib.use("Agg")  # files only, no display (as figures.py)
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    for artifact, plot in (
        ("optimization_history.png", optuna.visualization.matplotlib.plot_optimization_history),
        ("param_importances.png", optuna.visualization.matplotlib.plot_param_importances),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                axes = plot(study, target_name=tuning.objective)
            except (ValueError, RuntimeError) as exc:  # e.g. no complete trial yet
                log.info("no %s yet: %s", artifact, first_line(exc))
                continue
        # Optuna marks its matplotlib plots experimental: that warning says nothing to the user. Any
        # other (too few trials to rank the params) means the plot would say nothing either.
        doubts = [w for w in caught if not issubclass(w.category, ExperimentalWarning)]
        assert isinstance(axes.figure, Figure)  # Optuna draws each plot on a figure of its own
        if doubts:
            log.info("no %s yet: %s", artifact, doubts[0].message)
        else:
            axes.figure.tight_layout()
            client.log_figure(parent_id, axes.figure, artifact)
        plt.close(axes.figure)
    running = any(t.state == TrialState.RUNNING for t in trials)
    if len(finished) >= target and not running:
        client.set_terminated(parent_id, RunStatus.to_string(RunStatus.FINISHED))


def closing_lines(
    name: str,
    study: optuna.Study,
    tuning: TuneParams,
    url: str,
    ran: int,
    target: int,
    params_file: Path,
    changed: dict | None,
) -> str:
    """The lines a worker ends with: the study's state, its best trial, and the params.yaml change
    (`changed` by --apply: {key: (old, new)}; None: the commands that would make or try it)."""
    trials = study.get_trials(deepcopy=False)
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    of = f" of {target}" if target else ""
    lines = [
        f"study {study.study_name!r} in {optuna_study.shown(url)}: {complete + pruned}{of} trials finished "
        f"({complete} complete, {pruned} pruned); this worker ran {ran}"
    ]
    best = best_trial(study)
    if best is None:
        return "\n".join([*lines, "no complete trial yet"])
    values = best.user_attrs.get(optuna_study.VALUES_ATTR, best.params)
    lines.append(
        f"best: trial {best.number}, {tuning.objective} {best.value:.4f} "
        f"(MLflow run {best.user_attrs.get(optuna_study.RUN_ATTR, '-')})"
    )
    lines += [f"  {key}: {optuna_study.text(value)}" for key, value in values.items()]
    if changed:
        lines.append(
            f"{params_file}: "
            + ", ".join(
                f"models.{name}.{key} {optuna_study.text(old)} -> {optuna_study.text(new)}"
                for key, (old, new) in changed.items()
            )
        )
        lines.append(f"`dvc repro` now retrains {name} with them")
    elif changed is not None:
        lines.append(f"{params_file} already holds them")
    else:
        lines.append(f"try them: {optuna_study.try_command(name, values)}")
        command = ["python -m mnist_pipeline"]
        if str(params_file) != "params.yaml":
            command.append(f"--params {shlex.quote(str(params_file))}")
        command += ["tune", name]
        if url != optuna_study.default_storage(Path(params_file).resolve().parent):
            command.append(f"--storage {shlex.quote(optuna_study.shown(url))}")
        if study.study_name != name:
            command.append(f"--study {shlex.quote(study.study_name)}")
        lines.append(f"or write them into {params_file}: {' '.join(command)} --trials 0 --apply")
    return "\n".join(lines)
