"""One exception type for bad user input, so the CLI can map it to exit code 2.

Every message names *where* the problem is (a file, a case, or a dotted config field) and *what*
is wrong, so a researcher can fix the input without reading a traceback.
"""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input: a file, a case, or a config field.

    Args:
        message: what is wrong, in plain words.
        where: the file path, case id or dotted config field the problem is in (optional).
    """

    def __init__(self, message: str, where: str | Path | None = None) -> None:
        self.where = str(where) if where is not None else None
        self.message = message
        super().__init__(f"{self.where}: {message}" if self.where else message)


class CaseError(InputError):
    """A single case of a dataset cannot be used (missing modality, corrupt file, NaN voxels...).

    Loaders collect these per case so the good cases of a directory still load.
    """

    def __init__(self, case_id: str, message: str, path: str | Path | None = None) -> None:
        self.case_id = case_id
        self.path = str(path) if path is not None else None
        super().__init__(message, where=self.path or case_id)
