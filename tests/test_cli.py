"""The `avfusion` console script as a user meets it: --version, bare call, help texts, timestamps.

Exit codes and streams are checked on the real entry point (`python -m avfusion.cli`, a subprocess,
as a shell would); the help of every command in-process (one import of each module, not 13 pythons).
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from avfusion import __version__
from avfusion.cli import COMMANDS, user_help
from avfusion.progress import Progress


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avfusion.cli", *args], capture_output=True, text=True, timeout=120)


def test_version_prints_the_package_version():
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"avfusion {__version__}"


def test_bare_avfusion_prints_usage_and_exits_2():
    out = run_cli()
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.startswith("usage: avfusion")
    assert "a COMMAND is required" in out.stderr


def test_unknown_command_and_unknown_option_exit_2():
    assert run_cli("nosuch").returncode == 2
    out = run_cli("--nosuch")
    assert out.returncode == 2 and "usage: avfusion" in out.stderr


def test_top_level_help_lists_commands_and_keeps_example_lines():
    out = run_cli("--help")
    assert out.returncode == 0
    for name in COMMANDS:
        assert name in out.stdout
    lines = out.stdout.splitlines()
    assert "    avfusion data make-tuxav --scale smoke --out data/tuxav-smoke" in lines
    assert "    avfusion model-summary --preset deepavfusion-vggsound" in lines


def _help(argv: list[str], capsys) -> str:
    from avfusion.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_command_help_keeps_examples_on_their_own_lines_and_cites_no_spec_sections(capsys):
    """The module docstring is the description; RawDescriptionHelpFormatter keeps its lines."""
    for name in COMMANDS:
        text = _help([name, "--help"], capsys)
        assert not re.search(r"\bspec\b", text, re.IGNORECASE), (name, text)
    out = _help(["pretrain", "--help"], capsys).splitlines()
    example = "    avfusion pretrain --config avfusion/tasks/examples/pretrain.yaml --set optim.epochs=2 --out runs/pretrain/x"
    assert example in out
    assert "AV-MAE pretraining (or image-/audio-only MAE) with the kNN probe curve (Figure 3)." in out


@pytest.mark.parametrize("text, expected", [
    ("curve (spec 3, Figure 3).", "curve (Figure 3)."),
    ("branches (spec 2.1):", "branches:"),
    ("recipe `paper`: Adam, no ramp (spec 8 items 12, 17). Scale", "recipe `paper`: Adam, no ramp. Scale"),
    ("kNN probe (spec 3.3) on `knn.split`", "kNN probe on `knn.split`"),
    ("(official eval_linprobe.py: single clip, spec 4.1).", "(official eval_linprobe.py: single clip)."),
    ("layout (spec section 5) -> manifest", "layout -> manifest"),
    ("separation (spec 4.3; Sound of Pixels protocol)", "separation (Sound of Pixels protocol)"),
    ("spectral_masking keeps its name", "spectral_masking keeps its name"),
])
def test_user_help_drops_spec_pointers_only(text, expected):
    assert user_help(text) == expected


def test_data_prepare_help_lists_every_dataset(capsys):
    from avfusion.data.layouts import DATASETS

    text = _help(["data", "prepare", "--help"], capsys)
    listed = re.findall(r"^  ([a-z0-9_-]+)  +\S", text.split("datasets (DATASET):", 1)[1], re.MULTILINE)
    assert listed == list(DATASETS)
    assert re.search(r"^  avsbench_s4 +AVSBench S4 \(single source\) segmentation, Table 2$", text, re.MULTILINE)


def test_progress_lines_start_with_a_timestamp(capsys):
    import io

    stream = io.StringIO()
    progress = Progress(total=4, desc="train", every=2, stream=stream)
    for _ in range(4):
        progress.update(loss=0.5)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d train [24]/4 \(\d+%\) ", line), line
