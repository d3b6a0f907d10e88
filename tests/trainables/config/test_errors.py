"""Validation messages name the dotted field, the bad value, the allowed values and a suggestion."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import Field, model_validator

from trainables.config import (
    ConfigProblem,
    Frozen,
    look_up_option,
    raise_problems,
    validate_config,
)
from trainables.errors import InputError


class _Attention(Frozen):
    kind: Literal["attention_unet"] = "attention_unet"
    deep_supervision: int = 2
    norm: Literal["batch", "group", "instance"] = "instance"


class _Plain(Frozen):
    kind: Literal["plain_unet"] = "plain_unet"
    filters: tuple[int, ...] = (32,)


class _Sched(Frozen):
    kind: Literal["exponential"] = "exponential"
    gamma: float = 0.985


class _Trial(Frozen):
    model: Annotated[_Attention | _Plain, Field(discriminator="kind")]
    schedule: Annotated[_Sched, Field(discriminator="kind")] | None = None
    epochs: int = 1


def _message(data: dict) -> str:
    with pytest.raises(InputError) as err:
        validate_config(_Trial, data, "study.yaml")
    return str(err.value)


def test_unknown_key_lists_allowed_keys_and_the_closest_one() -> None:
    msg = _message({"model": {"kind": "attention_unet", "deep_supervison": 2}})
    assert msg.startswith("study.yaml: invalid config:")
    assert (
        "model.deep_supervison: unknown key (allowed: deep_supervision, kind, norm; "
        "did you mean 'deep_supervision'?)" in msg
    )


def test_unknown_kind_lists_the_kinds() -> None:
    msg = _message({"model": {"kind": "atention_unet"}})
    assert (
        "model.kind: 'atention_unet' is not one of attention_unet, plain_unet "
        "(did you mean 'attention_unet'?)" in msg
    )


def test_bad_literal_value_and_wrong_type() -> None:
    msg = _message({"model": {"kind": "attention_unet", "norm": "grup"}, "epochs": "many"})
    assert "model.norm: 'grup' is not one of batch, group, instance (did you mean 'group'?)" in msg
    assert "epochs: Input should be a valid integer" in msg and "(got 'many')" in msg


def test_missing_kind_and_optional_union_paths_drop_the_tag() -> None:
    assert "model.kind: required field is missing" in _message({"model": {}})
    msg = _message(
        {"model": {"kind": "plain_unet"}, "schedule": {"kind": "exponential", "gama": 1}}
    )
    assert "schedule.gama: unknown key (allowed: gamma, kind; did you mean 'gamma'?)" in msg


def test_look_up_option() -> None:
    assert look_up_option("group", ["batch", "group"], "model.norm") == "group"
    with pytest.raises(
        InputError,
        match=r"model.norm: 'grop' is not one of batch, group \(did you mean 'group'\?\)",
    ):
        look_up_option("grop", ["batch", "group"], "model.norm")


class _Window(Frozen):
    low: int = 0
    high: int = 1

    @model_validator(mode="after")
    def _ordered(self) -> _Window:
        raise_problems(
            [ConfigProblem("high", f"{self.high} must be above low ({self.low})")]
            if self.high <= self.low
            else []
        )
        return self


class _Outer(Frozen):
    window: _Window = _Window()
    epochs: int = 1

    @model_validator(mode="after")
    def _fits(self) -> _Outer:
        raise_problems(
            ConfigProblem(path, f"{value} must be at most epochs ({self.epochs})")
            for path, value in (("window.low", self.window.low), ("window.high", self.window.high))
            if value > self.epochs
        )
        return self


def test_problems_are_structured_and_cross_field_paths_are_prefixed() -> None:
    with pytest.raises(InputError) as err:
        validate_config(_Outer, {"window": {"low": 3, "high": 2}, "epochs": "x"}, "s.yaml")
    problems = err.value.problems
    assert [p.path for p in problems] == ["window.high", "epochs"]
    assert problems[0] == ConfigProblem("window.high", "2 must be above low (3)")
    assert str(err.value) == "s.yaml: invalid config:\n  " + "\n  ".join(map(str, problems))
    with pytest.raises(InputError) as err:  # one validator, several problems
        validate_config(_Outer, {"window": {"low": 4, "high": 5}, "epochs": 3})
    assert [str(p) for p in err.value.problems] == [
        "window.low: 4 must be at most epochs (3)",
        "window.high: 5 must be at most epochs (3)",
    ]


class _Switch(Frozen):
    mode: Literal["on", "off", "auto"] = "auto"
    label: str = "x"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (  # an option that is one of YAML's boolean words: quote that word
            {"mode": False},
            "mode: False is not one of on, off, auto (YAML reads an unquoted yes/no/on/off/true/"
            "false as a boolean (here false); quote it to mean the word: 'off')",
        ),
        (  # a free text field: the word matches the boolean read (was always 'off')
            {"label": True},
            "label: YAML reads an unquoted yes/no/on/off/true/false as a boolean (here true): "
            "quote it to mean the word, e.g. 'on'",
        ),
    ],
)
def test_a_yaml_boolean_is_explained_with_the_word_to_quote(data: dict, expected: str) -> None:
    with pytest.raises(InputError) as err:
        validate_config(_Switch, data)
    assert err.value.problems is not None
    assert [str(p) for p in err.value.problems] == [expected]
