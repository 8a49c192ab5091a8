"""Benchmark the pipeline against the targets of issue 5 and write bench/RESULTS.md (+ results.json).

Everything runs in a temporary copy of the repository, never in your workspace:

    python -m bench.run                 # the default models, full data; ~15 min on 2 cores
    python -m bench.run --quick         # a tiny configuration in a minute: checks the runner works

Timings on a shared machine are noisy, so the pipeline's train stage is compared with a bare
Keras script pair by pair (alternating which goes first), and every figure is a median with its
min-max spread. Accuracy does not depend on load: the same params give the same metrics.
"""

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import yaml

from mnist_pipeline.core.layout import Layout
from tests.support.harness import (
    REPO,
    make_repo,
    repo_env,
    shipped_params,
    small_params,
    store_uri,
    tracking_server,
    write_params,
)

PYTHON = sys.executable
GIB = 1024**3


# --- running and measuring commands ---------------------------------------------------------
def measure(cmd: list[str], repo: Path, **env: str) -> dict:
    """Run `cmd` in `repo` as a user would (`env`: extra variables); its wall time, CPU time and peak
    RSS (its own and its children's)."""
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=repo, env=repo_env(repo, TF_CPP_MIN_LOG_LEVEL="3", **env), stdout=log, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of this one child, unlike RUSAGE_CHILDREN
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read().decode(errors="replace")
    if proc.returncode:
        sys.exit(f"bench: `{' '.join(cmd)}` exited {proc.returncode}:\n{output[-4000:]}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "output": output,
    }


def bench_params(quick: bool) -> dict:
    """The shipped params.yaml; --quick cuts it to the tests' small mlp: 400 images, one epoch."""
    if not quick:
        return shipped_params()
    params = small_params()
    params["models"] = {"mlp": params["models"]["mlp"]}
    return params


def run_metrics(repo: Path, model: str) -> dict:
    """The metrics the train stage logged to MLflow for the run in the model's folder."""
    return model_run(repo, model).data.metrics


def model_run(repo: Path, model: str):
    from mlflow.tracking import MlflowClient

    from mnist_pipeline.tracking.run_file import read_run_id

    run_id = read_run_id(Layout(repo).model_dir(model))
    assert run_id, f"no run file for {model}: the pipeline ran before this"
    return MlflowClient(store_uri(repo)).get_run(run_id)


# --- the measurements -----------------------------------------------------------------------
STARTUP = {
    "cli_help": [PYTHON, "-m", "mnist_pipeline", "--help"],
    "dvc_version": ["dvc", "--version"],
    "import_tensorflow": [PYTHON, "-c", "import tensorflow"],
    "import_mlflow": [PYTHON, "-c", "import mlflow"],
}


def startup(repo: Path, repeats: int, quick: bool) -> dict:
    commands = dict(list(STARTUP.items())[:2]) if quick else STARTUP  # the imports only for context
    return {name: [measure(cmd, repo)["wall_s"] for _ in range(repeats)] for name, cmd in commands.items()}


def full_pipeline(repo: Path, models: list[str]) -> dict:
    """`dvc repro` from scratch, then each model's test accuracy, epochs and fit figures as logged to MLflow."""
    run = measure(["dvc", "repro"], repo)
    result = {"dvc_repro_s": run["wall_s"], "dvc_repro_peak_rss_bytes": run["peak_rss_bytes"], "models": {}}
    for model in models:
        logged = run_metrics(repo, model)
        result["models"][model] = {
            "test_accuracy": logged["test_accuracy"],
            "test_macro_f1": logged["test_macro_f1"],
            "epochs_trained": int(logged["epochs_trained"]),
            "fit_s": logged["fit_seconds"],
            "fit_cpu_s": logged["fit_cpu_seconds"],
            "mlflow_log_s": logged["mlflow_log_seconds"],
        }
    return result


def noop_repro(repo: Path, repeats: int) -> list[float]:
    runs = [measure(["dvc", "repro"], repo) for _ in range(repeats)]
    assert all("Running stage" not in run["output"] for run in runs), "a no-op `dvc repro` ran a stage"
    return [run["wall_s"] for run in runs]


def stage_runs(repo: Path, cmd: list[str], repeats: int) -> list[dict]:
    runs = [measure([PYTHON, "-m", "mnist_pipeline", *cmd], repo) for _ in range(repeats)]
    return [{k: v for k, v in run.items() if k != "output"} for run in runs]


