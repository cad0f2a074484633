"""The layout rules (README, "How the code is laid out"), read from the source by tweetpulse.imports:
no import cycles, no role edge outside the design, a reason for every import inside a function, and
a serving path that loads no training stack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tweetpulse.imports import ROOT, Module, cycles, modules, role_violations

HEAVY = ("torch", "transformers", "peft", "optimum", "datasets", "matplotlib", "accelerate")


@pytest.fixture(scope="module")
def found() -> dict[str, Module]:
    return modules()


def test_no_import_cycles_counting_imports_inside_functions(found: dict[str, Module]) -> None:
    assert cycles(found) == []


def test_roles_import_only_the_core_and_the_roles_the_design_allows(found: dict[str, Module]) -> None:
    assert role_violations(found) == []


def test_every_import_inside_a_function_says_why(found: dict[str, Module]) -> None:
    missing = [
        f"{module.path.relative_to(ROOT)}:{line} {target}"
        for module in found.values()
        for line, target, reason in module.deferred
        if not reason
    ]
    assert not missing, "imports inside functions without a one-line reason comment:\n" + "\n".join(missing)


def loaded_by(module: str) -> list[str]:
    """The modules a fresh interpreter holds after importing `module`."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_serving_path_loads_no_torch_transformers_training_or_retraining() -> None:
    loaded = loaded_by("tweetpulse.processors.app")
    assert [m for m in loaded if m.split(".")[0] in ("torch", "transformers")] == []
    assert [m for m in loaded if m.startswith(("tweetpulse.training", "tweetpulse.retraining"))] == []


@pytest.mark.parametrize("module", ["tweetpulse.training.pipeline", "tweetpulse.retraining.scheduler"])
def test_training_and_retraining_load_the_training_stack_only_when_a_run_starts(module: str) -> None:
    assert [m for m in loaded_by(module) if m.split(".")[0] in HEAVY] == []
