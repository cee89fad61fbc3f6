"""`avfusion segmentation` at smoke scale: trains through the engine, writes the interface metric keys,
and scores the two trivial masks (all foreground, all background) in both conventions exactly as the
ground truth dictates. Whether training beats those floors is decided on the tiny benchmark's 384 frames
(tests/test_dense_tasks_tiny.py), not here: on 6 smoke frames the outcome depends on the host's
floating-point kernels (F-score 14.85 on one host, 13.53 on another, same seed), and the background-
included mIoU is dominated by the background class, which the all-background mask scores as well."""
import json

import numpy as np
import pytest
import torch

from avfusion.cli import main as cli_main
from avfusion.config import ConfigError, load_config
from avfusion.tasks.segmentation import Config

# model: a job refuses a config without one (it used to default to this preset in these three tasks)
SMOKE = ["model.preset=deepavfusion-smoke", "data.image_size=64", "optim.batch_size=8", "optim.lr=0.002", "optim.warmup_epochs=1",
         "optim.layer_decay=1.0", "decoder_min_width=16", "device=cpu", "data.eval_batch_size=8"]


@pytest.fixture(scope="module")
def tuxav(tuxav_smoke):
    return tuxav_smoke


def test_smoke_segmentation_writes_metrics_and_scores_the_trivial_masks_exactly(tuxav, tmp_path):
    from avfusion.data.datasets import SegmentationDataset

    torch.set_num_threads(1)
    sets = [f"data.manifest={tuxav}", "optim.epochs=12", *SMOKE]
    assert cli_main(["segmentation", *sum((["--set", s] for s in sets), []), "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    m = saved["metrics"]
    print(f"segmentation smoke: avsbench_miou {m['avsbench_miou']:.2f} (all-fg {m['allfg_avsbench_miou']:.2f}, "
          f"all-bg {m['allbg_avsbench_miou']:.2f}), miou {m['miou']:.2f} (all-fg {m['allfg_miou']:.2f}, "
          f"all-bg {m['allbg_miou']:.2f})")
    assert m["n_frames"] == 6 and m["n_skipped_empty"] == 0 and m["steps"] == 48
    for prefix in ("", "allfg_", "allbg_"):
        for key in ("miou", "miou_nobg", "fscore", "avsbench_miou", "avsbench_fscore"):
            assert 0.0 <= m[prefix + key] <= 100.0, prefix + key
    # the floors, from the 6 test masks (binary, every frame has foreground)
    masks = [SegmentationDataset(tuxav, "test", False, 64, 2)[i]["mask"] for i in range(6)]  # (64, 64) each
    fg = np.array([float(mask.mean()) for mask in masks])   # foreground share of each frame
    assert m["allfg_avsbench_miou"] == pytest.approx(100 * fg.mean(), abs=1e-3)   # IoU = |GT| / |image|
    assert m["allbg_avsbench_miou"] == 0.0                                          # no overlap on any frame
    # DeepAVFusion mIoU averages the background and foreground classes: all-bg scores the background share
    assert m["allbg_miou"] == pytest.approx(100 * (1 - fg).mean() / 2, abs=1e-3)
    assert m["allfg_miou"] == pytest.approx(100 * fg.mean() / 2, abs=1e-3)
    beta2 = 0.3   # a constant map: every threshold >= its value keeps all or nothing; F-max = all-fg F
    allfg_f = np.mean([(1 + beta2) * f / (beta2 * f + 1) for f in fg])
    assert m["allfg_fscore"] == pytest.approx(100 * allfg_f, abs=1e-2)
    assert (tmp_path / "checkpoints" / "checkpoint_latest.pth").is_file()
    examples = np.load(tmp_path / "examples.npz")
    assert examples["image"].shape == (4, 64, 64, 3) and examples["pred"].shape == (4, 64, 64)


def test_num_classes_two_is_rejected_with_the_key():
    with pytest.raises(ConfigError, match="num_classes"):
        load_config(Config, [], ["num_classes=2"])


def test_image_size_must_match_the_encoder(tuxav, tmp_path):
    cfg = load_config(Config, [], [f"data.manifest={tuxav}", "model.preset=deepavfusion-smoke", "data.image_size=96",
                                   "device=cpu"])
    from avfusion.tasks.segmentation import run

    with pytest.raises(ConfigError, match="data.image_size"):
        run(cfg, tmp_path)


def test_init_checkpoint_loads_encoder_strictly_and_freezes(tmp_path):
    from avfusion.models.registry import build_encoder

    source = build_encoder({"preset": "deepavfusion-smoke"})
    state = {f"encoder.{k}": v for k, v in source.state_dict().items()}
    state["image_decoder_pred.weight"] = torch.zeros(2)  # non-encoder keys are ignored
    (tmp_path / "checkpoints").mkdir()
    torch.save({"state_dict": state}, tmp_path / "checkpoints" / "checkpoint_latest.pth")
    torch.manual_seed(123)  # a different random init, overwritten by the checkpoint
    loaded = build_encoder({"preset": "deepavfusion-smoke"}, str(tmp_path), 64, freeze=True)
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert not any(p.requires_grad for p in loaded.parameters())
    del state["encoder.fusion_tokens"]
    torch.save({"state_dict": state}, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="fusion_tokens"):
        build_encoder({"preset": "deepavfusion-smoke"}, str(tmp_path / "broken.pth"), 64, False)
    with pytest.raises(FileNotFoundError, match="init.checkpoint"):
        build_encoder({"preset": "deepavfusion-smoke"}, str(tmp_path / "none.pth"), 64, False)