def train_pairs(repo: Path, model: str, epochs: int, repeats: int) -> list[dict]:
    """The train stage and the bare Keras script, same model and epochs, alternating which goes first."""
    stage = [PYTHON, "-m", "mnist_pipeline", "train", model]
    bare = [
        PYTHON,
        str(REPO / "bench" / "bare_keras.py"),
        model,
        "--epochs",
        str(epochs),
        "--root",
        str(repo),
        "--data",
        str(Layout(repo).processed),
    ]
    pairs = []
    for i in range(repeats):
        runs = {}
        for name in ("stage", "bare") if i % 2 == 0 else ("bare", "stage"):
            runs[name] = measure(stage if name == "stage" else bare, repo)
        logged = run_metrics(repo, model)
        bare_fit = json.loads(runs["bare"]["output"].strip().splitlines()[-1])
        pairs.append(
            {
                "stage_wall_s": runs["stage"]["wall_s"],
                "bare_wall_s": runs["bare"]["wall_s"],
                "ratio": runs["stage"]["wall_s"] / runs["bare"]["wall_s"],
                "stage_fit_s": logged["fit_seconds"],
                "stage_fit_cpu_s": logged["fit_cpu_seconds"],
                "stage_mlflow_log_s": logged["mlflow_log_seconds"],
                "stage_epochs": int(logged["epochs_trained"]),
                "bare_fit_s": bare_fit["fit_seconds"],
                "bare_fit_cpu_s": bare_fit["fit_cpu_seconds"],
                "stage_peak_rss_bytes": runs["stage"]["peak_rss_bytes"],
                "bare_peak_rss_bytes": runs["bare"]["peak_rss_bytes"],
            }
        )
    return pairs


def logging_costs(repo: Path, epochs: int, calls: int) -> dict:
    """Seconds per epoch-metrics call (the train stage's own function) against SQLite and a local server."""
    import mlflow

    from mnist_pipeline.tracking.runs import log_metrics

    def per_call(uri: str) -> list[float]:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("bench-logging")
        with mlflow.start_run() as run:
            times = []
            for step in range(1, calls + 1):
                started = time.perf_counter()
                log_metrics(
                    run.info.run_id, {"loss": 0.1, "accuracy": 0.9, "val_loss": 0.1, "val_accuracy": 0.9}, step=step
                )
                times.append(time.perf_counter() - started)
        return times

    result = {"sqlite": per_call(f"sqlite:///{repo / 'logging-bench.db'}")}
    with tracking_server(
        repo, f"sqlite:///{repo / 'server.db'}", str(repo / "server-artifacts"), "--workers", "1", env=repo_env(repo)
    ) as uri:
        result["server"] = per_call(uri)
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None: back to the default; MLflow's annotation omits it
    return result | {"epochs": epochs}


PEAK_SHAPE = (2048, 2048, 2048)  # big enough for the matrix units to reach their peak


def amx() -> bool:
    """Whether this CPU has AMX tiles for bfloat16 (Intel Sapphire Rapids on): there the peak is
    several times the vector units', and the per-step work around a small matmul weighs the more."""
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    return "amx_bf16" in flags.split()


def matmul_rates(dtype: str, shapes: list[tuple[int, int, int]], seconds: float) -> dict[str, float]:
    """TensorFlow's matrix-multiply rate now (GFLOP/s, all cores) in `dtype`, the arithmetic the fit
    uses (oneDNN, on AMX where the CPU has it), at each (m, k, n) shape: at PEAK_SHAPE the machine's
    peak, the yardstick of the compute floor; at a layer's shape, what that layer can get."""
    from mnist_pipeline.training.quiet_tf import import_tensorflow

    tf = import_tensorflow()  # without TensorFlow's start-up lines in the runner's output

    rates = {}
    for m, k, n in shapes:
        a, b = (tf.cast(tf.random.stateless_normal(shape, seed=(0, 0)), dtype) for shape in ((m, k), (k, n)))
        matmul = tf.function(tf.linalg.matmul)
        matmul(a, b).numpy()  # trace, and warm the library and its threads
        reps, started = 0, time.perf_counter()
        while reps < 3 or time.perf_counter() - started < seconds:
            matmul(a, b).numpy()
            reps += 1
        rates[f"{m}x{k}x{n}"] = 2 * m * k * n * reps / (time.perf_counter() - started) / 1e9
    return rates


