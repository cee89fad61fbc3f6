"""Issue 16, build 4, in one call on a lent GPU machine: AV-MAE pretraining at paper size in bf16 (MFU, clips/s)
and whether the prepared-media DataLoader keeps up with it on that machine's cores.

    .venv/bin/python benchmarks/device_check.py prepare          # here, once: writes .device/ (~50 MB, git-ignored)
    # then, through the device tool: run(command="python3 benchmarks/device_check.py run", carry=[".device"],
    #                                     timeout_s=600)                    # ~6-8 min on one H200
    .venv/bin/python benchmarks/device_check.py run --smoke --out /tmp/device_check   # the same steps on this CPU

`prepare` puts into `.device/`: wheels of the packages the device's image lacks (PyAV, soundfile and cffi for its
Python 3.12 on x86-64, the versions of requirements.lock) and the 13 YouTube-shaped clips of
`youtube_like_clips.py` (made from ../shared/testdata, which does not travel). `run` installs the wheels into
`.device/site` where `import av, soundfile` fails, then runs, each in its own process and under its own time limit
(200 + 100 + 240 s at most, inside the device tool's 600 s per command):
  1. `pretrain_step.py --preset deepavfusion-vggsound --batch 64 --dtype bf16 --compile` (the official per-GPU
     batch; --peak-flops 989e12, the H100/H200 bf16 dense peak): median step, clips/s, MFU;
  2. `data_throughput.py --paths raw prepared prepared-u8 --transforms train --scale 4 --workers 1 <half> <all but one>`:
     items/s through a DataLoader (wall) and per CPU-second, paired ratios against the raw path;
then writes `device_check.json` and `device_check.md` beside the two CSVs in --out ($OUT there): the loader keeps up
when its wall items/s with the most workers reaches the GPU's clips/s (ratio >= 1). One GPU of a node gets
cores / GPUs of its CPU (e.g. 96 / 8 = 12): the verdict is also given per worker core, for any node's split.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEVICE_DIR = REPO / ".device"
# packages the device image lacks (its package list: /work/.library/device/KINDS.md), pinned as requirements.lock
WHEELS = ["av==18.1.0", "soundfile==0.14.0", "cffi==2.1.1", "pycparser==3.12"]
DEVICE_PYTHON = "3.12"
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
PEAK_BF16 = 989e12  # H100 SXM / H200 bf16 dense peak, FLOP/s


def prepare(device_dir: Path, testdata: Path) -> None:
    """Wheels for the device's Python and the 13 clips into `device_dir` (both kept when present)."""
    sys.path.insert(0, str(HERE))
    from youtube_like_clips import make_clips

    wheels = device_dir / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps", "--python-version",
           DEVICE_PYTHON, *sum((["--platform", p] for p in PLATFORMS), []), "-d", str(wheels), *WHEELS]
    subprocess.run(cmd, check=True)
    clips = make_clips(testdata, device_dir / "work" / "clips")
    size = sum(f.stat().st_size for f in device_dir.rglob("*") if f.is_file())
    print(f"{device_dir}: {len(list(wheels.glob('*.whl')))} wheels, {len(clips)} clips, {size / 2**20:.1f} MiB "
          "(the device tool carries at most 64 MiB with the working tree)")


def ensure_packages(device_dir: Path) -> dict:
    """`import av, soundfile` works afterwards: installs the carried wheels into device_dir/site if needed."""
    env = dict(os.environ)
    probe = [sys.executable, "-c", "import av, soundfile"]
    if subprocess.run(probe, env=env, capture_output=True).returncode != 0:
        site = device_dir / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--find-links",
                        str(device_dir / "wheels"), "--target", str(site), *WHEELS], check=True)
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        subprocess.run(probe, env=env, check=True)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def timed(cmd: list[str], env: dict, limit_s: int, log: Path) -> dict:
    """Run `cmd` with its output in `log` (and echoed); returns its exit status and seconds."""
    print(f"$ {' '.join(cmd)}  (limit {limit_s} s)", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                                start_new_session=True)
        # at the limit, kill its whole process group (DataLoader workers, measuring subprocesses): the output loop
        # below ends once nothing holds the pipe
        watchdog = threading.Timer(limit_s, os.killpg, (proc.pid, signal.SIGKILL))
        watchdog.start()
        for line in proc.stdout:
            fh.write(line)
            print(line, end="", flush=True)
        rc = proc.wait()
        rc = rc if watchdog.is_alive() else f"killed after {limit_s} s"
        watchdog.cancel()
    return {"cmd": " ".join(cmd), "rc": rc, "seconds": round(time.perf_counter() - t0, 1)}


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def verdict(step_rows: list[dict], data_rows: list[dict]) -> dict:
    """GPU clips/s (pretrain_step.csv) against the DataLoader's wall items/s (data_throughput.csv), per path.

    For each prepared path, the row with the most workers: `keeps_up` = its wall items/s >= the GPU's clips/s;
    `cores_per_gpu_needed` = clips/s over the path's items per CPU-second (the loader's cost in cores, main
    process and workers together)."""
    if not step_rows:
        return {"error": "no pretrain_step row (the GPU step did not finish)"}
    clips_per_s = float(step_rows[0]["clips_per_s"])
    out = {"gpu": step_rows[0].get("gpu", ""), "preset": step_rows[0]["preset"], "batch": int(step_rows[0]["batch"]),
           "dtype": step_rows[0]["dtype"], "compiled": step_rows[0]["compiled"], "clips_per_s": clips_per_s,
           "mfu": float(step_rows[0]["mfu"]), "paths": {}}
    loader_rows = [r for r in data_rows if r["workers"] not in ("paired", "alone") and r["items_per_s"]]
    for path in sorted({r["path"] for r in loader_rows}):
        best = max((r for r in loader_rows if r["path"] == path), key=lambda r: int(r["workers"]))
        items_per_s, per_cpu_s = float(best["items_per_s"]), float(best["items_per_cpu_s"])
        out["paths"][path] = {"workers": int(best["workers"]), "items_per_s": items_per_s,
                              "items_per_cpu_s": per_cpu_s, "keeps_up": items_per_s >= clips_per_s,
                              "loader_over_gpu": round(items_per_s / clips_per_s, 3),
                              "cores_per_gpu_needed": round(clips_per_s / per_cpu_s, 1)}
    return out


