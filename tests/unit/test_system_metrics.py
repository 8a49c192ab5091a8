"""MLflow's system metrics in every run the pipeline opens (issue 23): a training run holds `system/…`
metrics and what its fit cost; the sampler stops with the run however it ends, and a store that
does not answer costs it points, never the stage's time."""

import json
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from mnist_pipeline.tracking import system_metrics
from mnist_pipeline.tracking.liveness import active_run
from mnist_pipeline.tracking.store import use_experiment
from mnist_pipeline.training.cost import COST_FILE
from mnist_pipeline.training.trainer import train
from tests.support.stores import client_for
from tests.support.tiny import store_uri, tiny_layout, tiny_params

SAMPLER = "mlflow-system-metrics"


def samplers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == SAMPLER]


def test_a_training_run_holds_system_metrics_and_what_its_fit_cost(tmp_path, clean_env, monkeypatch):
    monkeypatch.setattr(system_metrics, "SAMPLE_S", 0.2)  # a tiny fit lasts a second or two
    layout = tiny_layout(tmp_path)
    run_id = train("mlp", tiny_params(epochs=3), layout)

    client = MlflowClient(store_uri(layout))
    metrics = client.get_run(run_id).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(metrics), metrics
    assert 0 <= metrics["system/cpu_utilization_percentage"] <= 100
    assert metrics["system/system_memory_usage_megabytes"] > 0
    # The fit's cost, in the run and beside the model (ci-report's cost row reads the file).
    cost = json.loads((layout.model_dir("mlp") / COST_FILE).read_text())
    assert set(cost) == {"fit_seconds", "fit_cpu_seconds", "fit_peak_rss_mb"}
    assert 100 < cost["fit_peak_rss_mb"] < 10_000  # TensorFlow alone takes hundreds of MB
    assert metrics["fit_peak_rss_mb"] == pytest.approx(cost["fit_peak_rss_mb"], abs=1e-3)
    assert not samplers(), "the sampler outlived its run"


def test_the_sampler_stops_with_a_run_that_is_interrupted(store, no_tracking_env, monkeypatch):
    monkeypatch.setattr(system_metrics, "SAMPLE_S", 0.05)
    client = client_for(store)
    use_experiment("interrupted", store)
    opened = []

    def cut_short() -> None:
        with active_run(run_name="cut", tags={"model": "mlp"}) as run:
            opened.append((run, bool(samplers())))
            time.sleep(0.6)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cut_short()
    ((run, sampling),) = opened
    assert sampling and not samplers()
    ended = client.get_run(run.info.run_id)
    assert ended.info.status == "KILLED"
    # Every point went in before the run ended: none after its end time.
    history = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    assert history and max(m.timestamp for m in history) <= ended.info.end_time


def test_a_store_that_does_not_answer_costs_points_not_time(store, no_tracking_env, monkeypatch):
    """The sampler's requests fail (the store is gone): the run's block is not held up and nothing is raised."""
    monkeypatch.setattr(system_metrics, "SAMPLE_S", 0.05)
    client_for(store)
    use_experiment("outage", store)
    sampler = system_metrics.SystemMetrics("no-such-run")  # every log_batch fails: the run is not in the store
    time.sleep(0.5)
    started = time.monotonic()
    sampler.stop()
    assert time.monotonic() - started < 2 and not samplers()


def test_system_metrics_can_be_turned_off_as_mlflow_says(store, no_tracking_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    client = client_for(store)
    use_experiment("off", store)
    with active_run(run_name="quiet", tags={"model": "mlp"}) as run:
        assert not samplers()
    assert not [key for key in client.get_run(run.info.run_id).data.metrics if key.startswith("system/")]
