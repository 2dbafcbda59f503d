"""The exceptions of sgraf: every failure is a ``SgrafError``.

Each subclass mirrors a kind of the Rust library's ``sgraf::Error``.
"""


class SgrafError(Exception):
    """Any failure of sgraf (never a panic or an abort)."""


class InvalidInputError(SgrafError, ValueError):
    """Input that cannot be used: a wrong dtype, ndim or shape (the message
    names the expected and the found), an empty query or caption list, a
    bad argument."""


class ModelError(SgrafError):
    """A model folder or Hugging Face Hub id that is not a model, or whose
    weights or configuration cannot be used (a hostile folder is refused
    here)."""


class DataError(SgrafError):
    """A features file, a ``.npy`` array or a precomp folder."""


class TokenizerError(SgrafError):
    """A caption or a vocabulary."""


class DetectorError(SgrafError):
    """A detector folder or configuration."""


class ImageError(SgrafError):
    """A photo that cannot be decoded."""


class ComputeError(SgrafError):
    """The tensor computation itself (or a device that cannot be opened)."""


class FileError(SgrafError, OSError):
    """A file or folder that cannot be read or written."""


class InternalError(SgrafError):
    """A bug in sgraf, caught at the boundary instead of aborting Python."""


__all__ = [
    "SgrafError",
    "InvalidInputError",
    "ModelError",
    "DataError",
    "TokenizerError",
    "DetectorError",
    "ImageError",
    "ComputeError",
    "FileError",
    "InternalError",
]
