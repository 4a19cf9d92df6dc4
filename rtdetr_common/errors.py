"""The project's own error types, shared by both twins.

Every failure caused by what a user hands in (a file, an annotation, a target, an
image, a checkpoint) or by training going non-finite ends in a subclass of
``RtdetrError`` whose message is one line naming the file, item or step at fault.
The tools print that line and exit with status 2 instead of a library traceback.
"""


class RtdetrError(Exception):
    """Base of the project's errors: a one-line message naming what is at fault."""


class InputError(RtdetrError, ValueError):
    """Something handed in by the user cannot be used."""


class AnnotationError(InputError):
    """An annotation file that is not a usable COCO file (not JSON, missing keys, wrong types)."""


class ImageError(InputError):
    """An image file that cannot be read or decoded."""


class TargetError(InputError):
    """Training targets outside the model's classes or not in the expected box format."""


class NonFiniteLossError(RtdetrError, FloatingPointError):
    """A training step produced a NaN or infinite loss; ``losses`` holds its terms."""

    def __init__(self, message, losses=None):
        super().__init__(message)
        self.losses = dict(losses or {})


def reason(error):
    """``error`` as one line: its type and its message with line breaks folded."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"
