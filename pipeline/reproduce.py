"""`python -m pipeline.reproduce`: see pipeline/run/reproduce.py."""
import logging
import sys

from pipeline.run.reproduce import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("pipeline", "stages"):
        logging.getLogger(name).setLevel(logging.INFO)
    sys.exit(main())
