"""`avfusion segmentation` at smoke scale: trains through the engine, writes the interface metric keys,
and beats the all-foreground mask in both conventions' mIoU and in the per-image F-score.

Measured (seed 0, 48 steps, 6 test frames): miou 45.60 vs all-fg 3.45, fscore 14.85 vs 8.78. Before tuxav
drew every object at one size (the sounding object was larger) it was 46.80 vs 4.52 and 28.36 vs 11.43:
the smaller sounding objects are harder to segment at 64 px, so the F-score margin (asserted +5) is small."""
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
def tuxav(tmp_path_factory):
    from avfusion.data.tuxav import make_tuxav

    out = tmp_path_factory.mktemp("tuxav") / "smoke"
    make_tuxav(out, scale="smoke")
    return out


def test_smoke_segmentation_beats_all_foreground(tuxav, tmp_path):
    torch.set_num_threads(1)
    sets = [f"data.manifest={tuxav}", "optim.epochs=12", *SMOKE]
    assert cli_main(["segmentation", *sum((["--set", s] for s in sets), []), "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    m = saved["metrics"]
    for key in ("miou", "miou_nobg", "fscore", "avsbench_miou", "avsbench_fscore", "n_frames", "n_skipped_empty"):
        assert key in m
    print(f"segmentation smoke: miou {m['miou']:.2f} (all-fg {m['allfg_miou']:.2f}), "
          f"fscore {m['fscore']:.2f} (all-fg {m['allfg_fscore']:.2f}), "
          f"avsbench_miou {m['avsbench_miou']:.2f} (all-fg {m['allfg_avsbench_miou']:.2f})")
    assert m["n_frames"] == 6 and m["steps"] == 48
    assert m["miou"] > m["allfg_miou"] + 20
    assert m["fscore"] > m["allfg_fscore"] + 5
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
    from avfusion.tasks.common import InitConfig, build_task_encoder

    source = build_encoder({"preset": "deepavfusion-smoke"})
    state = {f"encoder.{k}": v for k, v in source.state_dict().items()}
    state["image_decoder_pred.weight"] = torch.zeros(2)  # non-encoder keys are ignored
    (tmp_path / "checkpoints").mkdir()
    torch.save({"state_dict": state}, tmp_path / "checkpoints" / "checkpoint_latest.pth")
    torch.manual_seed(123)  # a different random init, overwritten by the checkpoint
    loaded = build_task_encoder({"preset": "deepavfusion-smoke"}, InitConfig(str(tmp_path)), 64, freeze=True)
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert not any(p.requires_grad for p in loaded.parameters())
    del state["encoder.fusion_tokens"]
    torch.save({"state_dict": state}, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="fusion_tokens"):
        build_task_encoder({"preset": "deepavfusion-smoke"}, InitConfig(str(tmp_path / "broken.pth")), 64, False)
    with pytest.raises(FileNotFoundError, match="init.checkpoint"):
        build_task_encoder({"preset": "deepavfusion-smoke"}, InitConfig(str(tmp_path / "none.pth")), 64, False)
