"""Benchmark how well the models read photos of digits (issue 24): writes bench/ROBUSTNESS.md (+ robustness.json).

MNIST's test digits are rendered as phone photos of a digit on paper under named conditions
(bench/photos.py), written as PNG files, and read back through `predict`'s own code: its
`load_inputs` (which turns an image file into MNIST's form) and its `predict`. Each condition's
accuracy, for each model, on the same stratified sample of the test set:

    python -m bench.robustness                           # models/mlp and models/logistic of this workspace
    python -m bench.robustness --model mlp=a.keras --model mlp-aug=b.keras    # any models, by name
    python -m bench.robustness --train-variants          # also train params.yaml with augmentation on and off
    python -m bench.robustness --quick --root REPO       # a few dozen digits: checks the runner, measures little

The photos depend only on the seed, so every model sees the same ones and a rerun repeats the figures.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.photos import CONDITIONS, SIDE, contact_sheet, render
from bench.run import machine, spread
from mnist_pipeline.core.errors import InputError
from mnist_pipeline.core.layout import MODEL_FILE
from mnist_pipeline.data import idx

TARGET = {"mlp": 0.97}  # issue 24: the default mlp reads every condition at least this well
CHUNK = 100  # files per load_inputs call: the unit of the preprocessing timings
SHEET = "robustness-conditions.png"


# --- the data and the models ----------------------------------------------------------------
def test_set(root: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = root / "data" / "raw"
    try:
        return idx.read(raw / "t10k-images-idx3-ubyte"), idx.read(raw / "t10k-labels-idx1-ubyte")
    except (OSError, idx.IdxError) as exc:
        sys.exit(f"bench: cannot read MNIST's test set in {raw} ({exc}); run `dvc repro download` there first")


def stratified(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`size` indices into the test set, as many of each digit as can be (the first digits take the
    remainder), drawn with `seed`, in the test set's order."""
    rng = np.random.default_rng(seed)
    picked = []
    for digit in range(10):
        count = size // 10 + (digit < size % 10)
        picked.append(rng.choice(np.flatnonzero(labels == digit), count, replace=False))
    return np.sort(np.concatenate(picked))


def named_models(pairs: list[str], root: Path) -> dict[str, Path]:
    """NAME=PATH pairs, or the workspace's models/mlp and models/logistic."""
    if not pairs:
        return {name: root / "models" / name / MODEL_FILE for name in ("mlp", "logistic")}
    models: dict[str, Path] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            sys.exit(f"bench: --model {pair}: expected NAME=PATH, e.g. mlp=models/mlp/model.keras")
        models[name] = Path(path)
    return models


def describe(path: Path) -> str:
    """The model's path and the start of its file's SHA-256, which names the very weights measured."""
    import hashlib

    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else "not a file"
    shown = os.path.relpath(path) if path.is_absolute() and path.is_relative_to(Path.cwd()) else str(path)
    return f"`{shown}` (sha256 {digest}…)"


def load(models: dict[str, Path], root: Path) -> dict:
    """Each model as predict loads it, with the unsure check's thresholds saved beside it."""
    from mnist_pipeline.tools.predict import load_model, load_thresholds
    from mnist_pipeline.training.quiet_tf import import_tensorflow

    import_tensorflow()
    loaded = {}
    for name, path in models.items():
        try:
            model, folder = load_model(str(path), root)
        except InputError as exc:
            sys.exit(f"bench: model {name}: {exc}")
        loaded[name] = (model, load_thresholds(folder, str(path)))
    return loaded


