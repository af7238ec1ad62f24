"""Loads the scripts in ``examples/`` as modules, so the tests run the code the README shows."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from types import ModuleType

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def load_example(name: str) -> ModuleType:
    """``examples/<name>.py`` imported under the module name ``example_<name>``."""
    module_name = f"example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, os.path.join(EXAMPLES, f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


# gloo's C++ teardown can abort a rank at interpreter exit ("terminate called without an active
# exception", SIGABRT) after the script has finished its work: seen twice in about ten CI runs of the
# two torchrun examples, in either example, with a barrier before destroy_process_group. A run that
# fails that way (and only that way) is started once more; any other failure fails the test at once.
TEARDOWN_ABORT = "terminate called without an active exception"


def run_torchrun_example(name: str, *args: str, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node NPROC examples/<name>.py ARGS`` with this checkout's src."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    src = os.path.join(os.path.dirname(EXAMPLES), "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    cmd += [os.path.join(EXAMPLES, f"{name}.py"), *args]
    for _ in range(2):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode == 0 or TEARDOWN_ABORT not in proc.stderr:
            break
    return proc
