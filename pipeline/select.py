"""`python -m pipeline.select`: see pipeline/analysis/select.py."""
import sys

from pipeline.analysis.select import main

if __name__ == "__main__":
    sys.exit(main())
