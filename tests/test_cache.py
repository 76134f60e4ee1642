"""Tests for pipeline.run.cache: keys, hit/miss, crash safety, tamper detection, locking."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.run.cache import Cache, CacheError, CacheResult, canonical_json, digest, file_sha256, verify_entry

REPO_ROOT = Path(__file__).resolve().parents[1]

SPEC = {
    "stage": "export",
    "version": 3,
    "params": {"opset": 17, "batch": 8, "dynamic": True, "shape": [1, 3, 224, 224]},
    "inputs": {"weights": "ab" * 32},
    "env": {"torch": "2.6.0", "onnx": "1.17.0"},
}


def _spec(**params):
    spec = json.loads(json.dumps(SPEC))
    spec["params"].update(params)
    return spec


class CountingBuild:
    """A build callable that writes two files and counts its calls."""

    def __init__(self, payload: bytes = b"onnx-bytes" * 1000):
        self.calls = 0
        self.payload = payload

    def __call__(self, out: Path) -> dict:
        self.calls += 1
        (out / "model.onnx").write_bytes(self.payload)
        (out / "sub").mkdir()
        (out / "sub" / "meta.txt").write_text("hello\n")
        return {"nodes": 42, "opset": 17, "call": self.calls}


def _assert_valid_entry(res: CacheResult, key: str) -> None:
    manifest, problems = verify_entry(res.path, key)
    assert problems == []
    assert manifest == res.manifest
    for rel, meta in res.manifest["files"].items():
        assert file_sha256(res.path / rel) == meta["sha256"]


def _entries(root: Path) -> list[Path]:
    return sorted(p for p in (root / "entries").glob("*/*") if p.is_dir())


def _tmp_children(root: Path) -> list[Path]:
    tmp = root / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


# --------------------------------------------------------------------------- keys


def test_key_stable_under_dict_order_and_sensitive_to_params():
    reordered = {k: SPEC[k] for k in reversed(list(SPEC))}
    reordered["params"] = {k: SPEC["params"][k] for k in reversed(list(SPEC["params"]))}
    assert list(reordered) != list(SPEC)

    key = digest(SPEC)
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)
    assert digest(reordered) == key
    assert canonical_json(reordered) == canonical_json(SPEC)
    assert " " not in canonical_json(SPEC)

    assert digest(_spec(opset=18)) != key
    assert digest(_spec(batch=16)) != key
    assert digest({**SPEC, "version": 4}) != key


def test_canonical_json_paths_and_roundtrip():
    assert canonical_json({"p": Path("a") / "b.onnx"}) == '{"p":"a/b.onnx"}'
    # Int keys and tuples canonicalise to what a manifest reloads, so a stored
    # key_spec always hashes back to its key.
    spec = {"m": {2: "x", 10: "y"}, "t": (1, 2)}
    assert digest(json.loads(canonical_json(spec))) == digest(spec)
    with pytest.raises(TypeError):
        digest({"obj": object()})


# --------------------------------------------------------------------------- miss / hit


def test_miss_then_hit_runs_build_once(tmp_path):
    cache = Cache(tmp_path / "c")
    build = CountingBuild()

    first = cache.get_or_create(SPEC, build, label="export")
    assert first.outcome == "miss"
    assert build.calls == 1
    key = digest(SPEC)
    assert first.path == tmp_path / "c" / "entries" / key[:2] / key
    m = first.manifest
    assert m["key"] == key
    assert m["key_spec"] == json.loads(canonical_json(SPEC))
    assert digest(m["key_spec"]) == key
    assert set(m["files"]) == {"model.onnx", "sub/meta.txt"}
    assert m["files"]["model.onnx"]["size"] == len(build.payload)
    assert m["info"] == {"nodes": 42, "opset": 17, "call": 1}
    assert m["created"].endswith("+00:00") and m["duration_s"] >= 0

    second = Cache(tmp_path / "c").get_or_create(SPEC, build, label="export")
    assert second.outcome == "hit"
    assert build.calls == 1
    assert second.path == first.path
    assert second.manifest == first.manifest
    assert second.manifest["info"]["call"] == 1
    assert second.file("model.onnx").read_bytes() == build.payload
    assert second.file("sub/meta.txt").read_text() == "hello\n"
    assert second.digest_of("model.onnx") == file_sha256(second.file("model.onnx"))
    assert second.digest_of("sub/meta.txt") == file_sha256(second.file("sub/meta.txt"))
    _assert_valid_entry(second, key)

    third = cache.get_or_create(_spec(opset=18), build)
    assert third.outcome == "miss" and build.calls == 2 and third.path != first.path
    assert _tmp_children(tmp_path / "c") == []


def test_build_returning_none_and_no_files(tmp_path):
    res = Cache(tmp_path / "c").get_or_create({"s": 1}, lambda out: None)
    assert res.outcome == "miss" and res.manifest["info"] is None and res.manifest["files"] == {}
    again = Cache(tmp_path / "c").get_or_create({"s": 1}, lambda out: pytest.fail("rebuilt"))
    assert again.outcome == "hit"


# --------------------------------------------------------------------------- failures


def test_build_exception_propagates_and_leaves_nothing(tmp_path):
    root = tmp_path / "c"
    cache = Cache(root)
    err = RuntimeError("boom")

    def bad(out: Path):
        (out / "partial.onnx").write_bytes(b"half")
        raise err

    with pytest.raises(RuntimeError) as info:
        cache.get_or_create(SPEC, bad)
    assert info.value is err
    assert _entries(root) == []
    assert _tmp_children(root) == []

    ok = cache.get_or_create(SPEC, CountingBuild())
    assert ok.outcome == "miss"
    _assert_valid_entry(ok, digest(SPEC))


def test_bad_info_is_rejected_without_an_entry(tmp_path):
    root = tmp_path / "c"
    cache = Cache(root)
    with pytest.raises(CacheError):
        cache.get_or_create(SPEC, lambda out: {"x": object()})
    with pytest.raises(CacheError):
        cache.get_or_create(SPEC, lambda out: ["not", "a", "dict"])
    assert _entries(root) == [] and _tmp_children(root) == []


def test_symlink_artifacts_rejected(tmp_path):
    root = tmp_path / "c"
    target = tmp_path / "outside.bin"
    target.write_bytes(b"x")

    def build(out: Path):
        (out / "link.bin").symlink_to(target)

    with pytest.raises(CacheError, match="link.bin"):
        Cache(root).get_or_create(SPEC, build)
    assert _entries(root) == [] and _tmp_children(root) == []


# --------------------------------------------------------------------------- crash safety

KILL_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, sys.argv[1])
    import pipeline.run.cache as pc

    spec = {"stage": "killed", "n": 1}
    mode = sys.argv[3]

    def build(out):
        (out / "model.onnx").write_bytes(b"x" * 100000)
        if mode == "mid-build":
            os.kill(os.getpid(), signal.SIGKILL)
        return {"ok": True}

    if mode == "before-rename":
        # Manifest written and fsynced; die just before publishing.
        pc.os.rename = lambda *a: os.kill(os.getpid(), signal.SIGKILL)

    pc.Cache(sys.argv[2]).get_or_create(spec, build, label="killed")
    print("survived")
    """
)


