"""Tests for stages/models.py and stages/targets.py (CPU only)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from stages import models, targets  # noqa: E402
from stages.models import BUILTIN, build_builtin  # noqa: E402
from stages.targets import factory_source_digest, load_factory  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

# tiny_cnn, by hand (convs have no bias; BN has weight + bias, running stats are buffers):
#   conv1  3*32*3*3  =    864   bn1 2*32 =  64
#   conv2 32*64*3*3  = 18,432   bn2 2*64 = 128
#   conv3 64*64*3*3  = 36,864   bn3 2*64 = 128
#   fc    64*100+100 =  6,500
#   total            = 62,980
EXPECTED_PARAMS = {
    "digits": 62_980 - 2 * 32 * 9 - 90 * 65,  # tiny_cnn's layers: one input channel, 10 classes
    "tiny_cnn": 62_980,
    "resnet18": 11_689_512,  # torchvision resnet18
    "resnet50": 25_557_032,  # torchvision resnet50
    "vit_tiny": 5_717_416,  # timm vit_tiny_patch16_224
    "vit_b16": 86_567_656,  # torchvision vit_b_16
    "vit_l16": 304_326_632,  # torchvision vit_l_16
}


@pytest.fixture(scope="module")
def built():
    """Each built-in model once, seed 0 (shared by the read-only tests)."""
    return {name: build_builtin(name) for name in BUILTIN}


def _num_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def test_builtin_names_and_expected_table_agree():
    assert set(BUILTIN) == set(EXPECTED_PARAMS)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_counts(built, name):
    assert _num_params(built[name]) == EXPECTED_PARAMS[name]


def test_num_classes_override():
    m = build_builtin("resnet18", num_classes=10)
    assert m.fc.out_features == 10
    assert _num_params(m) == EXPECTED_PARAMS["resnet18"] - 990 * 513
    v = build_builtin("vit_tiny", num_classes=7)
    assert v(torch.zeros(1, 3, 224, 224)).shape == (1, 7)
    with pytest.raises(ValueError, match="num_classes"):
        build_builtin("tiny_cnn", num_classes=0)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_output_shape_and_eval_mode(built, name):
    shape, num_classes = BUILTIN[name]
    m = built[name]
    assert not m.training and not any(mod.training for mod in m.modules())
    with torch.no_grad():
        y = m(torch.randn(2, *shape, generator=torch.Generator().manual_seed(0)))
    assert y.shape == (2, num_classes)
    assert y.dtype == torch.float32


@pytest.mark.parametrize("name", ["resnet50", "vit_b16"])
def test_activations_are_sane(built, name):
    shape, _ = BUILTIN[name]
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        y = built[name](x)
    assert torch.isfinite(y).all()
    std = y.std().item()
    assert 1e-3 < std < 1e3, std
    for row in y:  # top-1 is meaningful: the logits of one sample are not all equal
        assert (row.max() - row.min()).item() > 1e-3 * std


def test_unknown_name():
    msg = ("model.name: unknown built-in model 'x'; valid: digits, resnet18, resnet50, tiny_cnn, vit_b16, vit_l16, "
           "vit_tiny")
    with pytest.raises(ValueError) as ei:
        build_builtin("x")
    assert str(ei.value) == msg


@pytest.mark.parametrize("name", ["tiny_cnn", "resnet18", "vit_tiny"])
def test_determinism(name):
    a = build_builtin(name, seed=3).state_dict()
    b = build_builtin(name, seed=3).state_dict()
    c = build_builtin(name, seed=4).state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def _state_digest(model) -> str:
    import hashlib

    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_determinism_across_processes():
    code = textwrap.dedent(
        """
        import hashlib, torch
        torch.manual_seed(999); torch.rand(17)  # the caller's RNG state must not matter
        from stages.models import build_builtin
        h = hashlib.sha256()
        for k, v in build_builtin("tiny_cnn", seed=5).state_dict().items():
            h.update(k.encode()); h.update(v.detach().contiguous().numpy().tobytes())
        print(h.hexdigest())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _state_digest(build_builtin("tiny_cnn", seed=5))


