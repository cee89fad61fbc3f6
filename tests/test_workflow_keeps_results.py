"""A finished run survives config mistakes: a bad `tasks.*` key fails when the Snakefile is parsed
(checked by the task's own Config class), naming the key, before any run folder is touched; a
valid change reruns the job in <run>.next, and the finished metrics.json stays byte for byte until
the new run has finished (a failed replacement leaves it as it was).
"""
from __future__ import annotations

from pathlib import Path

import yaml

from test_workflow import _common_namespace, snakemake

FAST = {"tasks": {"pretrain": {"optim": {"epochs": 1, "max_steps_per_epoch": 1}, "knn": {"enabled": False}}}}


def _run(tmp_path, *configs, dry=False):
    files = []
    for i, cfg in enumerate([FAST, *configs]):
        path = tmp_path / f"config{i}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        files.append(str(path))
    target = f"{tmp_path}/runs/smoke/pretrain/mae_audio/metrics.json"
    return snakemake(*(["-n"] if dry else []), "--cores", "1", "--configfile", *files, "--config", "scale=smoke",
                     f"results={tmp_path}", f"data_dir={tmp_path}/data", "--", target, timeout=900)


def test_typo_in_tasks_section_is_refused_at_parse_time_and_the_finished_result_stays(tmp_path):
    run = tmp_path / "runs/smoke/pretrain/mae_audio"
    first = _run(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    finished = (run / "metrics.json").read_bytes()

    typo = {"tasks": {"pretrain": {"optim": {"epcohs": 3}}}}
    for dry in (True, False):
        out = _run(tmp_path, typo, dry=dry)
        said = out.stdout + out.stderr   # Snakemake 9 prints a parse error on stdout
        assert out.returncode == 1
        assert "config error at 'tasks.pretrain': job pretrain/" in said
        assert "unknown config key 'optim.epcohs'" in said
        assert (run / "metrics.json").read_bytes() == finished
        assert sorted(p.name for p in run.parent.iterdir()) == ["mae_audio"]   # nothing moved, nothing new

    # a valid change whose job fails at start: the finished run is left as it was
    failing = _run(tmp_path, {"tasks": {"pretrain": {"data": {"split": "nosuchsplit"}}}})
    assert failing.returncode != 0
    assert (run / "metrics.json").read_bytes() == finished
    assert not list(run.parent.glob("mae_audio.replaced-*"))
    assert "no rows with split 'nosuchsplit'" in (run / "launch.log").read_text()   # the job's one-line error
    assert (run.parent / "mae_audio.next/job_config.yaml").is_file()

    # a valid change that finishes: the new run takes the folder, the old one moves aside whole
    changed = _run(tmp_path, {"tasks": {"pretrain": {"optim": {"blr": 3.0e-4}}}})
    assert changed.returncode == 0, changed.stderr[-3000:]
    (old,) = run.parent.glob("mae_audio.replaced-*")
    assert (old / "metrics.json").read_bytes() == finished
    assert yaml.safe_load((run / "job_config.yaml").read_text())["optim"]["blr"] == 3.0e-4
    assert (run / "metrics.json").read_bytes() != finished and not (run.parent / "mae_audio.next").exists()


def test_every_job_config_of_both_small_scales_is_checked_by_its_task(tmp_path):
    """The parse-time check covers the variant sections too (`variants.<name>.<task>`)."""
    import pytest

    namespace = _common_namespace("smoke", tmp_path)
    namespace["VARIANTS"]["cav_mae"]["linprobe"] = {"heads": ["fusion"], "optim": {"bta": 1}}
    with pytest.raises(Exception, match=r"tasks\.linprobe or variants\.cav_mae\.linprobe.*'optim\.bta'"):
        namespace["job_config"]("linprobe", "cav_mae")
