"""What a DataLoader worker adds to a prepared item: CPU per item (main process + worker, getrusage) of the same
items computed in the main process, and through a DataLoader (batch 32, 1 worker) with the item as it is, without
its image, and with a fresh image tensor of float32 or uint8 in its place (the transfer's cost alone); and the
items of `data.train_image_dtype: uint8` (the uint8 crop; `-normalized`: each batch normalised in the main
process, as the engine does on a CPU device; on a GPU that step runs on the device).

    .venv/bin/python benchmarks/data_throughput.py --paired-only --no-testdata-set   # makes the prepared folder
    .venv/bin/python benchmarks/dataloader_transfer.py --items 1280                 # ~1 min

Each mode runs in its own process (a fresh worker, as in training). Writes
benchmarks/results/dataloader_transfer.csv (with the worker's minor page faults and system time: a batch is
collated into new shared memory, whose pages the worker faults in and zero-fills, ~180 faults per float32 item).
"""
from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from data_throughput import _random_order  # noqa: E402  (the same random clip order as its DataLoader rows)
MODES = ("direct", "loader", "loader-no-image", "loader-fresh-float32", "loader-fresh-uint8", "direct-uint8",
         "loader-uint8", "loader-uint8-normalized")


def _usage() -> tuple[float, float, int]:
    """(user + sys CPU-s, sys CPU-s, minor faults) of this process and its reaped children."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime, a.ru_stime + b.ru_stime, a.ru_minflt + b.ru_minflt)


def measure(mode: str, folder: str, items: int) -> dict:
    """One mode in this process: `items` train items at the paper's size (image 224) in a random clip order."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    from avfusion.data.datasets import AVClipDataset

    torch.set_num_threads(1)
    torch.manual_seed(0)
    dtype = "uint8" if "uint8" in mode and "fresh" not in mode else "float32"
    ds = AVClipDataset(folder, "train", train=True, image_size=224, media="prepared", train_image_dtype=dtype)
    for row in ds.rows:
        ds.span(row)

    class Replaced(Dataset):
        """The item without its image, or with a fresh (3, 224, 224) tensor of `dtype` in its place."""

        def __init__(self, dtype):
            self.dtype = dtype

        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            item = {k: v for k, v in ds[i].items() if k != "image"}
            if self.dtype is not None:
                item["image"] = torch.ones(3, 224, 224, dtype=self.dtype)
            return item

    order = _random_order(len(ds), items)
    dataset = {"loader": ds, "loader-uint8": ds, "loader-uint8-normalized": ds, "loader-no-image": Replaced(None), "loader-fresh-float32": Replaced(torch.float32),
               "loader-fresh-uint8": Replaced(torch.uint8)}.get(mode)
    cpu0, sys0, faults0 = _usage()
    t0 = time.perf_counter()
    if mode.startswith("direct"):
        for i in order:
            ds[i]
    else:
        from avfusion.transforms import normalize_batch_images

        loader = DataLoader(dataset, batch_size=32, sampler=order, num_workers=1,
                            worker_init_fn=lambda _: torch.set_num_threads(1))
        for batch in loader:
            if mode == "loader-uint8-normalized":
                normalize_batch_images(batch)
        del loader  # the worker exits and is reaped: its CPU lands in RUSAGE_CHILDREN
    cpu1, sys1, faults1 = _usage()
    return {"mode": mode, "items": items, "cpu_ms_per_item": round((cpu1 - cpu0) / items * 1e3, 3),
            "sys_ms_per_item": round((sys1 - sys0) / items * 1e3, 3),
            "minor_faults_per_item": round((faults1 - faults0) / items, 1), "wall_s": round(time.perf_counter() - t0, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=str(Path.home() / ".cache/avfusion/data_throughput/youtube-like-prepared"))
    parser.add_argument("--items", type=int, default=1280)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "dataloader_transfer.csv")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.folder, args.items)))
        return 0
    started, load = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), open("/proc/loadavg").read().split()[0]
    rows = []
    for mode in MODES:
        out = subprocess.run([sys.executable, __file__, "--measure", mode, "--folder", args.folder,
                              "--items", str(args.items)], capture_output=True, text=True, check=True)
        rows.append(dict(json.loads(out.stdout.splitlines()[-1]), started=started, load_at_start=load))
        print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
