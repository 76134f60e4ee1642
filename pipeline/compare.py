"""`python -m pipeline.compare`: see pipeline/analysis/compare.py."""
import sys

from pipeline.analysis.compare import main

if __name__ == "__main__":
    sys.exit(main())
