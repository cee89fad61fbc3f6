"""An alias variant's run (a row the paper reports twice, e.g. Table 6a's 9 fusion layers = all 4 at tiny):
its metrics.json is the aliased run's, with provenance.alias_of = that run's folder. Arguments: the source
metrics.json, the target metrics.json and the log file (`python -m avfusion.aliasrun` with those three paths).

The DAG's `alias_run` rule (workflow/rules/baselines.smk). A shell job, not a `run:` block: Snakemake 9 runs
each `run:` job in a child Snakemake that parses the whole workflow again (5.2 CPU-s per alias, measured
2026-12-02; the tiny DAG has 42 aliases); this costs a Python start without torch (~0.1 CPU-s).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .io import atomic_write_json


def copy_alias_metrics(source: str | Path, target: str | Path, log: str | Path) -> None:
    payload = json.loads(Path(source).read_text())
    payload["provenance"]["alias_of"] = str(Path(source).parent)
    atomic_write_json(target, payload)
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    Path(log).write_text(f"copied {source} -> {target}\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print("usage: python -m avfusion.aliasrun SOURCE_METRICS TARGET_METRICS LOG", file=sys.stderr)
        return 2
    copy_alias_metrics(*argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