@pytest.mark.parametrize("mode", ["mid-build", "before-rename"])
def test_writer_killed_mid_entry_leaves_no_entry(tmp_path, mode):
    root = tmp_path / "c"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_CHILD, str(REPO_ROOT), str(root), mode],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "survived" not in proc.stdout

    key = digest({"stage": "killed", "n": 1})
    leftovers = _tmp_children(root)
    assert len(leftovers) == 1 and leftovers[0].name.startswith(key)  # the killed writer's work
    assert (leftovers[0] / "model.onnx").exists()
    assert ((leftovers[0] / "manifest.json").exists()) == (mode == "before-rename")
    assert not Cache(root).entry_path(key).exists()
    assert _entries(root) == []

    build = CountingBuild()
    res = Cache(root).get_or_create({"stage": "killed", "n": 1}, build)
    assert res.outcome == "miss" and build.calls == 1
    _assert_valid_entry(res, key)
    assert _tmp_children(root) == []  # the orphan was cleaned up under the key's lock


def test_sweep_stale_tmp_only_removes_old_dead_writers(tmp_path):
    root = tmp_path / "c"
    Cache(root)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    key = "ab" * 32

    def make(pid: int, age_s: float) -> Path:
        p = root / "tmp" / f"{key}.{pid}.{os.urandom(16).hex()}"
        p.mkdir()
        (p / "f").write_text("x")
        t = time.time() - age_s
        os.utime(p, (t, t))
        return p

    old_dead = make(dead.pid, 7200)
    young_dead = make(dead.pid, 10)
    old_alive = make(os.getpid(), 7200)
    foreign = root / "tmp" / "not-ours"
    foreign.mkdir()
    os.utime(foreign, (0, 0))

    Cache(root)  # construction sweeps
    assert not old_dead.exists()
    assert young_dead.exists() and old_alive.exists() and foreign.exists()


