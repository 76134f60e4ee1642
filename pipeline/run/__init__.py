"""Running a job: Hydra's glue (app), one job (job), its DAG (dag, runner), the artifact cache, crash isolation,
the backend plugins, progress, and re-running a recorded job (reproduce)."""
