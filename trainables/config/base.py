"""Base class and helpers for the frozen, ``extra="forbid"`` config models.

Every component (dataset, preprocessing, model, loss, optimizer...) has one pydantic model that
inherits :class:`Frozen`. Variants are selected by a ``kind`` literal inside a discriminated
union, never by import strings. Validation errors are turned into messages that name the dotted
field, the bad value, the allowed values and the closest match
(see :mod:`trainables.config.errors`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from trainables.errors import InputError


class Frozen(BaseModel):
    """Immutable config node that rejects unknown keys and non-finite numbers (``.inf``,
    ``.nan``, and ``1.0e400``, which YAML reads as a string that float() makes inf)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False
    )


# A random seed: numpy's generators and torch.manual_seed take 0 .. 2**32 - 1 alike.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


# One similarity cut-off for every "did you mean" in the project (difflib ratio, 0..1): 0.5
# still catches a dropped or swapped letter in short names ('grup' -> 'group') without
# suggesting unrelated ones.
CLOSE_MATCH_CUTOFF = 0.5


def closest_match(value: Any, allowed: Iterable[Any]) -> str | None:
    """Return the allowed option closest to ``value`` (by spelling), or None if nothing is close.

    The only place that decides what "close" means: config keys, kinds, metric names, modality
    names and paper labels all get their suggestions from here.
    """
    options = [str(a) for a in allowed]
    matches = difflib.get_close_matches(str(value), options, n=1, cutoff=CLOSE_MATCH_CUTOFF)
    return matches[0] if matches else None


def did_you_mean(value: Any, allowed: Iterable[Any]) -> str:
    """`` (did you mean 'group'?)`` for the closest allowed option, or ``""`` if none is close."""
    hint = closest_match(value, allowed)
    return f" (did you mean {hint!r}?)" if hint else ""


def look_up_option(value: Any, allowed: Iterable[Any], field: str) -> Any:
    """Return ``value`` if it is one of ``allowed``; otherwise raise an :class:`InputError`.

    The message lists the allowed values and suggests the closest one, like MONAI's
    ``look_up_option``: ``model.norm: 'grup' is not one of batch, group, instance (did you mean
    'group'?)``.
    """
    options = list(allowed)
    if value in options:
        return value
    raise InputError(unknown_option_message(value, options), where=field)


def unknown_option_message(value: Any, options: Iterable[Any]) -> str:
    """``'grup' is not one of batch, group, instance (did you mean 'group'?)``."""
    options = [str(o) for o in options]
    return f"{value!r} is not one of {', '.join(options)}{did_you_mean(value, options)}"
