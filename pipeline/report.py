"""`python -m pipeline.report`: see pipeline/analysis/report.py."""
import sys

from pipeline.analysis.report import main

if __name__ == "__main__":
    sys.exit(main())
