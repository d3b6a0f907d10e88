"""How a study's trials are chosen and scheduled: the ``sample:`` ranges Optuna draws from,
the ``search:`` (grid or Optuna) and the ``scheduler:`` (FIFO or ASHA) of a space file
(:class:`orchestrator.space.SpaceFile`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from trainables.config import ConfigProblem, Frozen, raise_problems
from trainables.config.base import Seed


class SampleRange(Frozen):
    """One sampled axis: exactly one of the four forms.

    Attributes:
        loguniform: [low, high], both > 0, sampled uniformly in log space.
        uniform: [low, high].
        int: [low, high], integers, both ends included.
        choice: a list of values.
    """

    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    int_: tuple[int, int] | None = Field(default=None, alias="int")
    choice: list[Any] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> SampleRange:
        given = [k for k, v in self._forms().items() if v is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of loguniform, uniform, int, choice "
                f"(got {', '.join(given) or 'none'})"
            )
        bounds = self.loguniform or self.uniform or self.int_
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"{given[0]} needs low < high, got {list(bounds)}")
        if self.choice is not None and any(isinstance(c, dict) for c in self.choice):
            raise ValueError(
                "choice values must be plain values or lists; vary sections with variants"
            )
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform needs positive bounds, got {list(self.loguniform)}")
        choice = self.choice or []
        if any(a == b for i, a in enumerate(choice) for b in choice[i + 1 :]):  # 1 == true too
            raise ValueError(f"choice repeats a value: {choice} (Optuna would weigh it twice)")
        return self

    def _forms(self) -> dict[str, Any]:
        return {
            "loguniform": self.loguniform,
            "uniform": self.uniform,
            "int": self.int_,
            "choice": self.choice,
        }

    @property
    def form(self) -> str:
        """Which of loguniform / uniform / int / choice this range is."""
        return next(k for k, v in self._forms().items() if v is not None)

    def written_values(self) -> list[Any]:
        """The bounds or choices as the file writes them."""
        if self.choice is not None:
            return list(self.choice)
        return list(self.loguniform or self.uniform or self.int_ or ())

    def probe_values(self) -> list[Any]:
        """Values checked against the trial config: the choices, or the bounds and, for the
        continuous forms, one value between them that is not a whole number (a ``uniform`` range
        on an integer field such as ``train.epochs`` must fail here, not in every trial)."""
        if self.choice is not None:
            return list(self.choice)
        if self.int_ is not None:
            return list(self.int_)
        low, high = self.loguniform or self.uniform or (0.0, 0.0)
        inside = low * (high / low) ** 0.371 if self.loguniform else low + 0.371 * (high - low)
        return [low, high, inside]


class GridSearch(Frozen):
    """Every cell x seed, once (FIFO by default)."""

    kind: Literal["grid"] = "grid"


class OptunaSearch(Frozen):
    """Optuna's TPE over the ``sample`` ranges (and the cells), ``num_samples`` suggestions.

    Each suggestion runs ``seeds`` times; Optuna sees the mean over its seeds. At most
    ``max_concurrent`` trials run at once (default: 4, or ``seeds`` if more): fewer parallel
    trials let each suggestion learn from more finished ones.
    """

    kind: Literal["optuna"] = "optuna"
    num_samples: int = Field(ge=1)
    seed: Seed = 0  # Optuna's sampler seed (numpy takes 0..2^32-1)
    max_concurrent: int | None = Field(default=None, ge=1)


Search = Annotated[GridSearch | OptunaSearch, Field(discriminator="kind")]


class FifoScheduler(Frozen):
    """Run every trial to its end (paper grids)."""

    kind: Literal["fifo"] = "fifo"


class AshaScheduler(Frozen):
    """Asynchronous successive halving: stop the worst trials early (searches).

    Attributes:
        grace_period: epochs every trial gets before it can be stopped.
        reduction_factor: keep 1/reduction_factor of the trials at each rung.
        max_t: epochs of the last rung (default: the base config's ``train.epochs``).
    """

    kind: Literal["asha"] = "asha"
    grace_period: int = Field(default=1, ge=1)
    reduction_factor: float = Field(default=3.0, gt=1)
    max_t: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _grace_before_the_last_rung(self) -> AshaScheduler:
        # Ray builds no rung then, so ASHA would silently stop nothing.
        if self.max_t is not None and self.grace_period >= self.max_t:
            why = f"{self.grace_period} must be less than max_t ({self.max_t})"
            raise_problems([ConfigProblem("grace_period", why)])
        return self


Scheduler = Annotated[FifoScheduler | AshaScheduler, Field(discriminator="kind")]
