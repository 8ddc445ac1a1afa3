"""File-system failures in few words: a full disk, a read-only mount, a lost permission; and
a text file written atomically."""
import os
import re
from pathlib import Path


def reason(error):
    """Why a write failed, briefly: the errno's text ("No space left on device") for an
    OSError and for h5py's RuntimeError, whose message buries "errno = 28" among the C call,
    the buffer address and the offset; else the error's own text."""
    number = getattr(error, "errno", None)
    if number is None:
        found = re.search(r"errno = (\d+)", str(error))
        number = int(found.group(1)) if found else None
    return os.strerror(number) if number else str(error)


def write_atomically(path, text):
    """Write `text` to `path` through a temporary file renamed over it: readers see the old
    file or the new one, never a part (the temporary is removed when the write fails)."""
    partial = Path(f"{path}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    except OSError:
        partial.unlink(missing_ok=True)
        raise
