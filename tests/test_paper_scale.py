"""The paper scale's job configs, as the Snakefile writes them: every task runs on the ranks its resources
ask for (one per GPU) with the official effective batch (per rank x ranks x accumulation) and the official
lr, and AVSS segmentation gets the 71-class head. The numbers are spec 3.2 / 4.x (official README runs)."""
from __future__ import annotations

import importlib

import pytest
import yaml

from avfusion.tasks.common import load_job_config
from test_workflow import _common_namespace

# task -> (effective batch, lr) of the official README runs: pretrain 64 x 8 GPUs, lr 3e-4 (spec 3.2);
# linprobe 64 x 4 x 4, LARS lr 1.2 (4.1); finetune 32 x 4 x 4, lr 6e-4 (4.2); separation 16 x 8 x 4,
# lr 6e-4 (4.3); segmentation S4 16 x 8 x 4, lr 4e-4 (4.5); localization Adam 1e-4, batch 128 (A.2, 4.4)
OFFICIAL = {"pretrain": (512, 3e-4), "linprobe": (1024, 1.2), "finetune": (512, 6e-4),
            "separation": (512, 6e-4), "segmentation": (512, 4e-4), "localization": (128, 1e-4)}


def paper_job(tmp_path, task: str, variant: str = "deepavfusion"):
    namespace = _common_namespace("paper", tmp_path)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(namespace["job_config"](task, variant)))
    module = importlib.import_module(f"avfusion.tasks.{task}")
    cfg = load_job_config(module.Config, [str(path)], [], getattr(module, "RECIPES", None))
    return cfg, namespace["job_ranks"](task), namespace["job_resources"](task)


@pytest.mark.parametrize("task", sorted(OFFICIAL))
def test_paper_jobs_run_one_rank_per_gpu_with_the_official_effective_batch_and_lr(tmp_path, task):
    cfg, ranks, resources = paper_job(tmp_path, task)
    effective, lr = OFFICIAL[task]
    assert ranks == resources["gpus"] >= 4  # one rank (SLURM task) per GPU
    optim = cfg.optim.for_world(ranks)
    assert optim.batch_size * optim.accum_iter * ranks == effective
    assert optim.absolute_lr(ranks) == pytest.approx(lr)
    # precision as the official code: fp16 + GradScaler in pretraining, fp32 downstream
    assert optim.amp == ("fp16" if task == "pretrain" else "off")


def test_paper_avss_segmentation_has_71_classes_and_s4_is_binary(tmp_path):
    avss, _, _ = paper_job(tmp_path, "segmentation")
    s4, _, _ = paper_job(tmp_path, "segmentation", "deepavfusion@avsbench_s4")
    assert avss.data.manifest.endswith("/avsbench_avss") and avss.num_classes == 71 and avss.oversample == 5
    assert s4.data.manifest.endswith("/avsbench_s4") and s4.num_classes == 1 and s4.oversample == 10
    assert avss.data.eval_split == s4.data.eval_split == "val"  # the official evaluation split (spec 4.5)


def test_effective_batch_that_the_ranks_do_not_divide_is_refused_naming_the_key():
    from avfusion.config import ConfigError
    from avfusion.optim import OptimConfig

    with pytest.raises(ConfigError, match="optim.effective_batch"):
        OptimConfig(batch_size=48, effective_batch=512).for_world(4)
    assert OptimConfig(batch_size=16, effective_batch=512).for_world(8).accum_iter == 4
