#!/usr/bin/env python3
"""Check an installed environment against requirements.txt: every pin, the torch build, CUDA, torchaudio.

    python scripts/check_env.py          # report; exit 1 if a pin is not met or an import fails
    python scripts/check_env.py --fix    # first remove torchaudio's compiled extension if it cannot load

torchaudio 2.11.0 is the newest release and is built for another torch than 2.13: its compiled
extension fails to load, while the pure-Python parts the tests use (transforms, compliance.kaldi,
functional.resample) work once the extension's .so files are removed (`make setup` does the same).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import importlib.util
import platform
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s#;]+).*", line.split("#", 1)[0])
        if m:
            out[m.group(1)] = m.group(2)
    return out


def torchaudio_libs() -> list[Path]:
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(Path(list(spec.submodule_search_locations)[0], "lib").glob("*.so"))


def torchaudio_loads() -> str:
    """'' if `import torchaudio` works in a fresh interpreter, else its last error line."""
    out = subprocess.run([sys.executable, "-c", "import torchaudio, torchaudio.transforms"],
                         capture_output=True, text=True, timeout=300)
    return "" if out.returncode == 0 else (out.stderr.strip().splitlines() or ["failed"])[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fix", action="store_true", help="remove torchaudio's .so files if torchaudio cannot load")
    parser.add_argument("--requirements", type=Path, default=REPO / "requirements.txt")
    args = parser.parse_args()
    bad = 0
    print(f"python {platform.python_version()} ({sys.executable})")
    if sys.version_info < (3, 11):
        print("  FAIL: Python >= 3.11 is required (numpy 2.4, scipy 1.17, snakemake 9.27)")
        bad += 1
    for name, want in pins(args.requirements).items():
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            print(f"  FAIL {name}: not installed (want {want})")
            bad += 1
            continue
        ok = have == want or have.split("+")[0] == want   # 2.13.0+cpu / +cu130 builds of 2.13.0
        bad += not ok
        print(f"  {'ok  ' if ok else 'FAIL'} {name} {have}" + ("" if ok else f" (want {want})"))
    try:
        import torch

        cuda = torch.version.cuda
        print(f"torch {torch.__version__}: {'CUDA ' + cuda if cuda else 'CPU-only build'}; "
              f"cuda.is_available()={torch.cuda.is_available()}, devices={torch.cuda.device_count()}"
              + "".join(f"\n  cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())))
    except Exception as err:  # noqa: BLE001
        print(f"  FAIL import torch: {err}")
        bad += 1
    if importlib.util.find_spec("torchaudio") is not None:
        error = torchaudio_loads()
        if error and args.fix and torchaudio_libs():
            for lib in torchaudio_libs():
                lib.unlink()
            print(f"torchaudio: removed its compiled extension ({error})")
            error = torchaudio_loads()
        print(f"torchaudio: {'imports (pure-Python parts)' if not error else 'FAIL ' + error}"
              + ("" if not error or args.fix else "; run with --fix"))
        bad += bool(error)
    for module in ("avfusion", "snakemake", "submitit", "av", "soundfile", "mir_eval", "sklearn"):
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001
            print(f"  FAIL import {module}: {err}")
            bad += 1
    print("environment OK" if not bad else f"environment: {bad} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
