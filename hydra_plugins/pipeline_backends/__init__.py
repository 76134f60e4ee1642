"""Hydra search path plugin of this project: the configs of backends that other installed packages declare (Hydra
finds plugins only under the `hydra_plugins` package)."""
