from __future__ import annotations

import pytest

from trainer.errors import ConfigError
from trainer.evaluation.humaneval import (
    STOP_SEQUENCES,
    all_problems,
    has_stopped,
    prepare_prompt,
    select_problems,
    to_completion,
    truncate_completion,
)


def test_all_164_problems_in_order() -> None:
    problems = all_problems()
    assert len(problems) == 164
    assert [p["task_id"] for p in problems] == [f"HumanEval/{i}" for i in range(164)]


def test_subset_by_count_is_a_prefix() -> None:
    ids = [p["task_id"] for p in select_problems("40")]
    assert ids == [f"HumanEval/{i}" for i in range(40)]
    assert len(select_problems(5)) == 5
    assert len(select_problems("all")) == 164


def test_subset_by_ids_keeps_order() -> None:
    assert [p["task_id"] for p in select_problems("HumanEval/7,3")] == ["HumanEval/7", "HumanEval/3"]
    assert [p["task_id"] for p in select_problems(["HumanEval/1"])] == ["HumanEval/1"]


@pytest.mark.parametrize("bad", ["0", "165", "HumanEval/200,1", "1,1", "foo,bar", ""])
def test_bad_subsets_name_the_field(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        select_problems(bad)
    assert info.value.field == "problems"


def test_named_subset_is_fixed_and_documented() -> None:
    from trainer.evaluation import humaneval

    chosen = select_problems("smollm2-solvable")
    ids = [p["task_id"] for p in chosen]
    assert ids == [f"HumanEval/{i}" for i in humaneval.NAMED_SUBSETS["smollm2-solvable"]]
    assert len(ids) == 14 and "smollm2-solvable" in (humaneval.__doc__ or "")
    with pytest.raises(ConfigError, match="smollm2-solvable"):
        select_problems("smollm2-unknown")


def test_selected_problems_are_copies() -> None:
    select_problems("1")[0]["prompt"] = "corrupted"
    assert select_problems("1")[0]["prompt"] != "corrupted"


def test_prompt_trailing_whitespace_is_stripped() -> None:
    for p in select_problems("all"):
        prepared = prepare_prompt(p["prompt"])
        assert prepared == prepared.rstrip()
        assert p["prompt"].startswith(prepared)


def test_truncation_stops_at_each_stop_sequence() -> None:
    body = "\n    return 1"
    for stop in STOP_SEQUENCES:
        text = body + stop + "tail"
        assert truncate_completion(text) == body, stop
        assert has_stopped(text)


def test_truncation_stops_at_top_level_code_but_keeps_nested_defs() -> None:
    text = "\n    def helper(x):\n        return x\n\n    return helper(1)\nfoo = 3\n"
    assert truncate_completion(text) == "\n    def helper(x):\n        return x\n\n    return helper(1)"
    assert has_stopped(text)
    assert not has_stopped("\n    def helper(x):\n        return x\n")


def test_fence_and_prose_are_cut() -> None:
    assert truncate_completion("\n    return a + b\n```\n\nThis function adds") == "\n    return a + b"


def test_completion_re_appends_to_the_original_prompt() -> None:
    problem = select_problems("HumanEval/2")[0]
    generated = "\n    return number % 1.0\n\ndef other():"
    completion = to_completion(problem, generated)
    # What the model wrote after the stripped prompt is exactly what runs.
    assert problem["prompt"] + completion == prepare_prompt(problem["prompt"]) + generated.split(
        "\n\ndef")[0]
