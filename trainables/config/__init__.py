"""Config-as-data helpers shared by every component's pydantic model."""

from trainables.config.base import Frozen, closest_match, look_up_option
from trainables.config.errors import raise_problems, validate_config
from trainables.errors import ConfigProblem

__all__ = [
    "ConfigProblem",
    "Frozen",
    "closest_match",
    "look_up_option",
    "raise_problems",
    "validate_config",
]
