"""`tune --apply`: a study's best values written into params.yaml's models.<name>, and nothing else.

ruamel.yaml's round trip (DVC's own, for `dvc exp run -S`) keeps the comments, the order, the flow
style and the empty values; a list that changes keeps its style too. A comment at the end of a changed
line explained the value it replaces (`batch_size: 256  # half the steps of 128`), so it becomes
`# was 256 before tune --apply`. The new file is checked by the rules of check-params before it
replaces the old one, in one move."""

import io
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedSeq
from ruamel.yaml.representer import RoundTripRepresenter

from mnist_pipeline.core.atomic import atomic_file
from mnist_pipeline.core.params import parse_params
from mnist_pipeline.tuning.optuna_study import text


def apply_values(path: Path, name: str, values: dict) -> dict[str, tuple]:
    """Write `values` into models.<name> of the params file at `path`; return {key: (old, new)} for
    the keys that changed (none: the file is left as it was)."""
    path = Path(path)
    yaml = YAML()  # round trip
    yaml.width = 4096  # never fold a long line that was not folded
    yaml.preserve_quotes = True
    yaml.Representer = _Representer
    data = yaml.load(path.read_text(encoding="utf-8"))
    model = data["models"][name]
    changed = {}
    for key, value in values.items():
        old = model.get(key)
        if _plain(old) == value:
            continue
        changed[key] = (_plain(old), value)
        if isinstance(old, CommentedSeq) and isinstance(value, list):
            old[:] = value  # the same list object: its block or flow style stays
        else:
            model[key] = value
            _retire_comment(model, key, old)
    if not changed:
        return {}
    out = io.StringIO()
    yaml.dump(data, out)
    new = out.getvalue().encode("utf-8")
    parse_params(new, path)  # a value the pipeline refuses never reaches the file
    with atomic_file(path) as tmp:
        tmp.write_bytes(new)
    return changed


class _Representer(RoundTripRepresenter):
    """A new float as 0.00001, not ruamel's 1e-05, which YAML 1.1 (PyYAML: check-params) reads as a
    string. The floats read from the file keep their own spelling (they are ruamel's ScalarFloat)."""


_Representer.add_representer(float, lambda r, value: r.represent_scalar("tag:yaml.org,2002:float", text(value)))


def _retire_comment(model, key: str, old) -> None:
    """Replace the comment at the end of `key`'s line, if any, by one naming the value it explained.
    ruamel keeps that comment in one token with any comment lines below it: those stay."""
    items = model.ca.items.get(key)
    token = items[2] if items and len(items) > 2 else None
    if token is None:
        return
    first, newline, rest = token.value.partition("\n")
    if first.lstrip().startswith("#"):  # a comment on the key's own line, not only lines below it
        token.value = f"# was {text(old) if isinstance(old, float) else old} before tune --apply{newline}{rest}"


def _plain(value):
    """ruamel's commented list as a plain one, for comparing and printing."""
    return list(value) if isinstance(value, CommentedSeq) else value
