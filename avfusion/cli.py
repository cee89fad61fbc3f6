"""`avfusion <command> ...`: one console script, one module per command.

Each command module defines `add_arguments(parser)` and `main(args) -> int`; it is imported only
when its command runs, so `avfusion --help` stays fast.

    avfusion model-summary --preset deepavfusion-vggsound
    avfusion pretrain --config workflow/config/scales/tiny.yaml --set optim.epochs=2 --out runs/x
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help)
COMMANDS = {
    "model-summary": ("avfusion.models.summary", "parameter counts per part, built on the meta device"),
    "data": ("avfusion.data.cli", "prepare manifests for official layouts; make the embedded benchmark"),
    "media-info": ("avfusion.media_info", "streams, durations, rates and model-input shapes of media files"),
    "pretrain": ("avfusion.tasks.pretrain", "AV-MAE (or image/audio MAE) pretraining with the kNN probe"),
    "knn-probe": ("avfusion.tasks.knn_probe", "leave-one-out 1-NN probe of a checkpoint"),
    "linprobe": ("avfusion.tasks.linprobe", "linear probe on frozen features"),
    "finetune": ("avfusion.tasks.finetune", "end-to-end fine-tuning for classification"),
    "separation": ("avfusion.tasks.separation", "visually guided source separation (mix-and-separate)"),
    "segmentation": ("avfusion.tasks.segmentation", "audio-visual segmentation (AVSBench conventions)"),
    "localization": ("avfusion.tasks.localization", "sound source localization (cIoU, AUC)"),
    "efficiency": ("avfusion.tasks.efficiency", "encoder throughput and peak memory (Table 5)"),
    "classical-separation": ("baselines.classical_separation", "NMF / RPCA separation baselines"),
    "report": ("avfusion.report.cli", "tables, figures and the claims report from metrics.json files"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avfusion", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"avfusion {name}", description=module.__doc__)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
