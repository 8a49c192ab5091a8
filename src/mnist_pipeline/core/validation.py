"""Pydantic's validation errors as one line a user can act on: the key as the user wrote it, the
value given and what is allowed, and a guess at a misspelt key."""

import difflib
import reprlib
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from mnist_pipeline.core.errors import ParamsError

M = TypeVar("M", bound=BaseModel)


def validate(root: type[M], raw: dict, source: str) -> M:
    """`raw` as a `root`, or a ParamsError naming `source` and the first problem (an unknown key first:
    a misspelt key is an unknown key plus, often, a missing one, and the unknown key is the cause)."""
    try:
        return root.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        message, explained = _describe(first, raw, root)
        others = [e for e in errors if e is not first and e["loc"] != explained]
        more = f" (+{len(others)} more: fix this one and run again)" if others else ""
        raise ParamsError(f"{source}: {message}{more}") from None


def field_type(model: BaseModel, key: str):
    """The type a model key takes (int, float, list[...], a Literal), without its constraints."""
    return _unwrap(type(model).model_fields[key].annotation)


def _describe(error: ErrorDetails, raw: dict, root: type[BaseModel]) -> tuple[str, tuple | None]:
    """One line naming the key, the value given and what is allowed; and the location of a
    missing key that the line explains too (the key an unknown key is a misspelling of)."""
    kind = error["type"]
    if error["loc"][-1:] == ("[key]",):  # the key itself is wrong: a model name
        *where, name = error["loc"][:-1]
        return (
            f"{'.'.join(map(str, where))}: name {short(name)} is not allowed; use a letter, then letters, "
            f"digits, _ or - (at most 64): DVC puts it into stage names and shell commands"
        ), None
    parts, parent = _follow(error["loc"], root)
    key = ".".join(str(part) for part in parts)
    if kind == "missing":
        return f"missing key {key!r}", None
    if kind == "extra_forbidden":
        given = _lookup(raw, parts[:-1])
        unset = [field for field in parent.model_fields if field not in given]
        match = difflib.get_close_matches(str(parts[-1]), unset, n=1)
        if match:
            return f"unknown key {key!r}; did you mean {match[0]!r}?", (*error["loc"][:-1], match[0])
        return f"unknown key {key!r}; allowed here: {', '.join(parent.model_fields)}", None
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = error["ctx"]["discriminator"].strip("'")
        given = error["input"].get(tag) if isinstance(error["input"], dict) else None
        return f"{key}.{tag} = {short(given)} is not allowed; allowed: {error['ctx']['expected_tags']}", None
    return f"{key} = {short(error['input'])}: {error['msg']}", None


_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxlist, _repr.maxdict, _repr.maxstring, _repr.maxlong = 2, 6, 4, 60, 40


def short(value) -> str:
    """repr() cut short: an error line quotes the value, and a value can be huge."""
    return _repr.repr(value)


def _lookup(raw, parts: list):
    """The value at the user's key path `parts` in the raw YAML."""
    for part in parts:
        raw = raw[part]
    return raw


def _follow(loc, root: type[BaseModel]) -> tuple[list, Any]:
    """The user's key path for a pydantic error location, and the class holding its last key.

    Pydantic puts the tag of a discriminated union into the location (models.mlp.mlp.dropout);
    the user wrote no such key, so it is dropped.
    """
    node: object = root  # a model class, then whatever annotation the next key has
    parent, parts = None, []
    for part in loc:
        node = _unwrap(node)
        if get_origin(node) is Union:
            tagged = [c for c in get_args(node) if _has_tag(c, part)]
            if not tagged:
                break
            node = _unwrap(tagged[0])
            continue
        parts.append(part)
        parent = node
        if isinstance(node, type) and issubclass(node, BaseModel):
            node = node.model_fields[part].annotation if part in node.model_fields else None
        elif get_origin(node) in (dict, list):
            node = get_args(node)[-1]
    return parts, parent


def _unwrap(annotation):
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _has_tag(model: type[BaseModel], tag: str) -> bool:
    return any(tag in get_args(model.model_fields[f].annotation) for f in ("kind", "type") if f in model.model_fields)
