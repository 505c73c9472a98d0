"""Exception types. Every error raised for bad user input names the file and the problem."""

from __future__ import annotations

from os import PathLike


class MedsegError(Exception):
    """Base class of every error medseg raises on purpose (the CLI prints these without a traceback)."""


class InvalidInputError(MedsegError, ValueError):
    """A file (image, mask, manifest, checkpoint) cannot be used.

    Args:
        path: the offending file, or ``None`` for in-memory data.
        problem: what is wrong, in words a user can act on.
    """

    def __init__(self, path: str | PathLike[str] | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class UnknownModalityError(MedsegError, KeyError):
    """A modality name that a component configured for a fixed set of modalities does not know."""

    def __init__(self, name: str, known: list[str] | tuple[str, ...]) -> None:
        self.name = name
        self.known = tuple(known)
        super().__init__(f"unknown modality {name!r}; known: {', '.join(self.known) or '(none)'}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class InputWarning(UserWarning):
    """Something about an input file the user should know (it was still read): the message starts with the file.
    Warnings that libraries raise while a reader decodes a file come back as this, naming the file."""
