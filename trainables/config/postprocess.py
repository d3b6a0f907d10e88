"""``validation.test_postprocess``: how the test pass and ``ablate predict`` clean a label map.

Its own module because ``largest_component: auto`` makes it more than two switches: nnU-Net's
rule (:mod:`trainables.engine.postprocess_decide`) picks the steps from the run's validation
cases after its last epoch, and the run's saved model carries the steps it picked.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from trainables.config.base import Frozen, unknown_option_message

_BOOL = TypeAdapter(bool)
# Every region name of every label scheme (trainables.data.labels): BraTS's, then binary's.
REGION_NAMES = ("wt", "tc", "et", "fg")


class PostprocessConfig(Frozen):
    """Post-processing of the predicted label map in the test pass and ``ablate predict``
    (:mod:`trainables.engine.postprocess`); validation, which selects the epoch, sees the
    raw map. Off by default.

    Attributes:
        largest_component: keep only the largest 26-connected component of the foreground
            (nnU-Net's "remove all but the largest component"): drops scattered false
            positives, and a second lesion with them. ``auto``: nnU-Net's rule decides this
            and ``largest_component_regions`` after the last epoch, on the run's validation
            cases predicted as the test pass predicts (whole volumes): the foreground step if
            it raises the mean Dice over regions and lowers no region's, then each region's
            step if it raises that region's Dice. The saved model carries the decision, and
            the test pass, ``ablate test`` and ``ablate predict`` apply it. It costs one more
            prediction pass over the validation cases (with ``test_tta``'s mirroring).
        largest_component_regions: regions, in this order, each cut to its largest component
            after the foreground step (nnU-Net's per-class step; a region's other components
            become background): ``wt``, ``tc``, ``et`` for BraTS labels, ``fg`` for binary.
        min_et_voxels: an enhancing-tumour prediction of fewer voxels than this becomes
            necrosis (BraTS labels only; Isensee et al.'s post-processing); 0: off. Applied
            before the largest-component steps (and before ``auto`` decides them).
    """

    largest_component: bool | Literal["auto"] = False
    largest_component_regions: tuple[str, ...] = ()
    min_et_voxels: int = Field(default=0, ge=0)

    @field_validator("largest_component", mode="before")
    @classmethod
    def _switch_or_auto(cls, value: object) -> object:
        # a boolean as every bool field reads one ("true", 1...), else one message for the
        # union instead of pydantic's one per branch
        if value == "auto":
            return value
        try:
            return _BOOL.validate_python(value)
        except ValidationError:
            raise ValueError(unknown_option_message(value, ("true", "false", "auto"))) from None

    @field_validator("largest_component_regions")
    @classmethod
    def _known_regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in REGION_NAMES:
                raise ValueError(unknown_option_message(name, REGION_NAMES))
        if len(set(value)) != len(value):
            raise ValueError(f"{list(value)} names a region twice")
        return value

    @model_validator(mode="after")
    def _auto_decides_the_regions(self) -> PostprocessConfig:
        if self.largest_component == "auto" and self.largest_component_regions:
            raise ValueError(
                "largest_component 'auto' decides largest_component_regions itself: leave "
                "them empty, or set largest_component to true or false"
            )
        return self

    @property
    def decided(self) -> bool:
        """False while ``largest_component`` is ``auto`` (no run has decided it yet)."""
        return self.largest_component != "auto"
