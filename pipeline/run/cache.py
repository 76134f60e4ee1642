"""Content-addressed artifact cache (an "action cache" in the Bazel/DVC sense).

Every pipeline stage describes what it is about to do as a JSON-able ``key_spec``
(stage name, stage version, parameters, digests of its inputs, environment).
The sha256 of that spec's canonical JSON is the entry's key; the entry holds the
files the stage produced plus a ``manifest.json`` recording each file's sha256
and size, so a later run can both skip the work and prove the files are intact.

Layout under ``root``::

    entries/<key[:2]>/<key>/   artifact files + manifest.json (immutable once there)
    tmp/<key>.<pid>.<uuid>/    entries being built
    locks/<key>.lock           one file lock per key
    quarantine/<key>-<utc>/    corrupt entries, moved aside (kept as evidence)
    shared/<name>/             state stages keep across builds (stages.api.shared_dir), not entries

Crash safety: an entry is built in ``tmp/`` and published with a single
``os.rename`` after its manifest has been written and fsynced, so a process
killed at any point leaves either nothing or a complete entry, never half of
one.  Published files are read-only. A read checks every file's size and mtime
against the manifest and re-hashes a file that differs (``verify="full"``
re-hashes everything), so corruption or tampering is caught and the entry
rebuilt instead of being trusted, without hashing gigabytes on every hit.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePath
from typing import Any, Callable

from filelock import FileLock, Timeout

__all__ = [
    "Cache",
    "CacheError",
    "CacheResult",
    "canonical_json",
    "digest",
    "file_sha256",
]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
READ_ONLY = 0o444  # published artifact files
VERIFY_MODES = ("fast", "full")  # on a hit: size and mtime, re-hashing only what changed | re-hash everything
_CHUNK = 1 << 20  # 1 MiB
# Temp dirs of dead processes older than this are swept when a Cache is created.
STALE_TMP_AGE_S = 3600.0
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_TMP_RE = re.compile(r"^(?P<key>[0-9a-f]{64})\.(?P<pid>\d+)\.[0-9a-f]{32}$")


class CacheError(Exception):
    """A build produced something the cache cannot store (bad info, symlinks...)."""


# --------------------------------------------------------------------------- hashing


def _json_default(obj: Any) -> Any:
    # Only types with one obvious, stable text form. Anything else raises instead of
    # falling back to str(): a repr with a memory address would never hit, and a
    # lossy str() could make two different specs share a key.
    if isinstance(obj, PurePath):
        return obj.as_posix()
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=canonical_json)
    raise TypeError(
        f"cannot encode {type(obj).__name__} for a cache key; convert it to str/number/list/dict first"
    )


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} appears twice once converted to JSON (e.g. 1 and '1')")
        out[k] = v
    return out


def canonical_json(obj: Any) -> str:
    """Stable JSON text for ``obj``: sorted keys, no whitespace, Paths as posix strings.

    The value is round-tripped through JSON first so that what gets hashed is exactly
    what a manifest stores and reloads (int dict keys become strings, tuples lists).
    """
    plain = json.loads(json.dumps(obj, default=_json_default), object_pairs_hook=_no_duplicate_keys)
    return json.dumps(plain, sort_keys=True, separators=(",", ":"))


def digest(obj: Any) -> str:
    """Full (64-hex) sha256 of ``canonical_json(obj)``."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- small helpers


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _walk_files(directory: Path) -> list[tuple[str, Path]]:
    """(relative posix path, absolute path) of everything under ``directory`` except the
    top-level manifest, sorted.  Directories are descended, never followed as links."""
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        # os.walk lists symlinks to directories in dirnames but does not descend
        # them; report them so they are rejected like any other non-file.
        names = filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in names:
            full = Path(dirpath, name)
            rel = full.relative_to(directory).as_posix()
            if rel != MANIFEST:
                found.append((rel, full))
    return sorted(found)


