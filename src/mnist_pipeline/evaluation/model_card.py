"""A registered version's model card: Markdown the registry shows as the version's description (the
MLflow UI renders it) and the training run keeps as `model_card.md`. Built from plain values, here
without MLflow; evaluation/lineage.py gathers them."""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mnist_pipeline.evaluation.gates import DIGITS, Scores

# A model version's description is VARCHAR(5000) in MLflow's SQL stores
# (mlflow/store/model_registry/dbmodels/models.py); PostgreSQL refuses a longer one.
MAX_CHARS = 5000
CUT = "\n\n… (cut at MLflow's limit of {limit:,} characters: the whole card is `model_card.md` in run `{run}`)\n"
# What a logged model takes and gives: its signature, inferred in training/trainer.py from uint8 images.
INPUTS = (
    "raw uint8 pixels, shape `(N, 28, 28)`, a white digit on black as in MNIST (the model rescales "
    "them itself); it returns `(N, 10)` probabilities of the digits 0 to 9. `predict` also takes "
    "photos and scans, and fits them to that form."
)


@dataclass(frozen=True)
class Card:
    """What a card says; None or empty: not recorded, and the card says so."""

    name: str  # the registered model: mnist-mlp
    version: str
    model: str  # its key under `models` in params.yaml
    model_id: str  # the logged model (m-…)
    run_id: str  # the training run
    scores: Scores
    champion: tuple[str, Scores] | None = None  # the version it was compared with, and its scores
    run_name: str | None = None
    experiment: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)  # as the training run logged them
    confusions: Sequence[tuple[int, int, int]] = ()  # (true digit, predicted digit, images), worst first
    split: Mapping[str, int] = field(default_factory=dict)  # images per split: training, validation, test
    data_sha256: Mapping[str, str] = field(default_factory=dict)  # MNIST file → sha256
    inputs_md5: Mapping[str, str] = field(default_factory=dict)  # DVC path → md5, as dvc.lock records it
    git_commit: str | None = None
    git_dirty: str | None = None
    host: str | None = None
    compute_dtype: str | None = None
    fit_seconds: float | None = None
    epochs_trained: int | None = None


def model_card(card: Card) -> str:
    """The card as Markdown, at most MAX_CHARS characters (cut, with a note, past them)."""
    text = "\n".join(_lines(card)) + "\n"
    if len(text) <= MAX_CHARS:
        return text
    note = CUT.format(limit=MAX_CHARS, run=card.run_id)
    return text[: MAX_CHARS - len(note)].rstrip() + note


def describe(params: Mapping[str, str]) -> str:
    """What the model is, from its params: "an MLP, 784 pixels → 512 → 512 → 10 digits (relu, dropout 0.2)"."""
    kind = params.get("type")
    if kind == "logistic":
        return "a logistic regression: 784 pixels → 10 digits, softmax"
    if kind == "mlp":
        try:
            hidden = [str(units) for units in json.loads(params.get("hidden_units", ""))]
        except (ValueError, TypeError):
            hidden = ["?"]
        return (
            f"an MLP: 784 pixels → {' → '.join(hidden)} → 10 digits, softmax "
            f"({params.get('activation', '?')}, dropout {params.get('dropout', '?')})"
        )
    return f"a model of type {kind or 'not recorded'}"


def _lines(card: Card) -> list[str]:
    def known(value) -> str:
        return "not recorded" if value in (None, "") else str(value)

    champion = card.champion
    was = (
        f"version {champion[0]}, the champion it was compared with: {champion[1].accuracy:.4f}, "
        f"{card.scores.accuracy - champion[1].accuracy:+.4f}"
        if champion
        else "the first of its family"
    )
    test = card.split.get("test")
    lines = [
        f"# {card.name} version {card.version}",
        "",
        f"**{card.model}**: {describe(card.params)}. Logged model `{card.model_id}`, trained by run "
        f"`{card.run_id}` ({known(card.run_name)}) of experiment `{known(card.experiment)}`.",
        "",
        f"**Test accuracy {card.scores.accuracy:.4f}**{f' on {test:,} images' if test else ''} ({was}).",
        "",
        "## Per digit (test set)",
        "",
    ]
    if card.scores.per_digit:
        old_version, old = champion if champion and champion[1].per_digit else ("", None)
        columns = ["digit", "precision", "recall"]
        if old:
            columns += [f"v{old_version} precision", f"v{old_version} recall"]
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for d in DIGITS:
            row = f"| {d} | {card.scores.precision[d]:.4f} | {card.scores.recall[d]:.4f} |"
            lines.append(row + (f" {old.precision[d]:.4f} | {old.recall[d]:.4f} |" if old else ""))
    else:
        lines.append("Not recorded.")
    worst = ", ".join(f"{true} → {predicted}: {count}" for true, predicted, count in card.confusions)
    lines += ["", f"Worst confusions (true → predicted: images): {worst or 'none'}.", ""]

    lines += ["## Parameters", ""]
    lines.append(", ".join(f"`{key}={value}`" for key, value in card.params.items()) or "Not recorded.")
    lines += ["", "## Data lineage", ""]
    if card.data_sha256:
        lines.append("- MNIST's four IDX files, accepted by the download stage only with these sha256:")
        lines += [f"  - `{name}` `{digest}`" for name, digest in card.data_sha256.items()]
    sizes = ", ".join(f"{card.split[k]:,} {k}" for k in ("training", "validation", "test") if k in card.split)
    lines.append(f"- Split seed {known(card.params.get('data.seed'))}: {sizes or 'sizes not recorded'} images")
    lines.append(f"- Git commit `{known(card.git_commit)}`, uncommitted changes: {known(card.git_dirty)}")
    if card.inputs_md5:
        hashes = ", ".join(f"`{path}` `{md5}`" for path, md5 in card.inputs_md5.items())
        lines.append(f"- DVC's md5 of the inputs (as `dvc.lock` records them): {hashes}")
    seconds = f"{card.fit_seconds:.1f} s" if card.fit_seconds is not None else "not recorded"
    epochs = f" over {card.epochs_trained} epochs" if card.epochs_trained is not None else ""
    lines += [
        "",
        "## Training",
        "",
        f"Machine `{known(card.host)}`, arithmetic `{known(card.compute_dtype)}` (compute_dtype; the weights "
        f"are float32), fit {seconds}{epochs}.",
        "",
        "## How to call it",
        "",
        f"Input: {INPUTS}",
        "",
        "```bash",
        f"python -m mnist_pipeline predict digit.png --model models:/{card.name}/{card.version}",
        f"mlflow models serve -m models:/{card.name}/{card.version} --env-manager local -h 127.0.0.1 -p 5001",
        "```",
    ]
    return lines
