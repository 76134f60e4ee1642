"""The resilient sweeper's shared composition: points with the same group options share Hydra's defaults list and
merged config, and each still gets exactly the config that composing it anew gives (Hydra's own loader, run on
the project's conf/, is the reference)."""
from __future__ import annotations

import os

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from hydra_plugins.pipeline_sweeper import resilient
from pipeline.config import paths, schema

POINTS = [[f"precision={p}", f"batch_size={b}", "backend=onnxruntime"] for p in ("fp32", "int8") for b in (1, 2)] + [
    ["precision=int8", "batch_size=4", "backend=onnxruntime", "+axes.sequence=8"],  # an added key
    ["precision=fp32", "batch_size=2", "backend=torch"],  # a group option of another axis
    ["precision=int8", "batch_size=2", "backend=onnxruntime", "~profile"],  # a deleted key
    ["precision=int8", "batch_size=2", "backend=onnxruntime"],  # after the deletion: still the whole config
]


@pytest.fixture()
def loader():
    schema.register()
    with initialize_config_dir(config_dir=os.path.abspath(paths.CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", ["+sweep=precision"], RunMode.MULTIRUN)
        yield loader, master


def _text(cfg) -> str:
    flags = f"struct={OmegaConf.is_struct(cfg)} hydra_readonly={OmegaConf.is_readonly(cfg.hydra)}"
    return OmegaConf.to_yaml(cfg) + flags


def test_points_with_the_same_group_options_compose_as_each_alone(loader, monkeypatch):
    loader, master = loader
    alone = [_text(loader.load_sweep_config(master, point)) for point in POINTS]
    merges = []
    real = type(loader)._compose_config_from_defaults_list
    monkeypatch.setattr(type(loader), "_compose_config_from_defaults_list",
                        lambda self, defaults, repo: merges.append(1) or real(self, defaults, repo))
    with resilient._shared_choices(loader):
        shared = [_text(loader.load_sweep_config(master, point)) for point in POINTS]
    assert shared == alone
    assert len(merges) == 3  # fp32 and int8 on onnxruntime, fp32 on torch: each merged once
    assert shared[0] != shared[1] and "batch_size: 2" in shared[1]


def test_a_point_that_fails_its_value_override_leaves_the_shared_merge_intact(loader):
    loader, master = loader
    expected = _text(loader.load_sweep_config(master, POINTS[1]))
    with resilient._shared_choices(loader):
        loader.load_sweep_config(master, POINTS[0])
        with pytest.raises(Exception, match="batch_size"):
            loader.load_sweep_config(master, ["precision=fp32", "batch_size=many", "backend=onnxruntime"])
        assert _text(loader.load_sweep_config(master, POINTS[1])) == expected
    assert "_compose_config_from_defaults_list" not in vars(loader)  # the loader is itself again afterwards