def _hash_and_sync(path: Path) -> tuple[str, int]:
    # fsync each artifact before the manifest is written, so after a power loss a
    # published entry is not a manifest pointing at unflushed data.
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
        os.fsync(f.fileno())
    return h.hexdigest(), size


def _describe_files(directory: Path) -> dict[str, dict[str, Any]]:
    """Each artifact's digest, size and mtime, after making it read-only: a published entry is never written
    through (DVC does the same), and an untouched file keeps the size and mtime recorded here."""
    files = {}
    for rel, full in _walk_files(directory):
        if full.is_symlink() or not full.is_file():
            raise CacheError(f"{rel}: artifacts must be regular files (no symlinks or special files)")
        sha, size = _hash_and_sync(full)
        os.chmod(full, READ_ONLY)
        files[rel] = {"sha256": sha, "size": size, "mtime_ns": full.stat().st_mtime_ns}
    return files


def _fsync_dir(path: Path) -> None:
    # Makes a rename durable; not every platform/filesystem allows opening a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_manifest(directory: Path, manifest: dict) -> dict:
    """Write manifest.json (fsynced) and return it as it will read back."""
    try:
        text = json.dumps(manifest, indent=2, sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as e:
        raise CacheError(f"build info is not JSON-serialisable: {e}") from e
    with open(directory / MANIFEST, "w", encoding="utf-8") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(directory / MANIFEST, READ_ONLY)
    return json.loads(text)


def _build_manifest(key: str, key_spec: dict, build: Callable[[Path], dict | None], directory: Path) -> dict:
    """Run ``build`` into ``directory`` and write its manifest last. Returns the manifest."""
    t0 = time.monotonic()
    info = build(directory)
    duration = time.monotonic() - t0
    if info is not None and not isinstance(info, dict):
        raise CacheError(f"build must return a dict or None, got {type(info).__name__}")
    manifest = {
        "key": key,
        "key_spec": json.loads(canonical_json(key_spec)),
        "files": _describe_files(directory),
        "info": info,
        "created": _utc_now().isoformat(),
        "duration_s": round(duration, 6),
    }
    return _write_manifest(directory, manifest)


def _safe_name(label: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_")
    return "artifact" if name in ("", ".", "..") else name


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there; never guess.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: exists, owned by someone else
        return True
    return True


def _rmtree_quiet(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def verify_entry(entry: Path, key: str, full: bool = True) -> tuple[dict | None, list[str]]:
    """Check an entry directory against its manifest.

    ``full``: re-hash every file. Otherwise a file whose size and mtime are those the manifest recorded is
    taken as intact (nothing can have written it without changing its mtime short of resetting it on
    purpose), and only a file that differs is re-hashed. Returns ``(manifest, problems)``; the entry is good
    iff ``problems`` is empty.
    """
    mpath = entry / MANIFEST
    if not mpath.is_file():
        return None, [f"{MANIFEST} missing"]
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return None, [f"{MANIFEST} unreadable: {e}"]
    if not isinstance(manifest, dict):
        return None, [f"{MANIFEST} is not an object"]
    if manifest.get("key") != key:
        return manifest, [f"{MANIFEST} key mismatch ({str(manifest.get('key'))[:12]})"]
    files = manifest.get("files")
    if not isinstance(files, dict):
        return manifest, [f"{MANIFEST} has no 'files' table"]

    problems = []
    for rel, meta in sorted(files.items()):
        problems += _check_file(entry, rel, meta, full)
    on_disk = {rel for rel, _ in _walk_files(entry)}
    problems += [f"{rel}: unexpected file" for rel in sorted(on_disk - set(files))]
    return manifest, problems


def _check_file(entry: Path, rel: str, meta: Any, full: bool = True) -> list[str]:
    parts = PurePath(rel).parts
    if PurePath(rel).is_absolute() or ".." in parts or not parts:
        return [f"{rel}: bad path in manifest"]
    if not isinstance(meta, dict) or "sha256" not in meta or "size" not in meta:
        return [f"{rel}: bad manifest record"]
    path = entry / rel
    if path.is_symlink() or not path.is_file():
        return [f"{rel}: missing" if not path.exists() else f"{rel}: not a regular file"]
    stat = path.stat()
    if stat.st_size != meta["size"]:
        return [f"{rel}: size {stat.st_size} != {meta['size']}"]
    if not full and stat.st_mtime_ns == meta.get("mtime_ns"):
        return []
    if file_sha256(path) != meta["sha256"]:
        return [f"{rel}: sha256 mismatch"]
    return []


# --------------------------------------------------------------------------- public types


@dataclass
class CacheResult:
    path: Path  # directory holding the artifact files
    outcome: str  # "hit" | "miss" | "off"
    manifest: dict

    def file(self, name: str) -> Path:
        return self.path / name

    def digest_of(self, name: str) -> str:
        return self.manifest["files"][name]["sha256"]


class Cache:
    """Content-addressed cache rooted at ``root``; see the module docstring."""

    def __init__(self, root: str | os.PathLike[str], enabled: bool = True, log: Callable[[str], None] | None = None,
                 verify: str = "fast"):
        if verify not in VERIFY_MODES:
            raise ValueError(f"cache.verify = '{verify}': valid: {', '.join(VERIFY_MODES)}")
        self.root = Path(root)
        self.enabled = enabled
        self.full_verify = verify == "full"
        # state stages share across builds (stages.api.shared_dir: a builder's timing caches, compiler caches)
        self.shared_root = self.root / "shared"
        self.log = log if log is not None else logger.warning
        self.read_only = False
        if enabled:
            try:
                for sub in ("entries", "tmp", "locks", "quarantine"):
                    (self.root / sub).mkdir(parents=True, exist_ok=True)
            except OSError:
                if not (self.root / "entries").is_dir():
                    raise
                # A complete cache on a read-only filesystem (a shared, published cache) still serves its
                # verified entries; only a miss needs to write.
                self.read_only = True
            if not self.read_only:
                self.sweep_stale_tmp()

    # ---- paths

    def entry_path(self, key: str) -> Path:
        return self.root / "entries" / key[:2] / key

    def _lock(self, key: str) -> FileLock:
        return FileLock(str(self.root / "locks" / f"{key}.lock"))

    # ---- main entry point

    def get_or_create(
        self,
        key_spec: dict,
        build: Callable[[Path], dict | None],
        *,
        scratch: Path | None = None,
        label: str = "",
    ) -> CacheResult:
        """Return the artifact for ``key_spec``, running ``build(dir)`` only if needed.

        ``build`` writes its files into the directory it is given and may return a
        JSON-able dict that is stored as the manifest's ``info``.
        """
        key = digest(key_spec)
        if not self.enabled:
            return self._build_off(key, key_spec, build, scratch, label)

        lock = self._lock(key)
        try:
            try:
                lock.acquire(timeout=0)
            except Timeout:
                logger.info("%s: waiting for another process building %s", label or "artifact", key[:12])
                lock.acquire()
        except OSError as err:  # the lock file cannot be created: a read-only cache can still serve a hit
            return self._read_only_lookup(key, label, err)
        # The lock makes "check, build, publish" atomic per key across processes: a
        # second process waits here and then finds the first one's entry as a hit.
        try:
            hit = self._lookup(key, label)
            if hit is not None:
                return hit
            return self._build_and_publish(key, key_spec, build)
        finally:
            lock.release()

    # ---- enabled path

    def _read_only_lookup(self, key: str, label: str, err: OSError) -> CacheResult:
        """Without the key's lock nobody can be publishing through us; a verified entry is safe to read."""
        entry = self.entry_path(key)
        manifest, problems = verify_entry(entry, key, self.full_verify) if entry.exists() else (None, ["no entry"])
        if not problems:
            return CacheResult(path=entry, outcome="hit", manifest=manifest)
        raise CacheError(f"cache.dir = '{self.root}' cannot be written ({err.strerror or err}) and has no intact "
                         f"entry for {label or 'this artifact'} ({'; '.join(problems[:3])}): point cache.dir at a "
                         f"writable directory to build it")

    def _lookup(self, key: str, label: str) -> CacheResult | None:
        entry = self.entry_path(key)
        if not entry.exists():
            return None
        manifest, problems = verify_entry(entry, key, self.full_verify)
        if not problems:
            return CacheResult(path=entry, outcome="hit", manifest=manifest)
        dest = self._quarantine(entry, key)
        self.log(
            f"cache: {label or 'artifact'} entry {key[:12]} is corrupt ({'; '.join(problems[:10])}); "
            f"moved to {dest} and rebuilding"
        )
        return None

    def _quarantine(self, entry: Path, key: str) -> Path:
        stamp = _utc_now().strftime("%Y%m%dT%H%M%S.%fZ")
        dest = self.root / "quarantine" / f"{key}-{stamp}"
        if dest.exists():
            dest = dest.with_name(f"{dest.name}-{uuid.uuid4().hex[:8]}")
        # Rename, not delete: the bad bytes are evidence worth keeping.
        os.rename(entry, dest)
        return dest

    def _build_and_publish(self, key: str, key_spec: dict, build: Callable[[Path], dict | None]) -> CacheResult:
        self._remove_orphans_of(key)
        tmp = self.root / "tmp" / f"{key}.{os.getpid()}.{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        try:
            manifest = _build_manifest(key, key_spec, build, tmp)
            entry = self.entry_path(key)
            entry.parent.mkdir(parents=True, exist_ok=True)
            # Publishing is this one rename: readers see no entry or a complete one.
            os.rename(tmp, entry)
        except BaseException:
            _rmtree_quiet(tmp)
            raise
        _fsync_dir(entry.parent)
        return CacheResult(path=entry, outcome="miss", manifest=manifest)

    def _remove_orphans_of(self, key: str) -> None:
        # Only the holder of the key's lock (us, now) writes tmp dirs for that key, so
        # any left over belong to crashed writers. Live pids are still skipped.
        for path, _key, pid in self._tmp_dirs():
            if _key == key and not _pid_alive(pid):
                _rmtree_quiet(path)

    def _tmp_dirs(self) -> list[tuple[Path, str, int]]:
        out = []
        try:
            children = list((self.root / "tmp").iterdir())
        except FileNotFoundError:
            return out
        for path in children:
            m = _TMP_RE.match(path.name)
            if m and path.is_dir() and not path.is_symlink():
                out.append((path, m["key"], int(m["pid"])))
        return out

    def sweep_stale_tmp(self, max_age_s: float = STALE_TMP_AGE_S) -> list[Path]:
        """Remove temp dirs older than ``max_age_s`` whose writer is gone.

        A dir is removed only if its pid is dead AND its key's lock is free, so a
        temp dir that a live process is writing is never touched.
        """
        removed = []
        now = time.time()
        for path, key, pid in self._tmp_dirs():
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age < max_age_s or _pid_alive(pid):
                continue
            lock = self._lock(key)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            try:
                _rmtree_quiet(path)
                removed.append(path)
            finally:
                lock.release()
        return removed

    # ---- disabled path

    def _build_off(
        self, key: str, key_spec: dict, build: Callable[[Path], dict | None], scratch: Path | None, label: str
    ) -> CacheResult:
        if scratch is None:
            raise ValueError("Cache(enabled=False).get_or_create needs scratch= to build into")
        out = Path(scratch) / _safe_name(label)
        if out.exists() or out.is_symlink():
            if out.is_dir() and not out.is_symlink():
                shutil.rmtree(out)
            else:
                out.unlink()
        out.mkdir(parents=True)
        try:
            manifest = _build_manifest(key, key_spec, build, out)
        except BaseException:
            _rmtree_quiet(out)
            raise
        return CacheResult(path=out, outcome="off", manifest=manifest)
