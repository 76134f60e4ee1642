"""A library that takes FAKE_LIBRARY_IMPORT_S (env) to import; tests/fake_slow_import_stage.py imports it on use."""
import os
import time

time.sleep(float(os.environ.get("FAKE_LIBRARY_IMPORT_S", 0)))