def layer_shapes(params: dict) -> list[tuple[int, int, int]]:
    """(batch, inputs, units) of each dense layer: the shapes of the fit's forward matmuls."""
    units = [28 * 28, *params.get("hidden_units", []), 10]
    return [(params["batch_size"], a, b) for a, b in itertools.pairwise(units)]


def epoch_gflop(params: dict, train_images: int, validation_images: int) -> float:
    """The arithmetic of one epoch of a dense model: 2 FLOPs per multiply-add forward, 4 backward
    (the gradients of the inputs and of the weights), forward only for the validation images."""
    return sum(layer_gflop(params, train_images, validation_images))


def layer_gflop(params: dict, train_images: int, validation_images: int) -> list[float]:
    return [(6 * train_images + 2 * validation_images) * k * n / 1e9 for _, k, n in layer_shapes(params)]


def floor(repo: Path, mlp: dict) -> dict:
    """The arithmetic of one of the mlp's epochs on the split this repository trains on, layer by layer."""
    from mnist_pipeline.data.splits import load_split

    sizes = {split: len(load_split(Layout(repo).processed, split)[1]) for split in ("train", "validation")}
    layers: dict[str, float] = {}  # by shape: two layers of one shape add up
    for (m, k, n), gflop in zip(layer_shapes(mlp), layer_gflop(mlp, sizes["train"], sizes["validation"]), strict=True):
        layers[f"{m}x{k}x{n}"] = layers.get(f"{m}x{k}x{n}", 0.0) + gflop
    return {"epoch_gflop": sum(layers.values()), "layers": layers} | sizes


def measure_matmul(r: dict, mlp: dict, seconds: float) -> None:
    """Append one measurement of the peak and of the layers' rates to r["matmul"]: the bench takes
    one before the levers and one after, as the load on a shared machine moves."""
    m = r.setdefault(
        "matmul",
        {
            "dtype": "bfloat16" if r["native_bfloat16"] else "float32",
            "amx": amx(),
            "peak_shape": "x".join(map(str, PEAK_SHAPE)),
        },
    )
    rates = matmul_rates(m["dtype"], [PEAK_SHAPE, *layer_shapes(mlp)], seconds)
    m.setdefault("peak", []).append(rates.pop(m["peak_shape"]))
    for shape, rate in rates.items():
        m.setdefault("layers", {}).setdefault(shape, []).append(rate)


