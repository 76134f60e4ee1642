"""`python -m pipeline.plan SWEEP_DIR`: the precision planner on a finished sweep (pipeline/run/planner.py)."""
import sys

from pipeline.run.planner import main

if __name__ == "__main__":
    sys.exit(main())
