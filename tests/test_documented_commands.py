"""Every command shown in a module docstring (avfusion/, baselines/, benchmarks/), the Snakefile, README.md
and baselines/README.md runs, verbatim, at smoke scale (torchtune's habit for its recipe configs).

The commands run in a scratch folder that holds `avfusion/` and `workflow/` (links to the repo, for the
example configs of avfusion/tasks/examples/ and the DAG configs) and `data/tuxav-smoke` (the smoke
benchmark, made by the documented `avfusion data make-tuxav` command). `avfusion ...` commands run
in-process through the console script's `avfusion.cli.main`; `python -m ...` and `snakemake ...` run as
subprocesses. Adjusted, with the reason in ADJUSTED: the tiny benchmark is made at smoke scale, and
Snakemake commands that run the whole DAG are dry runs (-n). Not run, with the reason in SKIPPED:
commands that need a SLURM cluster, a GPU, or the paper's datasets, and the two Makefile targets
(`make tiny` is the DAG dry-run here; `make test` is this suite).
"""
from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
PREFIX = re.compile(r"^\s*((?:avfusion|python -m avfusion\S*|snakemake|make) .*)$")


def _commands(text: str) -> list[str]:
    """Command lines of a text ('\\' continues a line; a trailing '# comment' is dropped)."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        match = PREFIX.match(lines[i])
        if match:
            command = match.group(1).rstrip()
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1].rstrip() + " " + lines[i].strip()
            out.append(re.sub(r"\s+#.*$", "", command).strip())
        i += 1
    return out


def documented_commands() -> list[tuple[str, str]]:
    found = []
    sources = sorted([*REPO.glob("avfusion/**/*.py"), *REPO.glob("baselines/*.py"), *REPO.glob("benchmarks/*.py")])
    for path in sources:
        doc = ast.get_docstring(ast.parse(path.read_text()))
        found += [(str(path.relative_to(REPO)), c) for c in _commands(doc or "")]
    for name in ("Snakefile", "README.md", "baselines/README.md"):
        found += [(name, c) for c in _commands((REPO / name).read_text())]
    return found


SKIPPED = {   # pattern -> why the command is not run here
    r"^avfusion <task>": "a usage template, not a command (each task's own command is run)",
    r"\.\.\.": "a usage template ('...' stands for a whole job config; the DAG runs it for every job)",
    r"--manifest data/vggsound ": "needs the VGGSound manifest of `data prepare` (the paper's data)",
    r"^avfusion data prepare ": "needs the paper's dataset under --root (the layout parsers are tested on fixtures "
                                "in tests/test_layouts.py)",
    r"--executor slurm|--profile slurm": "needs a SLURM cluster (tests/test_workflow_slurm.py runs the SLURM path)",
    r"device=cuda": "needs a GPU" if not torch.cuda.is_available() else "",
    r"^make tiny": "the whole tiny DAG (44 min here with the install, README); its snakemake command is dry-run here",
    r"^make test": "the test suite itself",
}
ADJUSTED = {   # (pattern, replacement, why)
    "tiny benchmark at smoke scale": (r"--scale tiny", "--scale smoke", "1920 clips take minutes; same code path"),
    "DAG as a dry run": (r"^snakemake (?!-n)", "snakemake -n ", "the whole DAG takes minutes to hours; -n plans it"),
}
MEDIA = {"clip.mp4": "deepavfusion/demos/demo1_sep1.mp4", "frame.jpg": "deepavfusion/demos/demo2_sep1.png",
         "sound.ogg": "tuxpaint_image_sound/stamps/hobbies/music/string/violin.ogg"}


def _skip_reason(command: str) -> str:
    return next((why for pattern, why in SKIPPED.items() if why and re.search(pattern, command)), "")


def _adjust(command: str) -> str:
    for pattern, replacement, _ in ADJUSTED.values():
        command = re.sub(pattern, replacement, command)
    return command


COMMANDS = documented_commands()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, testdata):
    """A scratch folder laid out like the repo root, with the smoke benchmark and the pretraining run
    that the downstream commands start from (both made by documented commands)."""
    root = tmp_path_factory.mktemp("documented")
    for name in ("avfusion", "workflow", "Snakefile"):
        (root / name).symlink_to(REPO / name)
    for placeholder, real in MEDIA.items():
        (root / placeholder).symlink_to(testdata / real)
    (root / "model.yaml").write_text("model: {preset: deepavfusion-smoke}\n")
    # README "my_paths.yaml": the paper datasets' roots (a dry run plans from them, nothing is read)
    paper = yaml.safe_load((REPO / "workflow/config/scales/paper.yaml").read_text())["datasets"]
    (root / "my_paths.yaml").write_text(yaml.safe_dump({"datasets": {
        name: {**spec, "root": f"/nonexistent/{name}"} for name, spec in paper.items()}}))
    first = ["avfusion data make-tuxav --scale smoke --out data/tuxav-smoke",
             "avfusion pretrain --config avfusion/tasks/examples/pretrain.yaml --set optim.epochs=2 --out runs/pretrain/x"]
    for command in first:
        assert command in [c for _, c in COMMANDS], f"the documented command {command!r} is gone"
        _run(command, root)
    return root


def _run(command: str, cwd: Path) -> None:
    argv = shlex.split(command)
    if argv[0] == "avfusion":
        from avfusion.cli import main

        old = Path.cwd()
        os.chdir(cwd)
        try:
            assert main(argv[1:]) == 0, command
        finally:
            os.chdir(old)
        return
    if argv[0] == "python":
        argv[0] = sys.executable
    else:   # snakemake from this interpreter's environment
        argv[0] = str(Path(sys.executable).parent / argv[0])
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"


def test_the_scan_finds_the_documented_commands():
    sources = {source for source, _ in COMMANDS}
    assert {"README.md", "Snakefile", "avfusion/tasks/pretrain.py", "avfusion/tasks/linprobe.py",
            "avfusion/tasks/efficiency.py", "avfusion/launch.py", "baselines/README.md"} <= sources
    tasks = {"pretrain", "knn-probe", "linprobe", "finetune", "separation", "segmentation", "localization",
             "efficiency", "classical-separation"}
    assert tasks <= {shlex.split(c)[1] for _, c in COMMANDS if c.startswith("avfusion ")}
    assert all(_skip_reason(c) or "<" not in c for _, c in COMMANDS), "a placeholder in a command that is run"


@pytest.mark.slow
@pytest.mark.parametrize("source,command", COMMANDS, ids=[f"{s}:{c[:60]}" for s, c in COMMANDS])
def test_documented_command_runs(source, command, workdir):
    reason = _skip_reason(command)
    if reason:
        pytest.skip(reason)
    torch.set_num_threads(1)
    if "init.checkpoint=runs/pretrain " in command + " ":   # the README's linprobe starts from the README's pretrain run
        readme_pretrain = next(c for s, c in COMMANDS if s == "README.md" and c.startswith("avfusion pretrain"))
        if not (workdir / "runs/pretrain/metrics.json").exists():
            _run(readme_pretrain, workdir)
    _run(_adjust(command), workdir)
