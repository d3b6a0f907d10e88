"""Config-as-data helpers shared by every component's pydantic model."""

from trainables.config.base import Frozen, closest_match, look_up_option
from trainables.config.errors import validate_config

__all__ = ["Frozen", "closest_match", "look_up_option", "validate_config"]
