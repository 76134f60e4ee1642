"""Hydra sweeper plugin of this project (Hydra finds plugins only under the `hydra_plugins` package)."""
