"""Runs the Python binding tests (every `test_*.py` here, or the stems named on the
command line) against one tidings-testbed; see harness.py for the environment."""

import glob
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402  (the path is set just above)


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    stems = argv or sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(here, "test_*.py")))
    return harness.run([importlib.import_module(s) for s in stems])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
