"""The README's "Commands" block against the real parser: every option it shows exists on its
verb, and every option a verb has is shown, so the block cannot drift from the CLI."""

from __future__ import annotations

import argparse
import re

from ablate_sweep_helpers import REPO

from orchestrator.cli import build_parser

OPTION = re.compile(r"--[a-z][a-z-]*")
TWO_WORD_VERBS = ("data",)


def _readme_block() -> list[str]:
    text = (REPO / "README.md").read_text()
    start = text.index("## Commands\n\n```\n") + len("## Commands\n\n```\n")
    return text[start : text.index("```\n", start)].splitlines()


def _documented() -> dict[str, set[str]]:
    """Verb ("sweep", "data prepare"; "" for the top level) -> options the block shows for it.
    A line ``(a, b, c also take [--x U] ...)`` gives --x to the verbs it names."""
    shown: dict[str, set[str]] = {}
    verb = ""
    for line in _readme_block():
        words = line.split()
        if line.startswith("ablate "):
            verb = " ".join(words[1:3]) if words[1] in TWO_WORD_VERBS else words[1]
            verb = "" if verb.startswith("--") else verb
        shared = re.match(r"\s*\(([a-z, ]+) also take", line)
        for name in shared.group(1).replace(",", " ").split() if shared else [verb]:
            shown.setdefault(name, set()).update(OPTION.findall(line.split("also take")[-1]))
    return shown


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Verb -> its parser, as in :func:`_documented` ("" is the top-level parser)."""

    def children(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for action in parser._actions:  # argparse keeps subparsers only here
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    top = build_parser()
    out = {"": top}
    for name, sub in children(top).items():
        nested = children(sub)
        out |= {f"{name} {child}": p for child, p in nested.items()} if nested else {name: sub}
    return out


def _options(parser: argparse.ArgumentParser) -> list[list[str]]:
    """Each optional argument's spellings (``--lesion-wise``/``--no-lesion-wise`` together)."""
    return [
        [o for o in action.option_strings if o.startswith("--")]
        for action in parser._actions
        if action.option_strings and not isinstance(action, argparse._HelpAction)
    ]


def test_every_verb_of_the_parser_is_in_the_block() -> None:
    assert set(_parsers()) == set(_documented())


def test_every_option_shown_exists_and_every_option_is_shown() -> None:
    shown = _documented()
    for verb, parser in _parsers().items():
        spellings = _options(parser)
        known = {o for group in spellings for o in group}
        assert shown[verb] <= known, f"ablate {verb}: shown but not parsed: {shown[verb] - known}"
        unshown = [group for group in spellings if not set(group) & shown[verb]]
        assert not unshown, f"ablate {verb}: parsed but not shown: {unshown}"