# --------------------------------------------------------------------------- tamper detection


def _writable(p: Path) -> Path:
    p.chmod(0o644)  # published files are read-only: whoever corrupts one has to lift that first
    return p


def _corrupt_flip_byte(entry: Path) -> str:
    p = _writable(entry / "model.onnx")
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    return "model.onnx: sha256 mismatch"


def _corrupt_truncate(entry: Path) -> str:
    p = _writable(entry / "model.onnx")
    p.write_bytes(p.read_bytes()[:-7])
    return "model.onnx: size"


def _corrupt_delete_manifest(entry: Path) -> str:
    (entry / "manifest.json").unlink()
    return "manifest.json missing"


def _corrupt_delete_file(entry: Path) -> str:
    (entry / "sub" / "meta.txt").unlink()
    return "sub/meta.txt: missing"


def _corrupt_garbage_manifest(entry: Path) -> str:
    _writable(entry / "manifest.json").write_text("{not json")
    return "manifest.json unreadable"


def _corrupt_extra_file(entry: Path) -> str:
    (entry / "stray.bin").write_bytes(b"?")
    return "stray.bin: unexpected file"


@pytest.mark.parametrize(
    "corrupt",
    [
        _corrupt_flip_byte,
        _corrupt_truncate,
        _corrupt_delete_manifest,
        _corrupt_delete_file,
        _corrupt_garbage_manifest,
        _corrupt_extra_file,
    ],
)
def test_tampered_entry_is_quarantined_and_rebuilt(tmp_path, corrupt):
    root = tmp_path / "c"
    build = CountingBuild()
    first = Cache(root).get_or_create(SPEC, build, label="export")
    key = digest(SPEC)
    expected = corrupt(first.path)
    tampered = {rel: full.read_bytes() for rel, full in _files(first.path)}

    messages: list[str] = []
    res = Cache(root, log=messages.append).get_or_create(SPEC, build, label="export")

    assert res.outcome == "miss" and build.calls == 2
    assert len(messages) == 1
    assert expected in messages[0] and "export" in messages[0] and key[:12] in messages[0]

    quarantined = list((root / "quarantine").iterdir())
    assert len(quarantined) == 1 and quarantined[0].name.startswith(f"{key}-")
    assert {rel: full.read_bytes() for rel, full in _files(quarantined[0])} == tampered  # evidence kept

    assert res.path == first.path
    assert res.file("model.onnx").read_bytes() == build.payload
    _assert_valid_entry(res, key)
    assert Cache(root, log=messages.append).get_or_create(SPEC, build).outcome == "hit"
    assert build.calls == 2 and len(messages) == 1


def _files(d: Path) -> list[tuple[str, Path]]:
    return sorted((p.relative_to(d).as_posix(), p) for p in d.rglob("*") if p.is_file())


def test_default_log_uses_pipeline_cache_logger(tmp_path, caplog):
    root = tmp_path / "c"
    first = Cache(root).get_or_create(SPEC, CountingBuild(), label="export")
    _corrupt_flip_byte(first.path)
    with caplog.at_level(logging.WARNING, logger="pipeline.run.cache"):
        Cache(root).get_or_create(SPEC, CountingBuild(), label="export")
    recs = [r for r in caplog.records if r.name == "pipeline.run.cache" and r.levelno == logging.WARNING]
    assert len(recs) == 1 and "model.onnx: sha256 mismatch" in recs[0].getMessage()


# --------------------------------------------------------------------------- concurrency

