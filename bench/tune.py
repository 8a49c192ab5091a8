"""Benchmark `tune` (issue 14): a small study's wall time with one worker and with two, and the share
of epochs that pruning saved; writes bench/TUNE.md (+ tune.json).

    python -m bench.tune --mnist ~/.keras/datasets     # 12 trials of mlp, 5,000 images, 6 epochs
    python -m bench.tune --quick --mnist DIR           # 4 tiny trials: checks the runner, measures nothing

Everything runs in a temporary copy of the repository. Both studies search the shipped tune.mlp
space with the same pruner (median, 3 startup trials, 1 warm-up epoch); each has a study of its own
in the repository's optuna.db. One worker runs its study seeded; of two workers only the one that
creates the study is seeded (the other draws its own values), so the two studies do not train the
same trials: compare their epochs as well as their wall times.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml

from bench.run import machine
from mnist_pipeline.tuning import optuna_study
from tests.support.harness import REPO, make_repo, repo_env, sh, shipped_params


def study_params(trials: int, train_size: int, epochs: int) -> tuple[dict, dict]:
    """params.yaml and tune.yaml of the study: the shipped ones, on less data, fewer epochs and trials."""
    params = shipped_params()
    params["data"]["train_size"] = train_size
    params["models"] = {"mlp": params["models"]["mlp"] | {"epochs": epochs}}
    params["registry"]["enabled"] = False
    tune = yaml.safe_load((REPO / "tune.yaml").read_text())["tune"]["mlp"]
    return params, {"tune": {"mlp": tune | {"trials": trials, "startup_trials": 3, "warmup_epochs": 1}}}


def run_workers(repo: Path, study: str, workers: int) -> dict:
    """`workers` tune processes on one study at once; the wall time until the last one ends."""
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mnist_pipeline", "tune", "mlp", "--study", study],
            cwd=repo,
            env=repo_env(repo, TF_CPP_MIN_LOG_LEVEL="3"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(workers)
    ]
    # The outputs go into tune.json: the throwaway repository's path as <repo>, not this machine's.
    outputs = [proc.communicate()[0].replace(str(repo), "<repo>") for proc in procs]
    wall = time.perf_counter() - started
    for proc, output in zip(procs, outputs, strict=True):
        if proc.returncode:
            sys.exit(f"bench: a worker of study {study} exited {proc.returncode}:\n{output[-4000:]}")
    return {"workers": workers, "wall_s": wall, "outputs": outputs}


def epochs_of(repo: Path, study: str, epochs: int) -> dict:
    """Epochs each trial trained to the end (its reports to the pruner), against all trials running all epochs."""
    trials = optuna.load_study(study_name=study, storage=optuna_study.default_storage(repo)).trials
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    trained = sum(len(t.intermediate_values) for t in finished)
    possible = len(finished) * epochs
    return {
        "trials": len(finished),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in finished),
        "epochs_trained": trained,
        "epochs_possible": possible,
        "saved_share": 1 - trained / possible,
        "best_value": min(t.value for t in finished if t.value is not None),
    }


def report(r: dict, quick: bool, command: str) -> str:
    m, one, two = r["machine"], r["one"], r["two"]
    lines = [
        "# Tuning benchmark" + (" (QUICK smoke run: tiny data, not results)" if quick else ""),
        "",
        f"`{command}` at commit `{m['commit']}`, {m['date']}: {m['cores']} cores ({m['cpu']}), "
        f"{m['memory_gib']:.0f} GiB, Python {m['python']}, TensorFlow {m['versions']['tensorflow']}, "
        f"Optuna {optuna.__version__}.",
        f"Load average (1 min) {m['load_before'][0]:.1f} at the start, {m['load_after'][0]:.1f} at the end.",
        "",
        f"Study: mlp over the shipped tune.mlp space, {r['config']['trials']} trials, "
        f"{r['config']['train_size']:,} training images, {r['config']['epochs']} epochs per trial, median pruner "
        f"(3 startup trials, 1 warm-up epoch); SQLite study storage and MLflow store in the repository.",
        "",
        "| workers | wall time | trials (pruned) | epochs trained / all trials to the end | pruning saved "
        "| best val_loss |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, run in (("1", one), ("2", two)):
        e = run["epochs"]
        lines.append(
            f"| {name} | {run['wall_s']:.0f} s | {e['trials']} ({e['pruned']}) | {e['epochs_trained']} / "
            f"{e['epochs_possible']} | {e['saved_share']:.0%} | {e['best_value']:.4f} |"
        )
    lines += [
        "",
        f"Two workers took {two['wall_s'] / one['wall_s']:.2f} × the time of one. Each worker pays "
        f"its own start-up (TensorFlow, MLflow, Optuna): on {m['cores']} cores two workers also share "
        f"them, and Keras keeps more than one core busy in a fit.",
        "",
        "Raw measurements: `tune.json` beside this file.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--quick", action="store_true", help="4 tiny trials: checks the runner, measures nothing")
    cli.add_argument("--mnist", type=Path, help="a folder with the MNIST files (default: download.yaml's sources)")
    cli.add_argument("--trials", type=int, default=12)
    cli.add_argument("--train-size", type=int, default=5000)
    cli.add_argument("--epochs", type=int, default=6)
    cli.add_argument("--out", type=Path, help="where TUNE.md goes (default: bench/TUNE.md, bench/quick/ for --quick)")
    args = cli.parse_args()
    if args.quick:
        args.trials, args.train_size, args.epochs = 4, 400, 2
    out = args.out or REPO / "bench" / ("quick" if args.quick else "") / "TUNE.md"
    command = "python -m bench.tune" + (
        " --quick" if args.quick else f" --trials {args.trials} --train-size {args.train_size} --epochs {args.epochs}"
    )
    r = {"machine": machine(), "config": {"trials": args.trials, "train_size": args.train_size, "epochs": args.epochs}}
    with tempfile.TemporaryDirectory(prefix="mnist-bench-tune-") as tmp:
        params, tune = study_params(args.trials, args.train_size, args.epochs)
        repo = make_repo(Path(tmp) / "repo", params, args.mnist)
        (repo / "tune.yaml").write_text(yaml.safe_dump(tune, sort_keys=False))
        print(f"bench: temporary repository {repo}; dvc repro preprocess", flush=True)
        sh(repo, "dvc", "repro", "preprocess")
        for key, workers in (("one", 1), ("two", 2)):
            print(f"bench: study {key}, {workers} worker(s)", flush=True)
            r[key] = run_workers(repo, key, workers)
            r[key]["epochs"] = epochs_of(repo, key, args.epochs)
    r["machine"]["load_after"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / "tune.json").write_text(json.dumps(r, indent=1) + "\n")
    out.write_text(report(r, args.quick, command))
    print(f"bench: wrote {out}", flush=True)


if __name__ == "__main__":
    main()
