"""Per-epoch metrics sent to the tracking store by a thread of their own, so that a store that stops
answering never holds up training: what cannot be sent is kept, in order, and sent when the store
answers again; what never got through is there to report at the end.

Not MLflow's own asynchronous logging (`log_batch(synchronous=False)`): its queue has no bound and a
batch that fails is dropped (mlflow/utils/async_logging/async_logging_queue.py).
"""

import logging
import threading
import time
from collections import deque

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from mnist_pipeline.tracking.store import store_error

log = logging.getLogger(__name__)

RETRY_S = 2.0  # between tries while the store does not answer
CAPACITY = 10_000  # steps kept unsent at most, the oldest dropped first: check_params caps epochs at 10,000
BATCH = 1000  # metrics in one request at most (MLflow's limit for log_batch): a backlog goes in a few
CLOSE_S = 60.0  # for the last tries; each request waits at most 10 s under tracking.fail_fast


class MetricSender:
    """`put` queues a step's metrics and returns at once; a thread sends them in order (a backlog
    several steps a request) and retries every `retry_s` while the store does not answer. Leaving
    the `with` block sends what is left unless the store fails again; `unsent` then names the steps
    not logged."""

    def __init__(self, uri: str, run_id: str, retry_s: float = RETRY_S, capacity: int = CAPACITY):
        self.uri, self.run_id, self.retry_s = uri, run_id, retry_s
        self.client = MlflowClient(uri)
        self.pending: deque[tuple[int, list[Metric]]] = deque(maxlen=capacity)
        self.dropped: list[int] = []
        self.lock = threading.Condition()
        self.closing = False
        self.down_from: int | None = None  # the first step the store did not take, while it has not caught up
        self.thread = threading.Thread(target=self._send, name="mlflow-epoch-metrics", daemon=True)

    def __enter__(self) -> "MetricSender":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        with self.lock:
            self.closing = True
            self.lock.notify()
        self.thread.join(CLOSE_S)  # a thread still waiting then is a daemon: it ends with the process

    def put(self, step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)  # when it was measured, whenever it is sent
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        with self.lock:
            if len(self.pending) == self.pending.maxlen:
                self.dropped.append(self.pending[0][0])
            self.pending.append((step, batch))
            self.lock.notify()

    @property
    def unsent(self) -> list[int]:
        """The steps whose metrics are not in the store, in order."""
        with self.lock:
            return self.dropped + [step for step, _ in self.pending]

    def _send(self) -> None:
        while True:
            with self.lock:
                while not self.pending and not self.closing:
                    self.lock.wait()
                if not self.pending:
                    return
                steps: list[int] = []
                batch: list[Metric] = []
                for step, metrics in self.pending:
                    if batch and len(batch) + len(metrics) > BATCH:
                        break
                    steps.append(step)
                    batch += metrics
            try:  # outside the lock: `put` must never wait on the store
                self.client.log_batch(self.run_id, metrics=batch, synchronous=True)
            except Exception as exc:  # noqa: BLE001 - whatever the store's client raises, the steps are kept for the next try
                with self.lock:
                    if self.down_from is None:
                        self.down_from = steps[0]
                        log.warning(
                            "the tracking store %s did not answer at epoch %d (%s); training goes on and "
                            "keeps the metrics to send when it answers",
                            self.uri,
                            steps[0],
                            store_error(exc),
                        )
                    if self.closing:
                        return
                    self.lock.wait(self.retry_s)  # the end of training wakes it for a last try
                continue
            with self.lock:
                while self.pending and self.pending[0][0] in steps:  # not those `put` dropped meanwhile
                    self.pending.popleft()
                if self.down_from is not None and not self.pending:
                    log.info(
                        "the tracking store %s answers again: the metrics of %s were sent late",
                        self.uri,
                        epochs(range(self.down_from, steps[-1] + 1)),
                    )
                    self.down_from = None


def epochs(steps) -> str:
    """`epoch 5`, `epochs 5–40`, or `3 epochs from 2 to 9` when some between are missing."""
    steps = list(steps)
    if len(steps) == 1:
        return f"epoch {steps[0]}"
    if steps == list(range(steps[0], steps[-1] + 1)):
        return f"epochs {steps[0]}–{steps[-1]}"
    return f"{len(steps)} epochs from {steps[0]} to {steps[-1]}"
