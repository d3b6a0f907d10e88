"""Turn pydantic validation errors into messages a researcher can act on.

``model.attention_unet.deep_supervison`` in pydantic's terms becomes
``model.deep_supervison: unknown key (allowed: attention, bottleneck_depth, ...; did you mean
'deep_supervision'?)``. Discriminator tags are dropped from the dotted path because users never
write them: they write ``model: {kind: attention_unet, ...}``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from trainables.config.base import closest_match, unknown_option_message
from trainables.errors import ConfigProblem, InputError

M = TypeVar("M", bound=BaseModel)


# pydantic error type of cross-field rules: its ctx carries ConfigProblems (see raise_problems).
CROSS_FIELD = "cross_field"


def validate_config(
    model_cls: type[M], data: Any, source: str | Path | None = None, kind: str = "config"
) -> M:
    """Validate ``data`` into ``model_cls`` or raise one :class:`InputError` listing every problem.

    The error's ``problems`` hold one :class:`ConfigProblem` per line of its message.

    Args:
        model_cls: the pydantic model to build.
        data: a mapping, usually parsed from YAML.
        source: the file the data came from, named in the message.
        kind: what the file is, in the message's header (``invalid search space:``), so one
            file gives one header whichever of its parts is wrong.
    """
    try:
        return model_cls.model_validate(data)
    except ValidationError as err:
        problems = [p for e in err.errors() for p in error_problems(model_cls, e)]
        message = f"invalid {kind}:\n  " + "\n  ".join(map(str, problems))
        raise InputError(message, where=source or None, problems=problems) from None


def raise_problems(problems: Iterable[ConfigProblem]) -> None:
    """Raise the problems of a cross-field rule from a pydantic validator (none: return).

    Paths are relative to the model whose validator raises; :func:`validate_config` prefixes
    them with that model's own path, so a component rule reads ``sampling.empty_slice_drop``.
    """
    found = tuple(problems)
    if found:
        summary = "; ".join(map(str, found))
        raise PydanticCustomError(CROSS_FIELD, "{summary}", {"summary": summary, "problems": found})


def describe_error(model_cls: type[BaseModel], error: Mapping[str, Any]) -> str:
    """The text of one pydantic error dict: ``dotted.path: what is wrong`` (one line each)."""
    return "\n".join(map(str, error_problems(model_cls, error)))


def error_problems(model_cls: type[BaseModel], error: Mapping[str, Any]) -> list[ConfigProblem]:
    """The problems of one pydantic error dict: several for a cross-field rule, else one."""
    path, owner = _user_path(model_cls, error["loc"])
    path = "" if path == "<root>" else path
    if error["type"] == CROSS_FIELD:
        found = (error.get("ctx") or {})["problems"]
        return [ConfigProblem(_join(path, p.path), p.message) for p in found]
    if error["type"].startswith("union_tag_"):  # the problem is the variant's kind field
        path = _join(path, "kind")
    return [ConfigProblem(path, _problem_text(error, owner))]


def _join(prefix: str, path: str) -> str:
    return ".".join(part for part in (prefix, path) if part)


def _problem_text(error: Mapping[str, Any], owner: type[BaseModel] | None) -> str:
    """What is wrong, for every pydantic error type but the cross-field one."""
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        fields = owner.model_fields.items() if owner is not None else ()
        allowed = sorted(info.alias or name for name, info in fields)  # as a file writes them
        hint = closest_match(key, allowed)
        suggestion = f"; did you mean {hint!r}?" if hint else ""
        return f"unknown key (allowed: {', '.join(allowed)}{suggestion})"
    if kind == "union_tag_invalid":
        tags = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
        return unknown_option_message(ctx.get("tag"), tags)
    if kind == "union_tag_not_found":
        return "required field is missing (it selects the variant)"
    if isinstance(value, bool) and kind == "string_type":  # label: off
        word = "on" if value else "off"
        return f"{_yaml_boolean(value)}: quote it to mean the word, e.g. '{word}'"
    if kind in ("literal_error", "enum"):
        raw = str(ctx.get("expected", "")).replace(" or ", ", ")
        expected = [e.strip().strip("'") for e in raw.split(",")]
        return unknown_option_message(value, expected) + _boolean_option_hint(value, expected)
    if kind == "value_error":  # raised by our validators: the message already says it all
        return str(ctx.get("error", error["msg"]))
    if kind == "missing":
        return "required field is missing"
    if kind == "int_from_float":
        return f"must be a whole number (got {_short(value)})"
    return f"{error['msg']} (got {_short(value)})"


def _yaml_boolean(value: bool) -> str:
    return (
        f"YAML reads an unquoted yes/no/on/off/true/false as a boolean (here {str(value).lower()})"
    )


def _boolean_option_hint(value: Any, options: list[str]) -> str:
    """Why a named option got a boolean (``norm: off``), and the quoting where an option is
    one of the words YAML reads so (``mode: 'off'``); nothing for a value that is no boolean."""
    if not isinstance(value, bool):
        return ""
    words = {True: ("yes", "on", "true", "y"), False: ("no", "off", "false", "n")}[value]
    quotable = [o for o in options if o.lower() in words]
    quote = f"; quote it to mean the word: '{quotable[0]}'" if quotable else ""
    return f" ({_yaml_boolean(value)}{quote})"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _user_path(
    model_cls: type[BaseModel], loc: Sequence[Any]
) -> tuple[str, type[BaseModel] | None]:
    """Walk ``loc`` through the model tree: return (dotted path without tags, owning model).

    The owning model is the pydantic class whose field the last element names, used to list the
    allowed keys for an unknown one.
    """
    parts: list[str] = []
    current: Any = model_cls
    owner: type[BaseModel] | None = None
    for item in loc:
        tagged = _member_by_tag(_union_members(current), item)
        if tagged is not None:  # discriminator tag: users never write it in the path
            current = tagged
            owner = tagged
            continue
        current = _optional_model(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            owner = current
            field = current.model_fields.get(str(item))
            parts.append(str(item))
            current = field.annotation if field is not None else None
            continue
        parts.append(str(item))  # list index, dict key, or a plain union branch name
        current = _element_type(current)
    return ".".join(parts) or "<root>", owner


def _optional_model(annotation: Any) -> Any:
    """The model of ``Model | None`` (``train.init``), whose keys an unknown one is listed
    against; any other annotation unchanged."""
    models = [m for m in _union_members(annotation) if m is not type(None)]
    if len(models) == 1 and isinstance(models[0], type) and issubclass(models[0], BaseModel):
        return models[0]
    return annotation


def _union_members(annotation: Any) -> list[Any]:
    """Members of a (possibly Optional, Annotated or nested) union, flattened."""
    annotation = _strip_annotated(annotation)
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return []
    members: list[Any] = []
    for arg in typing.get_args(annotation):
        members.extend(_union_members(arg) or [_strip_annotated(arg)])
    return members


def _strip_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _member_by_tag(members: list[Any], tag: Any) -> type[BaseModel] | None:
    for member in members:
        is_model = isinstance(member, type) and issubclass(member, BaseModel)
        if (
            is_model
            and "kind" in member.model_fields
            and member.model_fields["kind"].default == tag
        ):
            return member
    return None


def _element_type(annotation: Any) -> Any:
    """Type of the elements of a list/tuple/dict annotation, or of the non-None union member."""
    annotation = _strip_annotated(annotation)
    members = [m for m in _union_members(annotation) if m is not type(None)]
    if len(members) == 1:
        annotation = members[0]
    args = typing.get_args(annotation)
    return args[-1] if args else None
