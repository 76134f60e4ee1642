"""Configuration and identity: the config's schema and its checks, what code a config may name (trust), where the
configs live, the environment a run records, and one-line errors."""
