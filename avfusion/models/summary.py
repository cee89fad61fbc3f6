"""Parameter counts per part of a pretraining model, built on the meta device (no memory used).

    avfusion model-summary --preset deepavfusion-vggsound            # ... total 320563712
    avfusion model-summary --preset deepavfusion-tiny --set fusion.arch=dense
    avfusion model-summary --config model.yaml                        # a model dict, or {preset: ..., ...}

Counts are over the state dict (frozen sin-cos tables included, as in the released checkpoints);
the `trainable` line excludes parameters with requires_grad=False.
"""
from __future__ import annotations

import argparse
import sys
from collections import OrderedDict

import torch
from torch import nn

from ..config import ConfigError, load_yaml, merge, parse_overrides

# state-dict prefix -> part label, first match wins (other keys are grouped by their first name)
PART_LABELS = [
    ("encoder.image.", "image branch"),
    ("encoder.audio.", "audio branch"),
    ("encoder.fusion_blocks.", "fusion blocks"),
    ("encoder.fusion_tokens", "fusion tokens+norm"),
    ("encoder.fusion_norm.", "fusion tokens+norm"),
    ("image_decoder_", "image decoder"),
    ("audio_decoder_", "audio decoder"),
]


def part_of(key: str) -> str:
    for prefix, label in PART_LABELS:
        if key.startswith(prefix):
            return label
    parts = key.split(".")
    if parts[0] == "encoder" and len(parts) > 2:
        return "encoder." + parts[1]
    return parts[0]


def count_parts(model: nn.Module) -> "OrderedDict[str, int]":
    """Part label -> number of values in the state dict (known parts first, then by first name)."""
    counts: dict[str, int] = {}
    for key, value in model.state_dict().items():
        label = part_of(key)
        counts[label] = counts.get(label, 0) + value.numel()
    order = list(dict.fromkeys(label for _, label in PART_LABELS))
    known = [(label, counts[label]) for label in order if label in counts]
    return OrderedDict(known + [(label, n) for label, n in counts.items() if label not in order])


def build_on_meta(model_dict: dict) -> nn.Module:
    from .registry import build_pretrain_model
    with torch.device("meta"):
        return build_pretrain_model(model_dict)


def summary_lines(model: nn.Module) -> list[str]:
    counts = count_parts(model)
    total = sum(counts.values())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    width = max(len(label) for label in counts)
    lines = [f"{label:<{width}}  {n:>12,d}" for label, n in counts.items()]
    lines.append(f"trainable {trainable}")
    lines.append(f"total {total}")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="preset name, e.g. deepavfusion-vggsound")
    parser.add_argument("--config", metavar="FILE", help="YAML with a model dict (or its `model:` section)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a model key, e.g. --set fusion.arch=dense")


def main(args: argparse.Namespace) -> int:
    section: dict = {}
    if args.config:
        data = load_yaml(args.config)
        section = data.get("model", data)
    if args.preset:
        section = merge(section, {"preset": args.preset})
    section = merge(section, parse_overrides(args.overrides))
    if "preset" not in section and "family" not in section:
        print("error: give --preset NAME or a --config with a model dict", file=sys.stderr)
        return 2  # usage (avfusion.cli)
    try:
        model = build_on_meta(section)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    name = section.get("preset", section.get("family"))
    print(f"model {name}: {type(model).__name__}")
    print("\n".join(summary_lines(model)))
    return 0
