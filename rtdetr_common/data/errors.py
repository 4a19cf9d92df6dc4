"""Warning and exception types of the data pipeline."""


class DataWarning(UserWarning):
    """Something in the data was skipped (unreadable image, bad annotation)."""


class SampleUnavailable(Exception):
    """A dataset item cannot be produced (e.g. its image file is unreadable).

    The loader leaves such items out of their batch and carries on."""
