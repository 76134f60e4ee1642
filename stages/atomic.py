"""Files that are either complete or absent: written beside their final name, fsynced, renamed into place."""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """`with atomic_file(p) as f: f.write(...)`: readers of `p` see the old file or the whole new one, never
    half of it. If the block raises, the temporary file is removed; a hard crash can leave a `.*.tmp` file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
