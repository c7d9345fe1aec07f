"""The exceptions of the mithril package.

Every failure the native core reports arrives as a subclass of
:class:`mithril.Error` chosen by its code (``error.code``); the message names
the file, the tensor or the chunk and what was expected. Where a built-in
exception means the same thing, the class derives from it as well, so
``except FileNotFoundError`` and ``except ValueError`` keep working.
"""
from __future__ import annotations

__all__ = [
    "Error",
    "IoError",
    "CorruptError",
    "UnsupportedError",
    "InvalidArgumentError",
    "NotFoundError",
    "ExistsError",
    "RemoteError",
    "InternalError",
    "TensorNotFoundError",
]


class Error(Exception):
    """Base class of every error raised by mithril."""

    #: Stable name of the error code ("io", "corrupt", ...), as in the C++ core.
    code: str = "error"

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.code


class IoError(Error, OSError):
    """The operating system refused a read, write, open or rename."""

    code = "io"


class CorruptError(Error):
    """Input fails a checksum, a digest or a structural rule."""

    code = "corrupt"


class UnsupportedError(Error):
    """Well-formed, but not something this version handles."""

    code = "unsupported"


class InvalidArgumentError(Error, ValueError):
    """The caller asked for something impossible (bad level, wrong base, ...)."""

    code = "invalid_argument"


class NotFoundError(Error, FileNotFoundError):
    """A named file (or other thing) does not exist."""

    code = "not_found"


class ExistsError(Error, FileExistsError):
    """Refusing to overwrite an existing file (pass force=True)."""

    code = "exists"


class RemoteError(Error, ConnectionError):
    """A remote tier could not be reached."""

    code = "remote_unavailable"


class InternalError(Error, RuntimeError):
    """A bug in mithril: an invariant of its own was broken. Please report it."""

    code = "internal"


class TensorNotFoundError(NotFoundError, KeyError):
    """A checkpoint has no tensor of that name (also a KeyError)."""

    code = "not_found"

    def __str__(self) -> str:  # KeyError would quote the message
        return Error.__str__(self)


# Used by the native translator (python/bindings/module.cpp): code -> class.
_BY_CODE: dict[str, type[Error]] = {
    cls.code: cls
    for cls in (IoError, CorruptError, UnsupportedError, InvalidArgumentError, NotFoundError, ExistsError,
                RemoteError, InternalError)
}
