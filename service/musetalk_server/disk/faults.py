"""Disk faults in the project's words: a full disk becomes InsufficientStorage (507).

Writers wrap their writes in `disk_writes`; whatever they had half-written is theirs to
remove (the avatar staging folder, the upload and the MP4 already do so on any error).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import InsufficientStorage

__all__ = ["FULL_DISK_ERRNOS", "disk_writes", "is_full_disk"]

# No space, over the file-size limit (RLIMIT_FSIZE with SIGXFSZ ignored), over quota.
FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def is_full_disk(e: BaseException | None) -> bool:
    return isinstance(e, OSError) and e.errno in FULL_DISK_ERRNOS


@contextmanager
def disk_writes(what: str) -> Iterator[None]:
    """Turn a full disk while writing `what` into InsufficientStorage; other errors pass."""
    try:
        yield
    except OSError as e:
        if is_full_disk(e):
            raise InsufficientStorage(f"the server ran out of storage while writing {what}") from e
        raise
