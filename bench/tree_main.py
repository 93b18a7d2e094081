#!/usr/bin/env python3
"""`python -m proxy64 ARGS` from another tree: `python bench/tree_main.py DIR ARGS`.

DIR holds a `proxy64` package (e.g. `git archive COMMIT proxy64 | tar -x -C DIR`); the
editable install's import finder is removed first, since it would otherwise import this
checkout's package whatever sys.path says. bench/run.py --baseline DIR uses it to measure
another commit's proxy64 beside this one in the same run.
"""

from __future__ import annotations

import runpy
import sys

if __name__ == "__main__":
    root = sys.argv.pop(1)
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
    sys.path.insert(0, root)
    sys.argv[0] = "proxy64"
    runpy.run_module("proxy64", run_name="__main__", alter_sys=True)
