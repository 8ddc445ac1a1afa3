"""File-system failures in few words: a full disk, a read-only mount, a lost permission."""
import os
import re


def reason(error):
    """Why a write failed, briefly: the errno's text ("No space left on device") for an
    OSError and for h5py's RuntimeError, whose message buries "errno = 28" among the C call,
    the buffer address and the offset; else the error's own text."""
    number = getattr(error, "errno", None)
    if number is None:
        found = re.search(r"errno = (\d+)", str(error))
        number = int(found.group(1)) if found else None
    return os.strerror(number) if number else str(error)
