"""One exception type for bad user input, so the CLI can map it to exit code 2.

Every message names *where* the problem is (a file, a case, or a dotted config field) and *what*
is wrong, so a researcher can fix the input without reading a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ConfigProblem:
    """One problem of a config: the dotted field it is about and what is wrong with it.

    Attributes:
        path: dotted path as the user writes it (``schedule.warmup_epochs``), without variant
            tags; ``""`` when the problem is about the config as a whole.
        message: value and reason (``10 must be less than train.epochs (3)``).
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InputError(ValueError):
    """Bad user input: a file, a case, or a config field.

    Args:
        message: what is wrong, in plain words.
        where: the file path, case id or dotted config field the problem is in (optional).
        problems: the per-field problems the message was rendered from (config validation),
            so callers can attribute them by path without parsing the text.
    """

    def __init__(
        self,
        message: str,
        where: str | Path | None = None,
        problems: Sequence[ConfigProblem] = (),
    ) -> None:
        self.where = str(where) if where is not None else None
        self.message = message
        self.problems = tuple(problems)
        super().__init__(f"{self.where}: {message}" if self.where else message)


class CaseError(InputError):
    """A single case of a dataset cannot be used (missing modality, corrupt file, NaN voxels...).

    Loaders collect these per case so the good cases of a directory still load.
    """

    def __init__(self, case_id: str, message: str, path: str | Path | None = None) -> None:
        self.case_id = case_id
        self.path = str(path) if path is not None else None
        super().__init__(message, where=self.path or case_id)
