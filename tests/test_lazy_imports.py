"""``scalopt.theory`` and the theory-only CLI checks run without torch; ``scalopt.X`` still works lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

NO_TORCH = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _Block())
"""


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", NO_TORCH + code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_theory_imports_without_torch():
    out = _run(
        "import scalopt, scalopt.theory, scalopt.schedules\n"
        "from scalopt.theory import biased_sgd_rate, check_adam, estimate_l0l1, parse_schedule\n"
        "from scalopt.theory import reddi\n"
        "print(round(biased_sgd_rate(1.0, 10.0, 0.01, 0.0, method='closed-form').rho2, 6))\n"
        "print(check_adam(lr=1e-3, beta2=parse_schedule('1-1/t', kind='beta2')).satisfied)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))\n"
    )
    assert out.split() == ["0.982", "False", "[]"]


def test_theory_cli_checks_run_without_torch():
    out = _run(
        "from scalopt.cli import main\n"
        "a = main(['check', 'adam', '--lr-decay', '1/sqrt(t)', '--beta2', '1-1/t'])\n"
        "b = main(['check', 'sgd-bias', '--m', '1', '--L', '10', '--alpha', '0.01', '--delta', '0',"
        " '--method', 'closed-form'])\n"
        "print('codes', a, b)\n"
    )
    assert "codes 0 0" in out


def test_the_lazy_package_behaves_as_before():
    import scalopt.optim

    for name in scalopt.__all__:
        assert name in dir(scalopt)
        assert getattr(scalopt, name) is not None
    assert scalopt.AdamW is scalopt.optim.AdamW and scalopt.Shampoo is scalopt.optim.Shampoo
    from scalopt import GenericAdam, distributed, theory  # noqa: F401

    assert scalopt.distributed.__name__ == "scalopt.distributed"
    assert "distributed" in dir(scalopt) and "theory" in dir(scalopt)
    with pytest.raises(AttributeError, match="NoSuchOptimizer"):
        scalopt.NoSuchOptimizer  # noqa: B018
