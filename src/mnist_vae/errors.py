"""The errors a user can fix, and how an exception becomes one line.

The package raises these with a message that says what is wrong. Whoever runs the code adds how to fix
it: the stage runner (pipeline/stage.py) names the `dvc repro` that makes a missing or stale file, the
`mnist-vae` command names its options; a Python caller reads the message and the `path`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional, Union

ONE_LINE = 300  # characters of a wrapped exception's message kept in a one-line error


class UserError(Exception):
    """Something the user can fix: bad params, a missing or corrupt file, an unreachable source."""


class FileProblem(UserError):
    """A file the code reads is missing, unreadable (corrupt, truncated, foreign) or stale (made from other
    inputs than those at hand). `path` names it, so the caller can say which command makes it again."""

    def __init__(self, path: Union[str, os.PathLike], problem: Literal["missing", "unreadable", "stale"],
                 message: Optional[str] = None):
        self.path, self.problem = Path(path), problem
        super().__init__(message or f"{path} is missing")


def one_line(exc: BaseException, limit: int = ONE_LINE) -> str:
    """An exception's message on one line (whitespace collapsed, at most `limit` characters), or its type's
    name when it says nothing."""
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