def test_global_rng_state_untouched():
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    build_builtin("tiny_cnn", seed=7)
    build_builtin("vit_tiny", seed=8)
    assert torch.equal(torch.get_rng_state(), before)
    expected = torch.rand(5)
    torch.manual_seed(1234)
    assert torch.equal(torch.rand(5), expected)


def test_default_dtype_restored_and_ignored():
    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        m = build_builtin("tiny_cnn", seed=2)
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(old)
    assert next(m.parameters()).dtype == torch.float32
    assert _state_digest(m) == _state_digest(build_builtin("tiny_cnn", seed=2))


def test_import_does_not_import_torch():
    code = "import sys, stages.models; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_classes_are_module_attributes_and_picklable(tmp_path):
    m = build_builtin("tiny_cnn")
    assert type(m) is models.TinyCNN
    assert type(m).__module__ == "stages.models"
    path = tmp_path / "m.pt"
    torch.save(m, path)
    m2 = torch.load(path, weights_only=False)
    assert _state_digest(m2) == _state_digest(m)
    with pytest.raises(AttributeError):
        models.NoSuchThing  # noqa: B018


# --------------------------------------------------------------------------- load_factory


FACTORY_SRC = """
import torch

def make(width=4, num_classes=3):
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(width, num_classes), torch.nn.Dropout(0.5)
    )

def not_a_module():
    return [1, 2, 3]

class Net(torch.nn.Module):
    def __init__(self, k=2):
        super().__init__()
        self.lin = torch.nn.Linear(k, k)
    def forward(self, x):
        return self.lin(x)
"""


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    name = f"user_factory_{tmp_path.name.replace('-', '_')}"
    path = tmp_path / f"{name}.py"
    path.write_text(FACTORY_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, path
    sys.modules.pop(name, None)


def test_load_factory_dot_and_colon(factory_module):
    name, _ = factory_module
    m = load_factory(f"{name}.make", {"width": 5, "num_classes": 2})
    assert isinstance(m, torch.nn.Module) and not m.training
    assert m(torch.zeros(3, 5)).shape == (3, 2)
    m2 = load_factory(f"{name}:make")
    assert m2[1].in_features == 4 and not m2.training
    net = load_factory(f"{name}:Net", {"k": 3})
    assert type(net).__name__ == "Net" and not net.training


def test_load_factory_omegaconf_kwargs(factory_module):
    omegaconf = pytest.importorskip("omegaconf")
    name, _ = factory_module
    m = load_factory(f"{name}.make", omegaconf.OmegaConf.create({"width": 6}))
    assert m[1].in_features == 6


def test_load_factory_bad_targets(factory_module):
    name, _ = factory_module
    with pytest.raises(ValueError) as ei:
        load_factory("no_such_pkg_xyz.models.make")
    msg = str(ei.value)
    assert "model._target_" in msg and "no_such_pkg_xyz.models.make" in msg and "No module named" in msg
    with pytest.raises(ValueError, match=r"model\._target_.*missing_fn"):
        load_factory(f"{name}.missing_fn")
    with pytest.raises(ValueError, match=r"model\._target_"):
        load_factory("justaname")
    with pytest.raises(ValueError, match=r"model\._target_"):
        load_factory("")


def test_load_factory_non_module_return(factory_module):
    name, _ = factory_module
    with pytest.raises(TypeError) as ei:
        load_factory(f"{name}.not_a_module")
    msg = str(ei.value)
    assert "model._target_" in msg and "list" in msg


def test_factory_source_digest_follows_edits(factory_module):
    name, path = factory_module
    d1 = factory_source_digest(f"{name}.make")
    assert d1 is not None and d1 == factory_source_digest(f"{name}.make")
    assert factory_source_digest(f"{name}:Net") == d1
    path.write_text(FACTORY_SRC + "\n# edited\n")
    d2 = factory_source_digest(f"{name}.make")
    assert d2 is not None and d2 != d1
    with pytest.raises(ValueError, match=r"model\._target_"):
        factory_source_digest("no_such_pkg_xyz.make")


def test_factory_source_digest_no_file():
    assert factory_source_digest("builtins.len") is None


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """A user package: the factory's module imports a sibling at module level and another inside the function."""
    pkg = f"user_pkg_{tmp_path.name.replace('-', '_')}"
    root = tmp_path / pkg
    root.mkdir()
    files = {
        "__init__.py": "",
        "fac.py": "import torch\nfrom .parts import Net\n\ndef make():\n    from . import heads\n"
                  "    return torch.nn.Sequential(Net(), heads.head())\n",
        "parts.py": "import torch\n\nclass Net(torch.nn.Module):\n    def __init__(self):\n"
                    "        super().__init__()\n        self.fc = torch.nn.Linear(8, 10)\n\n"
                    "    def forward(self, x):\n        return self.fc(x)\n",
        "heads.py": "import torch\n\ndef head():\n    return torch.nn.Linear(10, 2)\n",
        "unused.py": "X = 1\n",
    }
    for file, text in files.items():
        (root / file).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg, root
    for mod in [m for m in sys.modules if m == pkg or m.startswith(pkg + ".")]:
        sys.modules.pop(mod)


def test_factory_digest_covers_the_user_modules_it_imports(user_package):
    pkg, root = user_package
    target = f"{pkg}.fac.make"
    files, dists = targets._user_code(target)
    assert sorted(files) == [pkg, f"{pkg}.fac", f"{pkg}.heads", f"{pkg}.parts"]  # not unused, not torch's files
    assert dists == {"torch": torch.__version__}  # the installed code enters by version
    before = factory_source_digest(target)
    for edited in ("parts.py", "heads.py", "__init__.py"):  # module level, inside the factory, the package
        (root / edited).write_text((root / edited).read_text() + "\n# edited\n")
        after = factory_source_digest(target)
        assert after != before, edited
        before = after
    (root / "unused.py").write_text("X = 2\n")
    assert factory_source_digest(target) == before
    assert targets.warn_unkeyed(load_factory(target), target) == []


def test_warn_unkeyed_names_a_class_module_the_source_never_imports(user_package, caplog):
    pkg, root = user_package
    (root / "hidden.py").write_text("import torch\n\nclass Hidden(torch.nn.Identity):\n    pass\n")
    (root / "dyn.py").write_text("import importlib\n\ndef make():\n"
                                 f"    return importlib.import_module('{pkg}.' + 'hidden').Hidden()\n")
    target = f"{pkg}.dyn.make"
    assert targets.warn_unkeyed(load_factory(target), target) == [f"{pkg}.hidden"]
    assert f"{pkg}.hidden" in caplog.text and "cache key" in caplog.text


# --------------------------------------------------------------------------- ONNX export


@pytest.mark.parametrize("name", ["tiny_cnn", "vit_tiny"])
def test_onnx_export_dynamic_batch(built, name, tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    shape, num_classes = BUILTIN[name]
    m = built[name]
    path = tmp_path / f"{name}.onnx"
    gen = torch.Generator().manual_seed(0)
    torch.onnx.export(
        m,
        (torch.randn(2, *shape, generator=gen),),
        str(path),
        dynamo=True,
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
        opset_version=18,
        input_names=["input"],
        output_names=["logits"],
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    assert not isinstance(sess.get_inputs()[0].shape[0], int)  # symbolic batch axis
    x = torch.randn(3, *shape, generator=gen)
    (got,) = sess.run(["logits"], {"input": x.numpy()})
    with torch.no_grad():
        want = m(x).numpy()
    assert got.shape == (3, num_classes)
    assert abs(got - want).max() < 1e-4