RACE_CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from pipeline.run.cache import Cache, verify_entry, digest

    root, counter, ready, go = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
    spec = {"stage": "race", "n": 1}

    def build(out):
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(1.0)
        (out / "model.onnx").write_bytes(b"m" * 5000)
        return {"pid": os.getpid()}

    cache = Cache(root)
    ready.touch()
    deadline = time.time() + 30
    while not go.exists():  # start both calls at the same moment
        if time.time() > deadline:
            sys.exit("no go signal")
        time.sleep(0.005)
    res = cache.get_or_create(spec, build, label="race")
    _, problems = verify_entry(res.path, digest(spec))
    print(json.dumps({"outcome": res.outcome, "path": str(res.path), "problems": problems,
                      "builder": res.manifest["info"]["pid"]}))
    """
)


def test_two_processes_build_one_key_once(tmp_path):
    root, counter, go = tmp_path / "c", tmp_path / "counter.txt", tmp_path / "go"
    readies = [tmp_path / f"ready{i}" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE_CHILD, str(REPO_ROOT), str(root), str(counter), str(r), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in readies
    ]
    try:
        deadline = time.time() + 30
        while not all(r.exists() for r in readies):
            assert time.time() < deadline, "children did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.01)
        go.touch()
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), outs
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]

    assert len(counter.read_text().splitlines()) == 1
    assert sorted(r["outcome"] for r in results) == ["hit", "miss"]
    key = digest({"stage": "race", "n": 1})
    assert {r["path"] for r in results} == {str(Cache(root).entry_path(key))}
    assert all(r["problems"] == [] for r in results)
    assert results[0]["builder"] == results[1]["builder"]
    assert Path(results[0]["path"], "model.onnx").read_bytes() == b"m" * 5000


# --------------------------------------------------------------------------- disabled


def test_disabled_builds_every_time_and_stores_nothing(tmp_path):
    root, scratch = tmp_path / "c", tmp_path / "scratch"
    cache = Cache(root, enabled=False)
    build = CountingBuild()

    a = cache.get_or_create(SPEC, build, scratch=scratch, label="export")
    assert a.outcome == "off" and build.calls == 1
    assert a.path == scratch / "export"
    assert a.manifest["key"] == digest(SPEC) and a.manifest["info"]["call"] == 1
    assert a.digest_of("model.onnx") == file_sha256(a.file("model.onnx"))
    assert json.loads((a.path / "manifest.json").read_text()) == a.manifest
    _assert_valid_entry(a, digest(SPEC))
    (a.path / "stale.txt").write_text("from a previous run")

    b = cache.get_or_create(SPEC, build, scratch=scratch, label="export")
    assert b.outcome == "off" and build.calls == 2
    assert b.path == a.path and not (b.path / "stale.txt").exists()  # replaced, not merged
    assert b.manifest["info"]["call"] == 2

    c = cache.get_or_create(SPEC, build, scratch=scratch)
    assert c.path == scratch / "artifact"

    assert not (root / "entries").exists() or list((root / "entries").rglob("*")) == []
    with pytest.raises(ValueError):
        cache.get_or_create(SPEC, build)


# --------------------------------------------------------------------------- read-only entries, cheap hits


def test_published_files_are_read_only(tmp_path):
    cache = Cache(tmp_path / "c")
    res = cache.get_or_create({"k": 1}, CountingBuild(b"payload"))
    modes = {p.name: p.stat().st_mode & 0o777 for p in res.path.iterdir() if p.is_file()}
    assert modes == {"model.onnx": 0o444, "manifest.json": 0o444}
    assert (res.path / "sub" / "meta.txt").stat().st_mode & 0o777 == 0o444


def test_a_hit_on_an_untouched_entry_hashes_nothing(tmp_path, monkeypatch):
    from pipeline.run import cache as cachemod

    cache = Cache(tmp_path / "c")
    cache.get_or_create({"k": 1}, CountingBuild(b"payload"))
    hashed = []
    monkeypatch.setattr(cachemod, "file_sha256", lambda p: hashed.append(p) or "x")
    assert cache.get_or_create({"k": 1}, CountingBuild(b"payload")).outcome == "hit"
    assert hashed == []


def test_fast_verify_trusts_size_and_mtime_full_verify_rehashes(tmp_path):
    cache = Cache(tmp_path / "c")
    res = cache.get_or_create({"k": 1}, CountingBuild(b"payload"))
    model = res.path / "model.onnx"
    stat = model.stat()
    _writable(model).write_bytes(b"PAYLOAD")             # same size...
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...and the mtime put back on purpose
    assert verify_entry(res.path, digest({"k": 1}), full=False)[1] == []  # the documented limit of fast
    assert verify_entry(res.path, digest({"k": 1}))[1] == ["model.onnx: sha256 mismatch"]
    rebuilt = Cache(tmp_path / "c", verify="full").get_or_create({"k": 1}, CountingBuild(b"payload"))
    assert rebuilt.outcome == "miss" and (rebuilt.path / "model.onnx").read_bytes() == b"payload"


def test_fast_verify_rehashes_a_file_whose_mtime_changed(tmp_path):
    cache = Cache(tmp_path / "c")
    res = cache.get_or_create({"k": 1}, CountingBuild(b"payload"))
    _writable(res.path / "model.onnx").write_bytes(b"PAYLOAD")
    again = cache.get_or_create({"k": 1}, CountingBuild(b"payload"))
    assert again.outcome == "miss" and (again.path / "model.onnx").read_bytes() == b"payload"
