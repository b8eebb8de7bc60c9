"""Study files: the shipped ones parse; malformed ones fail with the field named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from optimizer.study.limits import MAX_DEPTH, MAX_TEXT_BYTES
from optimizer.study.studyfile import load_study_file, parse_study, parse_study_text
from trainer.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def base() -> dict[str, Any]:
    return {
        "name": "x",
        "distributions": [{"kind": "iid"}, {"kind": "dirichlet", "alpha": 0.1}],
        "space": {"scaling_factor": {"low": 0.25, "high": 4.0, "log": True},
                  "participation": {"low": 0.1, "high": 1.0},
                  "model": {"choices": ["tiny-random", "smollm2-135m"]}},
        "profile": {"problems": "20", "samples": 10},
    }


@pytest.mark.parametrize("path", ["studies/quickstart.toml", "studies/gpu.toml"])
def test_shipped_study_files_parse(path: str) -> None:
    cfg = load_study_file(ROOT / path)
    assert {p.name for p in cfg.space} >= {"scaling_factor", "participation"}
    assert cfg.storage_url.startswith("sqlite:///")
    labels = [d.label for d in cfg.distributions]
    assert "iid" in labels and any(label.startswith("dirichlet") for label in labels)


def test_names_and_common_random_numbers() -> None:
    cfg = parse_study({**base(), "seed": 7})
    dist = cfg.distributions[1]
    assert cfg.study_name(dist) == "x/dirichlet-0.1"
    fixed = cfg.base_params(dist)
    assert fixed["seed"] == fixed["partition_seed"] == fixed["eval_seed"] == 7
    assert fixed["distribution"] == "dirichlet" and fixed["alpha"] == 0.1
    assert cfg.storage_url == "sqlite:///runs/x.db"
    assert [p.name for p in cfg.space if p.is_categorical] == ["model"]


def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    node = data
    *path, last = dotted.split(".")
    for key in path:
        node = node.setdefault(key, {})
    node[last] = value
    return data


@pytest.mark.parametrize(("dotted", "value", "field", "accepted_part"), [
    ("nme", "x", "nme", "distributions"),
    ("name", "a/b", "name", "no '/'"),
    ("n_trials", 0, "n_trials", ">= 1"),
    ("n_trials", "ten", "n_trials", "an integer"),
    ("space.scaling_factor.low", -1.0, "space.scaling_factor.low", "(0, high)"),
    ("space.scaling_factor.lo", 1.0, "space.scaling_factor.lo", "high"),
    ("space.participation.high", 1.5, "space.participation", "(0, 1]"),
    ("space.colour", {"low": 0, "high": 1}, "space.colour", "scaling_factor"),
    ("space.model.choices", [], "space.model.choices", "distinct"),
    ("profile.samples", 3, "profile.samples", ">= k"),
    ("profile.sampels", 3, "profile.sampels", "samples"),
    ("profile.scaling_factor", 1.0, "profile.scaling_factor", "one place"),
    ("trainer.timeout_s", -5, "trainer.timeout_s", "(0, 604800]"),  # bounded since issue 10
    ("trainer.endpoint", ["a:1"], "trainer.endpoint", "endpoints"),
    ("trainer.function", "nocolon", "trainer.function", "module.path:callable"),
    ("stop.probability", 1.5, "stop.probability", "(0, 1)"),
    ("storage", "mysql://x", "storage", "postgresql://"),
    ("sampler.n_startup_trials", 0, "sampler.n_startup_trials", ">= 1"),
])
def test_bad_values_name_the_field(dotted: str, value: Any, field: str,
                                   accepted_part: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_study(_set(base(), dotted, value))
    assert err.value.field == field, str(err.value)
    assert accepted_part in (err.value.accepted or ""), str(err.value)
    assert field in str(err.value)


@pytest.mark.parametrize(("dists", "field"), [
    ([], "distributions"),
    ([{"kind": "weird"}], "distributions[0].kind"),
    ([{"kind": "dirichlet"}], "distributions[0].alpha"),
    ([{"kind": "dirichlet", "alpha": 0}], "distributions[0].alpha"),
    ([{"kind": "iid", "alpha": 0.3}], "distributions[0].alpha"),
    ([{"kind": "iid"}, {"kind": "iid"}], "distributions"),
])
def test_bad_distributions(dists: list[dict[str, Any]], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_study({**base(), "distributions": dists})
    assert err.value.field == field


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="invalid TOML") as err:
        load_study_file(bad)
    assert err.value.field == "study_file"
    with pytest.raises(ConfigError) as err:
        load_study_file(tmp_path / "missing.toml")
    assert err.value.field == "study_file"


def _with_points(points: list[dict[str, Any]], startup: int = 6) -> dict[str, Any]:
    return {**base(), "initial_points": points, "sampler": {"n_startup_trials": startup}}


def test_initial_points_parse_in_order() -> None:
    points = [{"scaling_factor": s, "participation": 0.5, "model": "tiny-random"}
              for s in (0.5, 1.0, 2.0)]
    cfg = parse_study(_with_points(points))
    assert [p["scaling_factor"] for p in cfg.initial_points] == [0.5, 1.0, 2.0]


@pytest.mark.parametrize(("point", "field"), [
    ({"scaling_factor": 9.0, "participation": 0.5, "model": "tiny-random"},
     "initial_points[0].scaling_factor"),
    ({"scaling_factor": 1.0, "model": "tiny-random"}, "initial_points[0].participation"),
    ({"scaling_factor": 1.0, "participation": 0.5, "model": "gpt"}, "initial_points[0].model"),
    ({"scaling_factor": 1.0, "participation": 0.5, "model": "tiny-random", "lr": 1},
     "initial_points[0].lr"),
])
def test_bad_initial_points_name_the_field(point: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_study(_with_points([point]))
    assert err.value.field == field


def test_more_initial_points_than_startup_trials_is_an_error() -> None:
    point = {"scaling_factor": 1.0, "participation": 0.5, "model": "tiny-random"}
    with pytest.raises(ConfigError) as err:
        parse_study(_with_points([point, point], startup=1))
    assert err.value.field == "sampler.n_startup_trials"


# ------------------------------------------------------- bounds (issue 10) ----


def _trainer(**values: Any) -> dict[str, Any]:
    return {**base(), "trainer": values}


@pytest.mark.parametrize(("data", "field", "accepted_part"), [
    ({**base(), "n_trials": 1001}, "n_trials", "<= 1000"),
    ({**base(), "seed": -1}, "seed", ">= 0"),
    ({**base(), "seed": 2**31}, "seed", "<= 2147483647"),
    ({**base(), "n_trials": 10, "sampler": {"n_startup_trials": 11}},
     "sampler.n_startup_trials", "<= 10"),
    ({**base(), "n_trials": 1000, "sampler": {"n_startup_trials": 3000}},
     "sampler.n_startup_trials", "<= 100"),
    (_trainer(heartbeat_s=0.001, lease_s=0.002), "trainer.heartbeat_s", "[0.1, 600]"),
    (_trainer(heartbeat_s=1.0, lease_s=1.5), "trainer.lease_s", "[2, 86400]"),
    (_trainer(heartbeat_s=5.0, lease_s=10.0), "trainer.lease_s", "(10, 86400]"),
    (_trainer(timeout_s=1e308), "trainer.timeout_s", "(0, 604800]"),
    (_trainer(workers=65), "trainer.workers", "<= 64"),
    (_trainer(max_retries=21), "trainer.max_retries", "<= 20"),
    (_trainer(endpoints=[f"h:{i}" for i in range(65)]), "trainer.endpoints", "at most 64"),
    (_trainer(function="m:" + "f" * 2000), "trainer.function", "at most 1024"),
    ({**base(), "storage": "sqlite:///" + "x" * 2000}, "storage", "at most 1024"),
    ({**base(), "stop": {"min_trials": 10**6}}, "stop.min_trials", "<= 1000"),
    ({**base(), "stop": {"epsilon": 5.0}}, "stop.epsilon", "(0, 1]"),
    ({**base(), "name": "x" * 129}, "name", "1-128"),
    ({**base(), "name": "../x"}, "name", "no '/'"),
    ({**base(), "name": "a b"}, "name", "no spaces"),
    ({**base(), "distributions": [{"kind": "dirichlet", "alpha": a} for a in range(1, 18)]},
     "distributions", "e.g."),
    ({**base(), "distributions": [{"kind": "dirichlet", "alpha": 1e300}]},
     "distributions[0].alpha", "(0, 1e+06]"),
    ({**base(), "space": {**base()["space"], "model": {"choices": [str(i) for i in range(65)]}}},
     "space.model.choices", "at most 64"),
])
def test_every_size_and_time_is_bounded(data: dict[str, Any], field: str,
                                        accepted_part: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_study(data)
    assert err.value.field == field, str(err.value)
    assert accepted_part in (err.value.accepted or ""), str(err.value)
    assert len(str(err.value)) < 1500  # a long value is never echoed whole


def test_bounds_leave_the_limits_themselves_valid() -> None:
    cfg = parse_study({**base(), "n_trials": 1000, "seed": 2**31 - 1,
                       "sampler": {"n_startup_trials": 100},
                       "trainer": {"heartbeat_s": 0.1, "lease_s": 2.0, "timeout_s": 604800.0,
                                   "workers": 64, "max_retries": 20}})
    assert cfg.trainer.lease_s == 2.0 and cfg.sampler.n_startup_trials == 100


@pytest.mark.parametrize("text", [
    "a = " + "[" * 5000 + "]" * 5000,
    "a = " + "{b = " * 3000 + "1" + "}" * 3000,
    "profile." + ".".join(["x"] * 20000) + " = 1",
    "a = " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
])
def test_deeply_nested_toml_is_a_config_error(text: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nested too deeply") as err:
        parse_study_text(text, source="<t>", field="study_toml")
    assert err.value.field == "study_toml"
    path = tmp_path / "deep.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="nested too deeply") as err:
        load_study_file(path)
    assert err.value.field == "study_file"


def test_text_size_is_bounded() -> None:
    with pytest.raises(ConfigError, match="bytes") as err:
        parse_study_text("# " + "x" * MAX_TEXT_BYTES, source="<t>", field="study_toml")
    assert err.value.field == "study_toml"
    with pytest.raises(ConfigError, match="UTF-8"):
        parse_study_text(b"\xff\xfe", source="<t>", field="study_file")