def markdown(result: dict) -> str:
    if "error" in result:
        return f"device check: {result['error']}\n"
    lines = [f"GPU {result['gpu'] or 'none (CPU)'}: {result['preset']}, batch {result['batch']}, {result['dtype']}, compiled "
             f"{result['compiled']}: **{result['clips_per_s']:.0f} clips/s, MFU {result['mfu']:.1%}**", "",
             "| path | workers | items/s (wall) | items per CPU-s | loader / GPU | keeps up | cores per GPU needed |",
             "|---|---|---|---|---|---|---|"]
    for path, r in result["paths"].items():
        lines.append(f"| {path} | {r['workers']} | {r['items_per_s']:.0f} | {r['items_per_cpu_s']:.0f} | "
                     f"{r['loader_over_gpu']:.2f} | {'yes' if r['keeps_up'] else 'no'} | {r['cores_per_gpu_needed']} |")
    return "\n".join(lines) + "\n"


def run(out: Path, device_dir: Path, smoke: bool) -> int:
    out.mkdir(parents=True, exist_ok=True)
    env = ensure_packages(device_dir)
    cores = os.cpu_count() or 2
    workers = sorted({1, max(1, cores // 2), max(1, cores - 1)})
    if smoke:  # the same steps at a size this CPU runs in ~2 min: tiny preset, float32, no compile, few items
        step = ["--preset", "deepavfusion-tiny", "--batch", "4", "--device", "cpu", "--warmup", "1", "--iters", "2",
                "--peak-flops", "1e11"]
        data = ["--scale", "0.1", "--workers", *map(str, workers[:2])]
    else:
        step = ["--preset", "deepavfusion-vggsound", "--batch", "64", "--device", "cuda", "--dtype", "bf16", "--compile",
                "--warmup", "5", "--iters", "20", "--peak-flops", str(PEAK_BF16)]
        data = ["--scale", "4", "--workers", *map(str, workers)]  # 5 120 prepared items: ~10 batches per worker
    def pretrain_step(args: list[str], limit_s: int, log: str) -> dict:
        return timed([sys.executable, str(HERE / "pretrain_step.py"), *args, "--out", str(out / "pretrain_step.csv")],
                     env, limit_s, out / log)

    runs = [pretrain_step(step, 200, "pretrain_step.log")]
    if runs[-1]["rc"] != 0 and "--compile" in step:  # torch.compile failed there: the eager step still gives MFU
        runs.append(pretrain_step([a for a in step if a != "--compile"], 100, "pretrain_step_eager.log"))
    runs.append(timed([sys.executable, str(HERE / "data_throughput.py"), "--paths", "raw", "prepared", "prepared-u8",
                   "--transforms", "train", "--no-testdata-set", "--work", str(device_dir / "work"),
                   "--tag", "device-check" + ("-smoke" if smoke else ""), "--out", str(out / "data_throughput.csv"),
                   *data], env, 240, out / "data_throughput.log"))  # at most 540 s in all: the tool's 600 s
    result = verdict(read_csv(out / "pretrain_step.csv"), read_csv(out / "data_throughput.csv"))
    result.update(runs=runs, cores=cores, smoke=smoke, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    (out / "device_check.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "device_check.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if runs[-1]["rc"] == 0 and "error" not in result else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="wheels and clips into .device/ (here, once)")
    p.add_argument("--testdata", type=Path, default=REPO.parent / "shared" / "testdata")
    p.add_argument("--device-dir", type=Path, default=DEVICE_DIR)
    r = sub.add_parser("run", help="the two measurements and the verdict (on the device)")
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/results/device_check")))
    r.add_argument("--device-dir", type=Path, default=DEVICE_DIR)
    r.add_argument("--smoke", action="store_true", help="tiny preset on the CPU, few items: checks the steps run")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.device_dir, args.testdata)
        return 0
    if not (args.device_dir / "work" / "clips").is_dir():
        raise SystemExit(f"{args.device_dir}/work/clips: missing; run `benchmarks/device_check.py prepare` here first "
                         "and carry .device")
    return run(args.out, args.device_dir, args.smoke)


if __name__ == "__main__":
    sys.exit(main())