def augmentation_variants(params: dict) -> tuple[dict, dict] | str:
    """params.yaml as shipped and the same with each model's augmentation switched the other way;
    or why not (no augmentation option yet, or one of a form this does not know)."""
    import copy

    models = params["models"]
    if not any("augmentation" in model for model in models.values()):
        return "params.yaml has no `augmentation` option for any model yet"
    flipped = copy.deepcopy(params)
    for name, model in flipped["models"].items():
        value = model.get("augmentation")
        if isinstance(value, bool):
            model["augmentation"] = not value
        elif isinstance(value, dict) and isinstance(value.get("enabled"), bool):
            value["enabled"] = not value["enabled"]
        else:
            return f"models.{name}.augmentation is {value!r}: this runner flips only true/false or `enabled:`"
    return params, flipped


def augmented(value) -> bool:
    return value is True or (isinstance(value, dict) and value.get("enabled", True) is True)


def train_variants(root: Path, tmp: Path) -> tuple[dict[str, Path], str]:
    """Both models trained with the shipped params.yaml and with augmentation switched, each in a
    temporary copy of the repository through `dvc repro train`; their .keras files by name."""
    from tests.support.harness import make_repo, repo_env, shipped_params

    variants = augmentation_variants(shipped_params())
    if isinstance(variants, str):
        return {}, f"Variants not trained: {variants}."
    models: dict[str, Path] = {}
    for label, params in zip(("shipped", "switched"), variants, strict=True):
        repo = make_repo(tmp / label, params, root / "data" / "raw")
        print(f"bench: training the {label} variant in {repo}", flush=True)
        done = subprocess.run(
            ["dvc", "repro", "train"],
            cwd=repo,
            env=repo_env(repo, TF_CPP_MIN_LOG_LEVEL="3"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if done.returncode:
            sys.exit(f"bench: `dvc repro train` ({label}) exited {done.returncode}:\n{done.stdout[-3000:]}")
        models |= {
            f"{name} ({'augmented' if augmented(model.get('augmentation')) else 'plain'})": repo
            / "models"
            / name
            / MODEL_FILE
            for name, model in params["models"].items()
        }
    return models, "Variants trained by `--train-variants`: params.yaml as shipped and with augmentation switched."


# --- the measurement ------------------------------------------------------------------------
def read_through_predict(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float]]:
    """The files as predict reads them (28×28 uint8 each), the separate marks it saw in each,
    whether predict refused each, and the seconds per image of each chunk of CHUNK files. A file
    predict refuses (an InputError, e.g. "blank") gets a black image and counts as a wrong answer."""
    from mnist_pipeline.tools.predict import load_inputs

    images, marks, refused, per_image = [], [], [], []
    for start in range(0, len(paths), CHUNK):
        chunk = paths[start : start + CHUNK]
        started = time.perf_counter()
        try:
            _, batch, seen = load_inputs(chunk)
            failed = np.zeros(len(chunk), bool)
        except InputError:  # one of them: read them one at a time to know which
            batch, failed = np.zeros((len(chunk), 28, 28), np.uint8), np.zeros(len(chunk), bool)
            seen = np.ones(len(chunk), int)
            for i, path in enumerate(chunk):
                try:
                    _, one, one_seen = load_inputs([path])
                    batch[i], seen[i] = one[0], one_seen[0]
                except InputError:
                    failed[i] = True
        per_image.append((time.perf_counter() - started) / len(chunk))
        images.append(batch)
        marks.append(seen)
        refused.append(failed)
    return np.concatenate(images), np.concatenate(marks), np.concatenate(refused), per_image


def measure(root: Path, models: dict, size: int, seed: int, folder: Path) -> dict:
    from mnist_pipeline.tools.predict import answers

    x, y = test_set(root)
    sample = stratified(y, size, seed)
    r: dict = {"sample": len(sample), "seed": seed, "side": SIDE, "conditions": {}, "mnist": {}}
    for name, (model, _) in models.items():  # the reference: the 28×28 arrays themselves, no photo
        digits = model.predict(x, batch_size=1024, verbose=0).argmax(axis=1)
        r["mnist"][name] = {
            "test_accuracy": float((digits == y).mean()),
            "sample_accuracy": float((digits[sample] == y[sample]).mean()),
        }
    examples: dict[str, np.ndarray] = {}
    for condition in CONDITIONS:
        started = time.perf_counter()
        paths = []
        for i in sample:
            photo = render(x[i], condition, seed, int(i))
            paths.append(folder / f"{condition}-{i:05d}-{y[i]}.png")
            paths[-1].write_bytes(png(photo))
        render_s = (time.perf_counter() - started) / len(sample)
        shown = sample[len(examples) * len(sample) // len(CONDITIONS)]  # another digit for each condition
        examples[condition] = render(x[shown], condition, seed, int(shown))
        images, marks, refused, per_image = read_through_predict(paths)
        result = {"render_s_per_image": render_s, "preprocess_s_per_image": per_image, "refused": int(refused.sum())}
        for name, (model, thresholds) in models.items():
            probabilities, unsure = answers(model, images, marks, thresholds)
            digits = probabilities.argmax(axis=1)
            result[name] = float(((digits == y[sample]) & ~refused).mean())
            result[f"{name} unsure"] = float(unsure.mean())
        r["conditions"][condition] = result
        print(
            f"bench: {condition:<18} "
            + "  ".join(f"{name} {result[name]:.4f}" for name in models)
            + f"  ({statistics.median(per_image) * 1000:.1f} ms per image to preprocess)",
            flush=True,
        )
        for path in paths:
            path.unlink()
    r["examples"] = examples
    return r


def png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


# --- the report -----------------------------------------------------------------------------
def report(r: dict, command: str, quick: bool) -> str:
    m = r["machine"]
    names = list(r["mnist"])
    lines = [
        "# Robustness benchmark" + (" (QUICK: checks the runner, the figures mean little)" if quick else ""),
        "",
        f"`{command}` at commit `{m['commit']}`, {m['date']}, {r['total_s'] / 60:.1f} min in all.",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']:.0f} GiB, Python {m['python']}, "
        + ", ".join(f"{p} {v}" for p, v in m["versions"].items())
        + f". Load average (1 min) {m['load_before'][0]:.1f} at the start, {m['load_after'][0]:.1f} at the end: "
        "on a shared machine the times are noisy; the accuracies do not depend on load.",
        "",
        f"{r['sample']:,} digits of MNIST's test set, stratified by digit (seed {r['seed']}), each rendered as a "
        f"{r['side']}×{r['side']} grayscale photo of a digit on paper under each condition (`bench/photos.py`; "
        "each condition but `everyday` is `clean` with one thing changed), written as a PNG file and read back through "
        "`predict`'s code: `load_inputs` (the file to MNIST's 28×28 form) and `predict`. A file `predict` "
        "refuses counts as a wrong answer.",
        "",
        "Models: " + "; ".join(f"{name} = {path}" for name, path in r["models"].items()) + ".",
    ]
    if r.get("note"):
        lines += ["", f"**{r['note']}**"]
    if r.get("variants_note"):
        lines += ["", r["variants_note"]]
    lines += [
        "",
        f"![one photo per condition]({SHEET})",
        "",
        "## Accuracy per condition",
        "",
        "| condition | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"{n}: unsure" for n in names)
        + " | refused by predict | preprocessing ms per image |",
        "| --- | " + " | ".join("---" for _ in names * 2) + " | --- | --- |",
        "| MNIST test set, the 28×28 arrays (all 10,000) | "
        + " | ".join(f"{r['mnist'][n]['test_accuracy']:.4f}" for n in names)
        + " |" * (len(names) + 3),
        f"| MNIST, the same {r['sample']:,} digits as arrays | "
        + " | ".join(f"{r['mnist'][n]['sample_accuracy']:.4f}" for n in names)
        + " |" * (len(names) + 3),
    ]
    for condition, c in r["conditions"].items():
        ms = spread([t * 1000 for t in c["preprocess_s_per_image"]]).replace("runs", "chunks")
        lines.append(
            f"| {condition} | "
            + " | ".join(f"{c[n]:.4f}" for n in names)
            + " | "
            + " | ".join(f"{c.get(f'{n} unsure', 0):.1%}" for n in names)
            + f" | {c['refused']} | {ms} |"
        )
    lines += [
        "",
        "*unsure*: the share of the answers `predict` flags unsure (the model's thresholds, measured on the "
        "validation split at train time); accuracy counts every answer as given, flagged or not.",
        "",
        f"Preprocessing: `load_inputs` on {CHUNK} files at a time (read the PNG, turn it into MNIST's form), "
        "milliseconds per image, median (min–max over the chunks). Rendering a photo and writing its PNG took "
        f"{spread([c['render_s_per_image'] * 1000 for c in r['conditions'].values()], '{:.1f}')} ms per image "
        "(per condition).",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "| --- | --- | --- |",
    ]
    for name, threshold in TARGET.items():
        if name not in r["mnist"]:
            continue
        worst = min(r["conditions"], key=lambda k: r["conditions"][k][name])
        missed = [k for k, c in r["conditions"].items() if c[name] < threshold]
        value = r["conditions"][worst][name]
        lines.append(
            f"| {name} ≥ {threshold} on every photo condition | worst {worst}: {value:.4f}"
            f"{'; below: ' + ', '.join(missed) if missed else ''} | {'met' if not missed else '**missed**'} |"
        )
        clean = r["mnist"][name]["test_accuracy"]
        lines.append(
            f"| {name} clean MNIST test accuracy ≥ 0.986 | {clean:.4f} | {'met' if clean >= 0.986 else '**missed**'} |"
        )
    lines += ["", "Raw figures: `robustness.json` beside this file.", ""]
    return "\n".join(lines)


def main() -> None:
    from tests.support.harness import REPO

    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--root", type=Path, default=REPO, help="the workspace whose data/raw and models/ to read")
    cli.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a model to measure, by name (repeatable; default: models/mlp and models/logistic of --root)",
    )
    cli.add_argument(
        "--train-variants",
        action="store_true",
        help="also train both models with params.yaml as shipped and with augmentation switched, in a temporary copy",
    )
    cli.add_argument("--size", type=int, default=2000, help="digits per condition (default: %(default)s)")
    cli.add_argument("--seed", type=int, default=0, help="the sample's and the photos' seed (default: %(default)s)")
    cli.add_argument("--note", default="", help="a sentence for the report's head: what the figures are")
    cli.add_argument("--quick", action="store_true", help="40 digits per condition: checks the runner")
    cli.add_argument("--out", type=Path, help="where ROBUSTNESS.md goes (default: bench/, bench/quick/ for --quick)")
    args = cli.parse_args()
    size = 40 if args.quick else args.size
    if size < 10:
        sys.exit(f"bench: --size {size}: give at least 10, one of each digit")
    out = args.out or REPO / "bench" / ("quick" if args.quick else "") / "ROBUSTNESS.md"
    command = shlex.join(["python", "-m", "bench.robustness", *sys.argv[1:]])
    started = time.perf_counter()
    paths = named_models(args.model, args.root)
    r: dict = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="mnist-robustness-") as tmp:
        if args.train_variants:
            trained, r["variants_note"] = train_variants(args.root, Path(tmp))
            paths |= trained
        r["models"] = {name: describe(path) for name, path in paths.items()}
        models = load(paths, args.root)
        folder = Path(tmp) / "photos"
        folder.mkdir()
        r |= measure(args.root, models, size, args.seed, folder)
    r["machine"]["load_after"] = os.getloadavg()
    r["total_s"] = time.perf_counter() - started
    r["command"] = command
    r["note"] = args.note
    out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(r.pop("examples")).save(out.parent / SHEET)
    (out.parent / "robustness.json").write_text(json.dumps(r, indent=1) + "\n")
    out.write_text(report(r, command, args.quick))
    print(f"bench: wrote {out} in {r['total_s'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