def float32_accuracy(repo: Path, default: dict) -> dict:
    """The default mlp trained and evaluated with `precision: float32`, beside the default (`default`:
    its figures from `dvc repro`), which computes in bfloat16: what mixed precision costs in accuracy."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["mlp"]["precision"] = "float32"
    write_params(repo, params)
    measure(["dvc", "repro", "evaluate@mlp"], repo)
    float32 = run_metrics(repo, "mlp")
    return {
        "bfloat16": {
            "test_accuracy": default["test_accuracy"],
            "fit_seconds": default["fit_s"],
            "epochs_trained": default["epochs_trained"],
        },
        "float32": {k: float32[k] for k in ("test_accuracy", "fit_seconds", "epochs_trained")},
    }


def first_run(mnist: Path | None) -> dict:
    """A user's first two commands' worth: `make setup` (a new .venv, from uv's cache when warm) and
    `make repro` (every stage), in a fresh clone of this repository's HEAD."""
    with tempfile.TemporaryDirectory(prefix="mnist-first-run-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        if mnist:  # the first source, as a user with the files at hand would set it
            config = yaml.safe_load((clone / "download.yaml").read_text())
            config["sources"].insert(0, {"kind": "local", "path": str(mnist)})
            (clone / "download.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "VIRTUAL_ENV"))}
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(REPO)))
        times = {}
        for target in ("setup", "repro"):
            started = time.perf_counter()
            done = subprocess.run(["make", target], cwd=clone, env=env, capture_output=True, text=True)
            times[f"make_{target}_s"] = time.perf_counter() - started
            if done.returncode:
                sys.exit(
                    f"bench: `make {target}` in a fresh clone exited {done.returncode}:\n{done.stdout[-3000:]}"
                    f"{done.stderr[-3000:]}"
                )
        return times


# Each setting of the speed levers, as bench/levers.py takes it, all in the fit's arithmetic (bfloat16
# where the CPU has it natively, as the train stage; float32 elsewhere) unless a lever names another.
# The first row is the mlp's default before issue 25; the last, the shipped params.yaml as it stands.
BEFORE = ["--batch-size", "256", "--steps-per-execution", "16"]
LEVERS = {
    "before issue 25: batch 256, 16 steps per execution": BEFORE,
    "float32 instead of bfloat16": [*BEFORE, "--precision", "float32"],
    "1 step per execution": ["--batch-size", "256", "--steps-per-execution", "1"],
    "64 steps per execution": ["--batch-size", "256", "--steps-per-execution", "64"],
    "a whole epoch per execution": ["--batch-size", "256", "--steps-per-execution", "0"],
    "XLA (jit_compile=True)": [*BEFORE, "--jit"],
    "threads: intra-op 2, inter-op 1": [*BEFORE, "--threads", "2,1"],
    "tf.data input pipeline": [*BEFORE, "--input", "tf.data"],
    "no dropout (what it costs)": [*BEFORE, "--dropout", "0"],
    "batch 512": ["--batch-size", "512", "--steps-per-execution", "16"],
    "batch 1024": ["--batch-size", "1024", "--steps-per-execution", "16"],
    "batch 2048": ["--batch-size", "2048", "--steps-per-execution", "16"],
    "XLA at batch 1024, a whole epoch per execution": ["--batch-size", "1024", "--steps-per-execution", "0", "--jit"],
    "the train stage now: params.yaml, 16 steps per execution": ["--steps-per-execution", "16"],
    "JAX backend (KERAS_BACKEND=jax)": [],
    "JAX backend, 16 steps per execution": ["--steps-per-execution", "16"],
}
QUICK_LEVERS = [
    "before issue 25: batch 256, 16 steps per execution",
    "the train stage now: params.yaml, 16 steps per execution",
]


def jax_installed() -> bool:
    return subprocess.run([PYTHON, "-c", "import jax"], capture_output=True).returncode == 0


def levers(repo: Path, model: str, repeats: int, quick: bool, jax: bool, bfloat16: bool) -> dict:
    """Steady seconds per epoch under each lever setting (the JAX ones with `jax` installed), in
    bfloat16 where `bfloat16` (the train stage's arithmetic here); the order of settings alternates
    per repeat."""
    names = QUICK_LEVERS if quick else [n for n in LEVERS if "JAX" not in n or jax]
    samples: dict[str, list[dict]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            cmd = [
                PYTHON,
                str(REPO / "bench" / "levers.py"),
                model,
                "--data",
                str(Layout(repo).processed),
                "--root",
                str(repo),
                "--epochs",
                "2" if quick else "4",
                "--precision",
                "bfloat16" if bfloat16 else "float32",
                *LEVERS[name],  # a lever's own --precision comes later, and wins
            ]
            run = measure(cmd, repo, KERAS_BACKEND="jax" if "JAX" in name else "tensorflow")
            samples[name].append(json.loads(run["output"].strip().splitlines()[-1]))
    return samples


# --- the report -----------------------------------------------------------------------------
def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB,
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": {p: version(p) for p in ("tensorflow", "keras", "mlflow", "dvc", "numpy")},
        "commit": git.stdout.strip(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": os.getloadavg(),
    }


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """Median and min-max of repeated measurements."""
    if len(values) == 1:
        return fmt.format(values[0]) + " (1 run)"
    return (
        f"{fmt.format(statistics.median(values))} "
        f"({fmt.format(min(values))}–{fmt.format(max(values))}, {len(values)} runs)"
    )


def fit_seconds(r: dict, name: str) -> list[float]:
    """Every fit of model `name` the train stage logged in the run: the first `dvc repro`'s, then each pair's."""
    return [r["full"]["models"][name]["fit_s"]] + [p["stage_fit_s"] for p in r["pairs"][name]]


def epoch_figures(r: dict) -> tuple[list[float], float, float]:
    """The mlp train stage's seconds per epoch (its fit over its epochs, every run), and two compute
    floors of one epoch: its arithmetic at the peak matmul rate measured in the same run, and each
    layer's arithmetic at the rate measured at that layer's own shape (batch × inputs × units)."""
    mlp = r["full"]["models"]["mlp"]
    per_epoch = [mlp["fit_s"] / mlp["epochs_trained"]] + [
        p["stage_fit_s"] / p["stage_epochs"] for p in r["pairs"]["mlp"]
    ]
    m = r["matmul"]
    at_shapes = sum(gflop / statistics.median(m["layers"][shape]) for shape, gflop in r["floor"]["layers"].items())
    return per_epoch, r["floor"]["epoch_gflop"] / statistics.median(m["peak"]), at_shapes


def floor_limit(r: dict) -> float:
    """The target for the fit per epoch, in floors: with AMX a peak the small per-step matmuls of a
    batch cannot reach (issue 25), without it one the vector units nearly reach."""
    return 3.0 if r["matmul"]["amx"] else 1.5


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def report(r: dict, quick: bool) -> str:
    m = r["machine"]
    models = r["full"]["models"]
    lines = [
        "# Benchmark results" + (" (QUICK smoke run: tiny data, not results)" if quick else ""),
        "",
        f"`python -m bench.run{' --quick' if quick else ''} --repeats {r['repeats']}` at commit `{m['commit']}`, "
        f"{m['date']}, {r['total_s'] / 60:.1f} min in all.",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']:.0f} GiB, no GPU; Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + ".",
        f"Load average (1 min) {m['load_before'][0]:.1f} at the start, {m['load_after'][0]:.1f} at the end. "
        "On a shared machine absolute times are noisy: compare ratios, which are taken pair by pair in one run, "
        "and re-run on a quiet machine for absolute figures. Accuracy does not depend on load.",
        "",
        "Each figure: median (min–max, number of runs). Every command runs in a temporary copy of the repository "
        f"(`git init`, `dvc init`, the shipped `dvc.yaml`, `params.yaml` and `src/`); MNIST came from {r['mnist']}.",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "| --- | --- | --- |",
    ]
    pairs = r["pairs"]
    fits = {name: fit_seconds(r, name) for name in models}
    for name, threshold in (("mlp", 0.986), ("logistic", 0.927)):
        if name in models:
            lines.append(
                f"| {name} test accuracy ≥ {threshold} | {models[name]['test_accuracy']:.4f} "
                f"({models[name]['epochs_trained']} epochs) | {verdict(models[name]['test_accuracy'] >= threshold)} |"
            )
    if "mlp" in fits:
        stretch = models["mlp"]["test_accuracy"] >= 0.988 and statistics.median(fits["mlp"]) <= 60
        lines.append(
            f"| stretch: mlp test accuracy ≥ 0.988 with fit ≤ 60 s | {models['mlp']['test_accuracy']:.4f}, "
            f"fit {spread(fits['mlp'], '{:.1f}')} s | {verdict(stretch)} |"
        )
    if "floor" in r:
        per_epoch, floor_s, _ = epoch_figures(r)
        ratio, limit = statistics.median(per_epoch) / floor_s, floor_limit(r)
        lines.append(
            f"| mlp fit per epoch ≤ {limit:g} × the compute floor ({'AMX' if r['matmul']['amx'] else 'no AMX'}) "
            f"| {spread(per_epoch)} s per epoch = {ratio:.2f} × the floor of {floor_s:.3g} s "
            f"({r['matmul']['dtype']} peak) | {verdict(ratio <= limit)} |"
        )
    lines.append(
        f"| `dvc repro` from scratch (the pipeline) ≤ 2.5 min | {r['full']['dvc_repro_s'] / 60:.1f} min "
        f"| {verdict(r['full']['dvc_repro_s'] <= 150)} |"
    )
    if "first_run" in r:
        first = r["first_run"]["make_setup_s"] + r["first_run"]["make_repro_s"]
        lines.append(
            f"| fresh clone: `make repro` ≤ 2.5 min in all | {first / 60:.1f} min (setup "
            f"{r['first_run']['make_setup_s']:.0f} s, pipeline {r['first_run']['make_repro_s']:.0f} s) | "
            f"{verdict(first <= 150)} |"
        )
    stage_walls = {f"`{stage}`": [x["wall_s"] for x in runs] for stage, runs in r["other_stages"].items()}
    stage_walls["`preprocess`"] = [x["wall_s"] for x in r["preprocess"]]
    # --quick evaluates no model on its own: r["evaluate"] is empty then, and zip() yields nothing.
    stage_walls |= {f"`evaluate {name}`": [x["wall_s"]] for name, x in zip(models, r["evaluate"], strict=False)}
    slowest = max(stage_walls, key=lambda k: statistics.median(stage_walls[k]))
    over = [k for k, v in stage_walls.items() if statistics.median(v) > 6]
    lines.append(
        f"| each non-training stage ≤ 6 s | slowest {slowest}: {spread(stage_walls[slowest])} s"
        f"{'; over: ' + ', '.join(over) if over else ''} | {verdict(not over)} |"
    )
    for name in models:
        ratios = [p["ratio"] for p in pairs[name]]
        lines.append(
            f"| {name} train stage ≤ 1.10 × bare Keras | {spread(ratios)} × "
            f"| {verdict(statistics.median(ratios) <= 1.10)} |"
        )
    for name in models:
        share = [p["stage_mlflow_log_s"] / p["stage_fit_s"] * 100 for p in pairs[name]]
        lines.append(
            f"| {name}: MLflow logging ≤ 3 % of fit | {spread(share)} % | {verdict(statistics.median(share) <= 3)} |"
        )
    lines += [
        f"| no-op `dvc repro` ≤ 2 s | {spread(r['noop_repro_s'])} s "
        f"| {verdict(statistics.median(r['noop_repro_s']) <= 2)} |",
        f"| `--help` ≤ 0.5 s | {spread(r['startup']['cli_help'])} s "
        f"| {verdict(statistics.median(r['startup']['cli_help']) <= 0.5)} |",
    ]
    peak = max(
        [r["full"]["dvc_repro_peak_rss_bytes"]]
        + [p["stage_peak_rss_bytes"] for ps in pairs.values() for p in ps]
        + [s["peak_rss_bytes"] for s in r["preprocess"] + r["evaluate"]]
    )
    prep = [s["wall_s"] for s in r["preprocess"]]
    lines += [
        f"| peak RSS of any stage ≤ 1.5 GiB | {peak / GIB:.2f} GiB | {verdict(peak <= 1.5 * GIB)} |",
    ]
    for name in models:
        cores = [p["stage_fit_cpu_s"] / p["stage_fit_s"] for p in pairs[name]]
        busy = statistics.median(cores) >= 0.8 * m["cores"]
        lines.append(
            f"| {name}: all {m['cores']} cores busy in fit (CPU s / wall s) | {spread(cores)} | {verdict(busy)} |"
        )

    lines += [
        "",
        "## Default models through the real pipeline",
        "",
        f"`dvc repro` from scratch: {r['full']['dvc_repro_s']:.0f} s, "
        f"peak RSS {r['full']['dvc_repro_peak_rss_bytes'] / GIB:.2f} GiB "
        "(the largest stage). Test accuracy (from the evaluate stage), fit time, fit CPU time and "
        "MLflow logging time as the train stage logged them to MLflow "
        "(first run: `dvc repro`, then each pair's stage run).",
        "",
        "| model | test accuracy | epochs | fit s | cores busy in fit | MLflow logging s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in models.items():
        runs = [{"fit_s": s["fit_s"], "cpu": s["fit_cpu_s"], "log": s["mlflow_log_s"]}] + [
            {"fit_s": p["stage_fit_s"], "cpu": p["stage_fit_cpu_s"], "log": p["stage_mlflow_log_s"]}
            for p in pairs[name]
        ]
        lines.append(
            f"| {name} | {s['test_accuracy']:.4f} | {s['epochs_trained']} "
            f"| {spread([x['fit_s'] for x in runs], '{:.1f}')} | "
            f"{spread([x['cpu'] / x['fit_s'] for x in runs])} | {spread([x['log'] for x in runs], '{:.3f}')} |"
        )

    lines += [
        "",
        "## Train stage vs a bare Keras script, pair by pair",
        "",
        "`python -m mnist_pipeline train MODEL` against `python bench/bare_keras.py MODEL --epochs N` (same model, "
        "data, epochs and batch size, plain Keras, no MLflow; N = the epochs the stage trained), both started as "
        "a new process, alternating which goes first. Wall time of the whole process.",
        "",
        "| model | stage s | bare s | ratio | stage fit s | bare fit s | stage cores busy | bare cores busy "
        "| stage / bare peak RSS GiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, ps in pairs.items():
        col = lambda key, f="{:.1f}", ps=ps: spread([p[key] for p in ps], f)  # noqa: E731
        lines.append(
            f"| {name} | {col('stage_wall_s')} | {col('bare_wall_s')} | {col('ratio', '{:.3f}')} "
            f"| {col('stage_fit_s')} | "
            f"{col('bare_fit_s')} | {spread([p['stage_fit_cpu_s'] / p['stage_fit_s'] for p in ps])} | "
            f"{spread([p['bare_fit_cpu_s'] / p['bare_fit_s'] for p in ps])} | "
            f"{max(p['stage_peak_rss_bytes'] for p in ps) / GIB:.2f} / "
            f"{max(p['bare_peak_rss_bytes'] for p in ps) / GIB:.2f} |"
        )

    log = r["logging"]
    fit = {name: statistics.median(fits[name]) for name in fits}
    lines += [
        "",
        "## MLflow logging",
        "",
        "The train stage logs each epoch's four metrics in one `log_batch` call (`log_metrics`), nothing per step. "
        f"The same call timed {len(log['sqlite'])} times here against the SQLite store and a local `mlflow server` "
        "(SQLite backend, started by the runner on 127.0.0.1):",
        "",
        "| store | ms per epoch call | per training (× epochs) as % of the median fit |",
        "| --- | --- | --- |",
    ]
    for store in ("sqlite", "server"):
        per = statistics.median(log[store])
        shares = ", ".join(f"{name} {per * models[name]['epochs_trained'] / fit[name] * 100:.2f} %" for name in models)
        lines.append(f"| {store} | {spread([t * 1000 for t in log[store]], '{:.1f}')} | {shares} |")

    if "floor" in r:
        _, floor_s, at_shapes = epoch_figures(r)
        f, mm = r["floor"], r["matmul"]
        layers = ", ".join(f"{shape} {spread(rates, '{:.0f}')}" for shape, rates in mm["layers"].items())
        lines += [
            "",
            "## Speed levers: the mlp's seconds per epoch",
            "",
            f"The compute floor of one epoch: {f['epoch_gflop']:.0f} GFLOP (6 FLOPs per multiply-add for each of "
            f"{f['train']:,} training images, 2 for each of {f['validation']:,} validation images) at this machine's "
            f"peak matmul rate in the fit's arithmetic ({mm['dtype']}, TensorFlow on all cores"
            f"{', AMX' if mm['amx'] else ''}), {spread(mm['peak'], '{:.0f}')} GFLOP/s at {mm['peak_shape']}, "
            f"measured before and after the levers = **{floor_s:.3f} s**. At the layers' own shapes for the "
            f"default batch (GFLOP/s: {layers}) the same arithmetic takes {at_shapes:.3f} s.",
            "",
            "`python bench/levers.py mlp --data … [lever]`: the mlp of params.yaml in plain Keras, each setting "
            "a new process, the settings' order alternating per repeat; steady epochs only (the first traces the "
            "graph); in bfloat16 where the CPU has it natively (this one: "
            f"{'yes' if r.get('native_bfloat16') else 'no'}), as the train stage computes. The first row is the "
            "default before issue 25, the last what the train stage does now.",
            "",
            "| lever | s per epoch | × floor | × baseline | cores busy | val accuracy after the epochs |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        samples = r["levers"]
        base = statistics.median(t for run in samples[next(iter(samples))] for t in run["epoch_s"])
        for name, runs in samples.items():
            epoch_s = [t for run in runs for t in run["epoch_s"]]
            lines.append(
                f"| {name} | {spread(epoch_s)} | {statistics.median(epoch_s) / floor_s:.2f} | "
                f"{statistics.median(epoch_s) / base:.2f} | {spread([c for run in runs for c in run['cores_busy']])} | "
                f"{spread([run['val_accuracy'] for run in runs], '{:.4f}')} |"
            )
        if not r.get("jax"):
            lines.append("\nJAX is not installed here, so its rows are missing (`pip install jax` to measure them).")
        if r.get("float32"):
            b, f32 = r["float32"]["bfloat16"], r["float32"]["float32"]
            lines += [
                "",
                "Mixed precision's cost in accuracy: the default mlp through the pipeline (`dvc repro`) with "
                "`precision: auto` (bfloat16 here) and with `precision: float32`:",
                "",
                "| precision | test accuracy | fit s | epochs |",
                "| --- | --- | --- | --- |",
                f"| bfloat16 (auto) | {b['test_accuracy']:.4f} | {b['fit_seconds']:.1f} | {b['epochs_trained']:.0f} |",
                f"| float32 | {f32['test_accuracy']:.4f} | {f32['fit_seconds']:.1f} | {f32['epochs_trained']:.0f} |",
            ]

    lines += ["", "## Start-up and other stages", "", "| what | command | seconds |", "| --- | --- | --- |"]
    for key, times in r["startup"].items():
        cmd = " ".join(STARTUP[key]).replace(PYTHON, "python").replace("-c import", '-c "import') + (
            '"' * ("-c" in STARTUP[key])
        )
        lines.append(f"| {key.replace('_', ' ')} | `{cmd}` | {spread(times)} |")
    lines.append(f"| no-op repro | `dvc repro` (nothing changed) | {spread(r['noop_repro_s'])} |")
    lines.append(
        f"| preprocess | `python -m mnist_pipeline preprocess` | {spread(prep)}; peak RSS "
        f"{max(s['peak_rss_bytes'] for s in r['preprocess']) / GIB:.2f} GiB |"
    )
    for stage, runs in r["other_stages"].items():
        lines.append(f"| {stage} | `python -m mnist_pipeline {stage}` | {spread([x['wall_s'] for x in runs])} |")
    for name, s in zip(models, r["evaluate"], strict=False):  # none under --quick, as above
        lines.append(
            f"| evaluate {name} | `python -m mnist_pipeline evaluate {name}` | {s['wall_s']:.1f}; peak RSS "
            f"{s['peak_rss_bytes'] / GIB:.2f} GiB |"
        )
    lines += ["", "Raw measurements: `results.json` beside this file.", ""]
    return "\n".join(lines)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--repeats", type=int, default=2, help="train-stage/bare-script pairs per model (default: 2)")
    cli.add_argument(
        "--quick", action="store_true", help="one tiny model, one repeat: checks the runner, measures nothing"
    )
    cli.add_argument("--mnist", type=Path, help="a folder with the MNIST files (default: download.yaml's sources)")
    cli.add_argument(
        "--first-run",
        action="store_true",
        help="also time `make setup` and `make repro` in a fresh clone of this repository (3.3 min here)",
    )
    cli.add_argument(
        "--out", type=Path, help="where RESULTS.md goes (default: bench/RESULTS.md, bench/quick/ for --quick)"
    )
    args = cli.parse_args()
    out = args.out or REPO / "bench" / ("quick" if args.quick else "") / "RESULTS.md"
    repeats = 1 if args.quick else args.repeats
    light = 1 if args.quick else 5  # the cheap measurements: start-up, no-op repro
    started = time.perf_counter()
    r: dict = {
        "machine": machine(),
        "repeats": repeats,
        "mnist": "a local folder (`--mnist`)" if args.mnist else "download.yaml's sources",
    }
    params = bench_params(args.quick)
    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as tmp:
        repo = make_repo(Path(tmp) / "repo", params, args.mnist)
        print(f"bench: temporary repository {repo}", flush=True)
        r["startup"] = startup(repo, light, args.quick)
        print("bench: dvc repro from scratch", flush=True)
        r["full"] = full_pipeline(repo, list(params["models"]))
        r["noop_repro_s"] = noop_repro(repo, light)
        r["preprocess"] = stage_runs(repo, ["preprocess"], repeats=1 if args.quick else 3)
        # dvc repro's peak RSS covers evaluate too; run alone only for its own figure.
        r["evaluate"] = [] if args.quick else [stage_runs(repo, ["evaluate", name], 1)[0] for name in params["models"]]
        r["other_stages"] = {
            stage: stage_runs(repo, [stage], light) for stage in ("check-params", "download", "summarize")
        }
        r["pairs"] = {}
        for name, model in r["full"]["models"].items():
            print(f"bench: {repeats} pair(s) train stage / bare Keras for {name}", flush=True)
            r["pairs"][name] = train_pairs(repo, name, model["epochs_trained"], repeats)
        epochs = max(m["epochs_trained"] for m in r["full"]["models"].values())
        r["logging"] = logging_costs(repo, epochs, calls=5 if args.quick else 20)
        if "mlp" in params["models"]:
            print("bench: the speed levers, and the machine's matmul rate around them", flush=True)
            mlp = params["models"]["mlp"]
            r["floor"] = floor(repo, mlp)
            r["jax"] = jax_installed()
            r["native_bfloat16"] = model_run(repo, "mlp").data.tags.get("compute_dtype") == "mixed_bfloat16"
            seconds = 0.3 if args.quick else 2.0  # per shape
            measure_matmul(r, mlp, seconds)
            r["levers"] = levers(repo, "mlp", repeats, args.quick, r["jax"], r["native_bfloat16"])
            measure_matmul(r, mlp, seconds)
            if r["native_bfloat16"] and not args.quick:  # elsewhere the default is float32 already
                r["float32"] = float32_accuracy(repo, r["full"]["models"]["mlp"])
    if args.first_run:
        print("bench: make repro in a fresh clone", flush=True)
        r["first_run"] = first_run(args.mnist)
    r["machine"]["load_after"] = os.getloadavg()
    r["total_s"] = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / "results.json").write_text(json.dumps(r, indent=1) + "\n")
    out.write_text(report(r, args.quick))
    print(f"bench: wrote {out} in {r['total_s'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
