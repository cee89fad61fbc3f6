"""Packaging: one pinned requirements file for CPU and GPU installs, the conda environment reads it,
pyproject's ranges and python version agree with the pins, the lock file holds every pin, and the
licences are there. (Changed on purpose by issue 18: environment.yml no longer copies the pins; it
takes `-r requirements.txt`, so the two cannot drift; unused dependencies were removed.)"""
import re
import tomllib

import yaml


def _pins(lines):
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(?:==\s*(\S+))?", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_every_requirement_is_pinned_and_environment_yml_reads_the_same_file(repo_root):
    req = _pins((repo_root / "requirements.txt").read_text().splitlines())
    assert req and all(req.values()), [k for k, v in req.items() if not v]
    assert req["torch"] == "2.13.0" and req["scikit-learn"]
    for unused in ("pandas", "pycocotools", "hypothesis", "snakemake-executor-plugin-slurm"):
        assert unused not in req
    env = yaml.safe_load((repo_root / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == ["-r requirements.txt"]


def test_pyproject_agrees_with_the_pins(repo_root):
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    req = _pins((repo_root / "requirements.txt").read_text().splitlines())
    declared = {re.split(r"[<>=!~ ]", d, maxsplit=1)[0].lower().replace("_", "-")
                for d in project["dependencies"] + project["optional-dependencies"]["dev"]}
    assert declared == set(req), (declared ^ set(req))
    assert project["license"] == "Apache-2.0 AND GPL-2.0-or-later"
    for path in project["license-files"]:
        assert (repo_root / path).is_file(), path


def test_lock_file_holds_every_pin_at_its_version(repo_root):
    req = _pins((repo_root / "requirements.txt").read_text().splitlines())
    lock = {}
    for line in (repo_root / "requirements.lock").read_text().splitlines():
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if m:
            lock[m.group(1).lower().replace("_", "-")] = m.group(2)
    for name, version in req.items():
        assert lock.get(name, "").split("+")[0] == version, (name, lock.get(name), version)
    assert not any(n.startswith(("nvidia-", "cuda-", "triton")) for n in lock)   # the CPU lock
    assert "avfusion" not in lock                                               # no editable self


def test_licence_files(repo_root):
    assert (repo_root / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert "GPL-2" in (repo_root / "avfusion/data/assets/tuxpaint/README.md").read_text()
