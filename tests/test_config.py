"""The config mechanism: typed dataclasses from YAML + overrides, errors that name the key."""
from dataclasses import dataclass, field
from typing import Literal

import pytest

from avfusion.config import ConfigError, config_hash, load_config, parse_overrides


@dataclass
class Inner:
    arch: Literal["token", "dense", "factorized"] = "factorized"
    ratio: float = 0.25


@dataclass
class Outer:
    epochs: int = 1
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    layers: list[int] = field(default_factory=list)


@dataclass
class Task:
    inner: Inner = field(default_factory=lambda: Inner(arch="token", ratio=0.5))


def test_yaml_files_and_overrides_merge_left_to_right(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("epochs: 3\ninner: {arch: dense}\n")
    cfg = load_config(Outer, [a], ["inner.ratio=1", "layers=[1, 2]"])
    assert cfg.epochs == 3 and cfg.inner.arch == "dense"
    assert cfg.inner.ratio == 1.0 and isinstance(cfg.inner.ratio, float)
    assert cfg.layers == [1, 2]


def test_unknown_key_is_named_with_accepted_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'inner\.arc'.*'arch'"):
        load_config(Outer, [], ["inner.arc=token"])


def test_wrong_type_and_bad_choice_are_named():
    with pytest.raises(ConfigError, match=r"'epochs'.*integer"):
        load_config(Outer, [], ["epochs=abc"])
    with pytest.raises(ConfigError, match=r"'inner\.arch'.*'token', 'dense', 'factorized'"):
        load_config(Outer, [], ["inner.arch=mlp"])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(Outer, [tmp_path / "nope.yaml"])


def test_hash_changes_with_values_only():
    assert config_hash(Outer()) == config_hash(Outer())
    assert config_hash(Outer()) != config_hash(Outer(epochs=2))
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}


def test_partial_section_keeps_the_fields_own_defaults():
    """A task whose section default differs from the class defaults (e.g. an OptimConfig with layer
    decay) keeps those defaults when only some keys of the section are overridden."""
    assert load_config(Task, [], ["inner.ratio=2"]).inner == Inner(arch="token", ratio=2.0)
    assert load_config(Task, [], []).inner == Inner(arch="token", ratio=0.5)
    assert load_config(Outer, [], ["inner.ratio=2"]).inner == Inner(arch="factorized", ratio=2.0)


def test_set_values_are_read_as_yaml_1_2_numbers(tmp_path):
    """YAML 1.1 (PyYAML) reads 010 as octal 8 and 1e-3 as a string; YAML 1.2 reads 10 and 0.001."""
    assert parse_overrides(["seed=010", "optim.blr=1e-3", "a=1E+2", "b=0o17", "c=0x1f", "d=1_000", "e=.5",
                            "f=-.inf", "g=true", "h=abc"]) == {
        "seed": 10, "optim": {"blr": 0.001}, "a": 100.0, "b": 15, "c": 31, "d": "1_000", "e": 0.5,
        "f": float("-inf"), "g": True, "h": "abc"}
    (tmp_path / "job.yaml").write_text("epochs: 010\ninner: {ratio: 2e-4}\n")
    cfg = load_config(Outer, [tmp_path / "job.yaml"], ["inner.ratio=1e-3"])
    assert cfg.epochs == 10 and cfg.inner.ratio == 1e-3
    with pytest.raises(ConfigError, match="'name': expected a string, got 10"):
        load_config(Outer, [], ["name=010"])
