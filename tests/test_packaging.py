"""Packaging: the conda environment for clusters pins exactly what requirements.txt pins."""
import re

import yaml


def _pins(lines):
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(?:==\s*(\S+))?", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_environment_yml_pins_equal_requirements_txt(repo_root):
    req = _pins((repo_root / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((repo_root / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = _pins(pip_section)
    conda_torch = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("pytorch="))
    assert req.pop("torch") == conda_torch.split("=", 1)[1]
    assert conda == req
