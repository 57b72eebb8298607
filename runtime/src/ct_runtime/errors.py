"""The one exception an app catches."""


class RuntimeModelError(Exception):
    """The file cannot be loaded or run by its runtime (the message is one line with the reason)."""
