"""The benchmark scripts (``benchmarks/``) as modules, for the tests that read them: not a package, so each
is loaded from its file, with ``benchmarks/`` on the path for their own ``import record``."""

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmark_module(name: str):
    """``benchmarks/<name>.py`` loaded as the module ``bench_<name>`` (registered, as a dataclass in it needs)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module
