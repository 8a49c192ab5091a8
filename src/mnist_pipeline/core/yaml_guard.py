"""Reading a YAML file that a pull request can change: size, depth, anchors, long values and repeated
keys are refused from the parser's events, before any value is built, each as a one-line ParamsError.
params.yaml and tune.yaml go through here."""

from pathlib import Path

import yaml

from mnist_pipeline.core.errors import ParamsError

# Limits that keep a hostile or mistaken file to a one-line error in milliseconds. The shipped
# params.yaml is 4 KiB and nests 4 deep.
MAX_BYTES = 64 * 1024
MAX_DEPTH = 8
MAX_VALUE_CHARS = 1000


def read_capped(path: Path, fix: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(MAX_BYTES + 1)  # never more: the file may be huge or endless
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such file; {fix}") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read it: {exc.strerror}") from None


def parse_mapping(data: bytes, path: Path) -> dict:
    """The mapping a params file holds, screened for size, depth, anchors and repeated keys first."""
    if len(data) > MAX_BYTES:
        raise ParamsError(
            f"{path}: larger than {MAX_BYTES // 1024} KiB, the limit (the shipped file is 4 KiB); "
            f"remove what is not a parameter"
        )
    try:
        raw = safe_yaml(data.decode("utf-8"), str(path))
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top, got {type(raw).__name__}")
    return raw


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_yaml(text: str, source: str):
    """The YAML in `text`, once its events show nothing costly to build (see _screen)."""
    try:
        _screen(text, source)
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ParamsError(f"{source}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None


def _screen(text: str, source: str) -> None:
    """Refuse, from the parser's events and before any value is built, what YAML makes costly or
    ambiguous: anchors and aliases (nine nested aliases stand for 387 million values), deep
    nesting, very long values, and a key given twice (YAML keeps the last one silently)."""
    open_nodes: list[list] = []  # per open collection: [keys seen (None in a list), nodes read]
    for event in yaml.parse(text, Loader=_Loader):
        assert event.start_mark is not None  # the parser marks every event it emits
        at = f"{source}: line {event.start_mark.line + 1}"
        if getattr(event, "anchor", None):  # &name, or *name (an AliasEvent)
            raise ParamsError(
                f"{at}: YAML anchors and aliases (&name, *name) are not allowed; write the value out in full"
            )
        if isinstance(event, yaml.CollectionEndEvent):
            open_nodes.pop()
            continue
        if not isinstance(event, yaml.NodeEvent):
            continue
        if open_nodes and open_nodes[-1][0] is not None:  # in a mapping, nodes alternate key, value
            keys, count = open_nodes[-1]
            if count % 2 == 0 and isinstance(event, yaml.ScalarEvent):
                if event.value in keys:
                    raise ParamsError(
                        f"{at}: key {event.value[:80]!r} appears twice in one mapping; "
                        f"keep one (YAML would silently use the last)"
                    )
                keys.add(event.value)
        if open_nodes:
            open_nodes[-1][1] += 1
        if isinstance(event, yaml.ScalarEvent) and len(event.value) > MAX_VALUE_CHARS:
            raise ParamsError(f"{at}: a value of {len(event.value):,} characters; the limit is {MAX_VALUE_CHARS:,}")
        if isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append([set() if isinstance(event, yaml.MappingStartEvent) else None, 0])
            if len(open_nodes) > MAX_DEPTH:
                raise ParamsError(
                    f"{at}: nested {len(open_nodes)} levels deep; the limit is {MAX_DEPTH} "
                    f"(the shipped params.yaml nests 4)"
                )
