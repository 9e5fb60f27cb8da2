"""Helpers to run the examples from the tests."""

import importlib.util
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_example(name):
    path = os.path.join(ROOT, "examples", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(name, args, env=None, timeout=600):
    """Runs an example in its own process (for flags that must be set
    before Keras starts)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", f"{name}.py"), *args],
        capture_output=True, text=True, timeout=timeout, env=full_env,
    )
