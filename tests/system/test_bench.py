"""The benchmark runner, end to end on its tiny configuration: it must run and report every target.
The figures it measures here mean nothing; `python -m bench.run` is run on demand, not by the tests."""

import json
import subprocess
import sys
import time

import pytest

from tests.support.harness import REPO


@pytest.mark.e2e
def test_quick_benchmark_reports_every_target(mnist_dir, tmp_path):
    out = tmp_path / "RESULTS.md"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--mnist", str(mnist_dir), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]

    results = json.loads((tmp_path / "results.json").read_text())
    mlp = results["full"]["models"]["mlp"]
    assert 0 < mlp["test_accuracy"] <= 1 and mlp["epochs_trained"] == 1
    assert 0 < mlp["mlflow_log_s"] < mlp["fit_s"] and mlp["fit_cpu_s"] > 0
    [pair] = results["pairs"]["mlp"]
    # The samples against clocks the runner does not hold: each fit, timed inside its own process,
    # lies within the wall time the runner measured for that process; every command it timed lies
    # within the time this test measured around the whole run.
    assert 0 < pair["stage_fit_s"] < pair["stage_wall_s"] and 0 < pair["bare_fit_s"] < pair["bare_wall_s"]
    assert pair["stage_epochs"] == mlp["epochs_trained"]
    timed = (
        results["full"]["dvc_repro_s"]
        + pair["stage_wall_s"]
        + pair["bare_wall_s"]
        + sum(results["noop_repro_s"])
        + sum(t for times in results["startup"].values() for t in times)
        + sum(run["wall_s"] for run in results["preprocess"])
    )
    assert timed < results["total_s"] < took
    assert all(t > 0 for t in results["noop_repro_s"] + results["logging"]["sqlite"] + results["logging"]["server"])

    report = out.read_text()
    for target in (
        "mlp test accuracy ≥ 0.986",
        "mlp train stage ≤ 1.10 × bare Keras",
        "MLflow logging ≤ 3 %",
        "no-op `dvc repro` ≤ 2 s",
        "`--help` ≤ 0.5 s",
        "peak RSS of any stage ≤ 1.5 GiB",
        "each non-training stage ≤ 6 s",
        "cores busy in fit",
        "mlp fit per epoch ≤",
        "`dvc repro` from scratch (the pipeline) ≤ 2.5 min",
    ):
        assert target in report
    assert "QUICK" in report.splitlines()[0]

    # The floor: the epoch's arithmetic (400 images, the tiny mlp) at the peak matmul rate the runner
    # measured in the fit's arithmetic, before and after the levers, and at each layer's own shape;
    # the levers' steady epochs each ran in a process the runner timed.
    floor, matmul = results["floor"], results["matmul"]
    assert floor["train"] + floor["validation"] > 0 and floor["epoch_gflop"] == pytest.approx(
        sum(floor["layers"].values())
    )
    assert matmul["dtype"] == ("bfloat16" if results["native_bfloat16"] else "float32")
    assert len(matmul["peak"]) == 2 and all(rate > 1 for rate in matmul["peak"])
    assert set(matmul["layers"]) == set(floor["layers"]) and all(len(rates) == 2 for rates in matmul["layers"].values())
    limit = "3 × the compute floor (AMX)" if matmul["amx"] else "1.5 × the compute floor (no AMX)"
    assert f"mlp fit per epoch ≤ {limit}" in report
    assert set(results["levers"]) == {
        "before issue 25: batch 256, 16 steps per execution",
        "the train stage now: params.yaml, 16 steps per execution",
    }
    for [lever] in results["levers"].values():
        assert len(lever["epoch_s"]) == 1 and 0 < lever["epoch_s"][0] < results["total_s"]
    levers = report[report.index("## Speed levers") :]
    assert "| before issue 25: batch 256, 16 steps per execution |" in levers
    # The report shows the recorded samples: the pair's stage and bare wall times, and their ratio.
    pairs = report[report.index("## Train stage vs a bare Keras script") :]
    row = next(line for line in pairs.splitlines() if line.startswith("| mlp |"))
    stage_s, bare_s, ratio = (float(cell.split()[0]) for cell in row.split("|")[2:5])
    assert stage_s == pytest.approx(pair["stage_wall_s"], abs=0.05)
    assert bare_s == pytest.approx(pair["bare_wall_s"], abs=0.05)
    assert ratio == pytest.approx(pair["stage_wall_s"] / pair["bare_wall_s"], abs=5e-4)


def test_quick_robustness_benchmark_reads_photos_through_predict(trained_repo, tmp_path):
    """`python -m bench.robustness --quick` on the small trained repository: every photo condition
    measured for both models through predict's code, the targets table, the contact sheet."""
    from PIL import Image

    from bench.photos import CONDITIONS

    out = tmp_path / "ROBUSTNESS.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench.robustness", "--quick", "--root", str(trained_repo), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]

    results = json.loads((tmp_path / "robustness.json").read_text())
    assert results["sample"] == 40 and set(results["mnist"]) == {"mlp", "logistic"}
    assert set(results["conditions"]) == set(CONDITIONS)
    for condition in results["conditions"].values():
        assert all(0 <= condition[model] <= 1 for model in ("mlp", "logistic"))
        assert all(0 < t < 1 for t in condition["preprocess_s_per_image"])
    # The models measured are the repository's: on MNIST's test arrays they score what its evaluate stage wrote.
    for model in ("mlp", "logistic"):
        evaluated = json.loads((trained_repo / "reports" / "eval" / model / "metrics.json").read_text())[model]
        assert results["mnist"][model]["test_accuracy"] == pytest.approx(evaluated["accuracy"], abs=1e-4)

    report = out.read_text()
    assert "QUICK" in report.splitlines()[0]
    assert "| mlp ≥ 0.97 on every photo condition |" in report
    assert all(f"| {condition} |" in report for condition in CONDITIONS)
    with Image.open(tmp_path / "robustness-conditions.png") as sheet:
        assert sheet.width > len(CONDITIONS) * 128
