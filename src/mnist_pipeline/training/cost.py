"""What a training cost, beside the model it made: models/<model>/train_cost.json holds the fit's wall
time, CPU time and the process's peak memory, which ci-report sets against the base's.

In the model's folder, which DVC caches, and not in reports/ (committed, `cache: false`): DVC keeps no
run-cache entry for a stage with a `cache: false` output that is neither metrics nor plots, and the
train stage must stay restorable from the run cache (push-run-cache). Not metrics either: `dvc exp
show` would gain six columns."""

import json
import resource
from pathlib import Path

COST_FILE = "train_cost.json"
KEYS = ("fit_seconds", "fit_cpu_seconds", "fit_peak_rss_mb")


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def write_cost(model_dir: Path, cost: dict[str, float]) -> None:
    (model_dir / COST_FILE).write_text(json.dumps({key: round(cost[key], 3) for key in KEYS}, indent=2) + "\n")


def read_cost(text: str) -> dict[str, float]:
    """The three numbers from a cost file's text; missing or unreadable ones are left out."""
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return {
        key: float(found[key]) for key in KEYS if isinstance(found, dict) and isinstance(found.get(key), int | float)
    }
