"""Options declared once: a backend option is typed in its plugin's OPTIONS and valued in the backend's YAML; a stage
that declares BACKEND_OPTIONS gets them from the runner, so no YAML wires them. The cache keys and config_hash mean
what they meant: a changed option misses the build's cache, an option declared keyed=False does not."""
import copy
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline.config import paths, renames, schema
from pipeline.run import dag, job, runner

ONNX_BACKENDS = ["onnxruntime", "tensorrt", "trtexec"]


def config(*overrides):
    schema.register()  # the `schema` node conf/config.yaml builds on
    with initialize_config_dir(config_dir=paths.CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def with_fake_backend(base, tmp_path, level=3, tool="/opt/tool"):
    cfg = copy.deepcopy(base)
    cfg["cache"]["dir"] = str(tmp_path / "cache")
    cfg["backend"] = {"name": "fake", "plugin": "tests.fake_option_plugin", "level": level, "tool": tool,
                      "dag": {"build": {"stage": "tests.fake_option_stage",
                                        "params": {"text": "a", "counter": str(tmp_path / "builds.txt")}}}}
    return cfg


def test_the_runner_hands_a_stage_the_options_it_declares_typed_by_the_plugin(base_config, tmp_path):
    backend = with_fake_backend(base_config, tmp_path)["backend"]
    node, = runner.plan(backend["dag"], backend)
    assert node.params == {"text": "a", "counter": str(tmp_path / "builds.txt"), "level": 3, "tool": "/opt/tool"}
    assert node.declared["tool"].keyed is False  # the plugin's declaration, not one of the stage's own


def test_a_changed_option_misses_the_builds_cache_and_an_unkeyed_one_hits(base_config, tmp_path):
    first = job.run_job(with_fake_backend(base_config, tmp_path), tmp_path / "j1", job.JobMeta())
    again = job.run_job(with_fake_backend(base_config, tmp_path), tmp_path / "j2", job.JobMeta())
    moved = job.run_job(with_fake_backend(base_config, tmp_path, tool="/elsewhere/tool"), tmp_path / "j3",
                        job.JobMeta())
    changed = job.run_job(with_fake_backend(base_config, tmp_path, level=1), tmp_path / "j4", job.JobMeta())
    assert [o.status for o in (first, again, moved, changed)] == ["ok"] * 4, changed.error
    assert [o.row["build_cache"] for o in (first, again, moved, changed)] == ["miss", "hit", "hit", "miss"]
    assert changed.row["build_level"] == 1
    assert (tmp_path / "builds.txt").read_text().count("built") == 2
    assert first.row["config_hash"] == moved.row["config_hash"] != changed.row["config_hash"]


def test_a_bad_option_is_one_line_naming_the_key_the_value_and_what_is_valid(base_config, tmp_path):
    out = job.run_job(with_fake_backend(base_config, tmp_path, level=9), tmp_path / "j", job.JobMeta())
    assert (out.status, out.error) == ("failed", "backend.level = 9: out of range; valid: 0..5")
    cfg = base_config | {"backend": {**base_config["backend"], "intra_op_threads": "four"}}
    out = job.run_job(copy.deepcopy(cfg), tmp_path / "k", job.JobMeta())
    assert out.error == "backend.intra_op_threads = 'four': expected int, got str"


def test_a_node_that_lists_a_backend_option_itself_is_refused_naming_the_key(base_config, tmp_path):
    backend = with_fake_backend(base_config, tmp_path)["backend"]
    backend["dag"]["build"]["params"]["level"] = 1
    with pytest.raises(dag.DagError, match=r"^backend\.dag\.build\.params\.level: a backend option.*set "
                                           r"backend\.level, and remove it from the node$"):
        runner.plan(backend["dag"], backend)


def test_a_stage_that_takes_an_option_its_backend_lacks_is_refused_naming_the_node(base_config, tmp_path):
    backend = with_fake_backend(base_config, tmp_path)["backend"]
    backend["plugin"] = "stages.onnxruntime"
    with pytest.raises(dag.DagError, match=r"^backend\.dag\.build\.stage = 'tests\.fake_option_stage': it takes "
                                           r"the backend option 'level', which this backend's plugin does not"):
        runner.plan(backend["dag"], backend)


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_no_backend_yaml_wires_an_option_its_stages_take_from_the_plugin(backend):
    text = (Path(paths.CONF_DIR) / "backend" / f"{backend}.yaml").read_text()
    assert "${backend." not in text  # its build (and trtexec's benchmark) take the options from the runner
    cfg = config(f"backend={backend}")["backend"]
    for name, node in runner.with_runtime(cfg["dag"], cfg).items():
        module = runner.stages.load(node["stage"])
        takes = getattr(module, "BACKEND_OPTIONS", ())
        assert not set(takes) & set(module.PARAMS), f"{node['stage']} declares an option's type again"
        assert all(node["params"][k] == cfg[k] for k in takes), name


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_the_hash_is_the_one_of_the_yaml_that_wired_the_options(backend):
    """A recorded config (its build node wired the options it took then: renames.py lists them) and today's hash the
    same; an option changes it."""
    cfg = config(f"backend={backend}")
    recorded = copy.deepcopy(cfg)
    for node in recorded["backend"]["dag"].values():
        takes = renames.NOW_BACKEND_OPTIONS.get(node["stage"], ())
        node["params"] = {**node["params"], **{k: cfg["backend"][k] for k in takes}}
    assert job.config_hash(recorded) == job.config_hash(cfg)
    assert job.config_hash(renames.upgrade(recorded)) == job.config_hash(cfg)
    assert renames.upgrade(recorded)["backend"]["dag"] == cfg["backend"]["dag"]
    changed = config(f"backend={backend}", "backend.optimization_level=1")
    assert job.config_hash(changed) != job.config_hash(cfg)


def test_a_recorded_option_edited_by_hand_is_kept_and_refused_by_name():
    cfg = config("backend=onnxruntime")
    recorded = copy.deepcopy(cfg)
    recorded["backend"]["dag"]["build"]["params"].update(optimization_level=1, execution_mode="sequential")
    upgraded = renames.upgrade(recorded)
    assert upgraded["backend"]["dag"]["build"]["params"] == {**cfg["backend"]["dag"]["build"]["params"],
                                                             "optimization_level": 1}
    with pytest.raises(dag.DagError, match=r"^backend\.dag\.build\.params\.optimization_level: a backend option"):
        runner.plan(upgraded["backend"]["dag"], upgraded["backend"])


TORCH_OVERRIDES = [(), ("backend.compile=default", "precision=int8"), ("backend.channels_last=true",
                                                                        "backend.keep_high_precision=[]")]


def test_the_torch_yaml_wires_no_option_its_stages_take():
    """torch's build and compile take build, channels_last, device, quantization and keep_high_precision from the
    runner; the one `${backend.` left is backend.compile, which they take as `mode` (the name configs hash)."""
    text = (Path(paths.CONF_DIR) / "backend" / "torch.yaml").read_text()
    wired = {line.split("${backend.")[1].split("}")[0] for line in text.splitlines() if "${backend." in line}
    assert wired == {"compile"}
    cfg = config("backend=torch", "backend.device=cpu", "backend.channels_last=true")["backend"]
    nodes = {n.name: n for n in runner.plan(cfg["dag"], cfg)}
    for name in ("build", "compile"):
        module = runner.stages.load(nodes[name].stage)
        assert not set(module.BACKEND_OPTIONS) & set(module.PARAMS), f"{name} declares an option's type again"
        assert all(nodes[name].params[k] == cfg[k] for k in module.BACKEND_OPTIONS), name
        assert nodes[name].params["mode"] == cfg["compile"] and nodes[name].params["channels_last"] is True
    assert nodes["build"].params["build"] == cfg["build"] == "aoti"


@pytest.mark.parametrize("overrides", TORCH_OVERRIDES)
def test_a_torch_config_recorded_with_its_options_wired_keeps_its_hash(overrides):
    cfg = config("backend=torch", *overrides)
    recorded = copy.deepcopy(cfg)
    for node in recorded["backend"]["dag"].values():  # as the YAML wired them (isolate_measurements came after)
        takes = renames.NOW_BACKEND_OPTIONS.get(node["stage"], ())
        node["params"] = {**node["params"], **{k: cfg["backend"][k] for k in takes}}
    assert recorded["backend"]["dag"]["compile"]["params"]["quantization"] == cfg["backend"]["quantization"]
    assert job.config_hash(recorded) == job.config_hash(cfg)
    assert renames.upgrade(recorded)["backend"]["dag"] == cfg["backend"]["dag"]
    assert job.config_hash(config("backend=torch", *overrides, "backend.channels_last=false",
                                  "backend.device=cuda")) != job.config_hash(cfg)
