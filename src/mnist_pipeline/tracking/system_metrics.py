"""MLflow's system metrics (`system/cpu_utilization_percentage`, `system/system_memory_usage_megabytes`,
disk and network; the GPU's when nvidia-ml-py finds one) for every run the pipeline opens, so a
reviewer sees what a change costs beside what it scores.

MLflow's own samplers, our thread: `start_run(log_system_metrics=True)` would ask the store for the
run at every sample, retry a store that is down for minutes, and stop only if the run ends cleanly
(mlflow/system_metrics/system_metrics_monitor.py, mlflow/tracking/fluent.py). Here a point that the
store does not take is dropped, never waited for, and `stop()` (active_run calls it before it ends
the run, however it ends) sends the last one and waits a bounded time: the stage never waits on it.
MLflow's variables still set the pace: MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL,
MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING; MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false turns it off.
"""

import logging
import os
import threading
import time

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.errors import first_line

log = logging.getLogger(__name__)

# A sample a second, averaged into a point every 5 s: a run of seconds still gets a point (the last,
# partial one, sent at stop) and a 10-minute fit 120, a few hundred bytes each.
SAMPLE_S = 1.0
SAMPLES = 5
STOP_S = 5.0  # the last point's request at most; a store that takes longer loses it
PREFIX = "system/"


class SystemMetrics:
    """Samples from a daemon thread until stop(); `resumed`: the run has points already (evaluate
    logs into its training run), so the steps go on after them."""

    def __init__(self, run_id: str, resumed: bool = False):
        self.run_id, self.stopped, self.thread = run_id, threading.Event(), None
        if os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "").lower() in ("false", "0"):
            return
        import psutil
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        uri = mlflow.get_tracking_uri()
        quiet = logging.getLogger("mlflow.system_metrics.system_metrics_monitor")
        level = quiet.level
        quiet.setLevel(logging.WARNING)  # not "Skip logging GPU metrics" in every stage's log on a CPU
        try:
            self.monitor = SystemMetricsMonitor(run_id, SAMPLE_S, SAMPLES, resume_logging=resumed, tracking_uri=uri)
        finally:
            quiet.setLevel(level)
        self.step = self.monitor._logging_step  # MLflow's resume: one after the run's last system point
        self.client = MlflowClient(uri)
        psutil.cpu_percent()  # its first reading is since this call, not since boot
        self.thread = threading.Thread(target=self._sample, name="mlflow-system-metrics", daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        taken = 0
        while not self.stopped.wait(self.monitor.sampling_interval):
            self.monitor.collect_metrics()
            taken += 1
            if taken == self.monitor.samples_before_logging:
                self._send()
                taken = 0
        if taken:
            self._send()

    def _send(self) -> None:
        now = int(time.time() * 1000)
        metrics = self.monitor.aggregate_metrics()
        for monitor in self.monitor.monitors:
            monitor.clear_metrics()
        batch = [Metric(PREFIX + key, float(value), now, self.step) for key, value in metrics.items()]
        self.step += 1
        try:
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)
        except Exception as exc:  # noqa: BLE001 - a point is worth no wait: the run's own logging reports the store
            log.debug("system metrics of run %s not logged: %s", self.run_id, first_line(exc))

    def stop(self) -> None:
        """Send the last point and end the thread, waiting at most STOP_S; idempotent."""
        self.stopped.set()
        if self.thread is not None:
            self.thread.join(STOP_S)
            self.thread = None
