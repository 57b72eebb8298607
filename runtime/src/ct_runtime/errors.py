"""The one exception an app catches, and the warning bad metadata gives."""


class RuntimeModelError(Exception):
    """The file cannot be loaded or run by its runtime (the message is one line with the reason)."""


class MetadataWarning(UserWarning):
    """Metadata (sidecar or the file's own) was ignored, whole or a field; the model uses what the file declares."""


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0][:300]
