"""One shared TensorRT timing cache per (GPU model, TensorRT version, CUDA version), reused and extended by builds.

A timing cache holds the measured speed of each tactic TensorRT tried. Sharing it makes the second build of a
sweep much faster, but it is valid only for the GPU, TensorRT and CUDA that measured it, so the store keeps one
per identity: `<cache.dir>/shared/tensorrt_timing_caches/<sha256 of the identity>/timing.cache`, with
`identity.json` beside it.

A build never reads or writes the shared file directly:
- `open()` copies it, under the store's file lock, into the build's scratch directory (a concurrent writer never
  hands a build half a file). The build loads that snapshot and saves its own, extended cache elsewhere.
- `publish()` takes the lock again. If nobody published since the snapshot, the build's cache replaces the shared
  one (it already contains everything the snapshot had). If someone did, the two are merged with TensorRT's
  `ITimingCache.combine`; with no merge function (trtexec without TensorRT's Python bindings) the newer cache
  wins and the other build's additions are lost, which costs time in a later build, never correctness.
Every write goes to a temporary file that is renamed into place.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock

from stages.api import file_sha256
from stages.atomic import atomic_file

LOADED, CREATED, OFF = "loaded", "created", "off"  # what `build_timing_cache` records
SHARED_DIR = "tensorrt_timing_caches"  # stages.api.shared_dir: under the artifact cache's directory
FILE = "timing.cache"

Combine = Callable[[bytes, bytes], bytes]  # (shared, built) -> merged


@dataclass
class Session:
    load: str | None         # snapshot for the build to load; None: start from an empty cache
    save: str                # where the build writes its cache
    status: str              # LOADED | CREATED
    base_sha256: str | None  # the shared file when the snapshot was taken (None: there was none)


class Store:
    def __init__(self, root: str | Path, identity: dict):
        self.identity = identity
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        self.dir = Path(root) / key
        self.file = self.dir / FILE
        # Not "<file>.lock": Polygraphy's own LockFile uses that name, and two flock()s on one file in one
        # process would wait for each other.
        self.lock = FileLock(str(self.dir / "store.lock"))

    def open(self, scratch: Path) -> Session:
        self.dir.mkdir(parents=True, exist_ok=True)
        identity = self.dir / "identity.json"
        if not identity.exists():
            _write_atomic(identity, json.dumps(self.identity, indent=2, sort_keys=True).encode())
        Path(scratch).mkdir(parents=True, exist_ok=True)
        save = str(Path(scratch) / "timing.cache.out")
        with self.lock:
            if self.file.is_file() and self.file.stat().st_size:
                snapshot = Path(scratch) / "timing.cache.in"
                shutil.copyfile(self.file, snapshot)
                return Session(str(snapshot), save, LOADED, file_sha256(snapshot))
        return Session(None, save, CREATED, None)

    def publish(self, session: Session, combine: Combine | None) -> str:
        """Fold the build's cache into the shared one; returns what happened (for the runs table)."""
        built = Path(session.save)
        if not built.is_file() or not built.stat().st_size:
            return "nothing to publish"
        with self.lock:
            current = file_sha256(self.file) if self.file.is_file() else None
            if current == session.base_sha256:
                data, outcome = built.read_bytes(), "replaced"
            elif combine is None:
                data, outcome = built.read_bytes(), "replaced (changed meanwhile; no merge without TensorRT)"
            else:
                try:
                    data, outcome = combine(self.file.read_bytes(), built.read_bytes()), "merged"
                except Exception as err:  # noqa: BLE001 - the engine is built; a lost cache update only costs time
                    return f"kept the shared cache (merge failed: {type(err).__name__}: {err})"
            _write_atomic(self.file, data)
        return outcome


def trt_combine(trt) -> Combine:
    """Merge two serialized timing caches with TensorRT (needs the builder library)."""
    def combine(shared: bytes, built: bytes) -> bytes:
        builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
        builder_config = builder.create_builder_config()
        timing_cache = builder_config.create_timing_cache(built)
        other = builder_config.create_timing_cache(shared)
        if not timing_cache.combine(other, False):  # ignore_mismatch=False: both must come from this identity
            raise RuntimeError("ITimingCache.combine refused the shared cache")
        return bytes(memoryview(timing_cache.serialize()))
    return combine


def _write_atomic(path: Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)
