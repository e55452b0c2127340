"""Our SavedModels under the TF Serving release's TensorFlow runtime: load, run, compare.

    make check-serving-compat        # or: python bench/serving_compat.py --out bench/results

Writes <out>/serving_compat.{json,md} with the command, machine and date, and exits 1 if any
model kind fails to load or answers differently (recflow.ops.serving_compat says how).
The throwaway virtual environment (tensorflow-cpu, ~1.5 GB) is kept in --venv and reused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import tempfile
from pathlib import Path

from recflow.ops.serving_compat import check, machine, markdown
from recflow.serving.release import TF_SERVING_VERSION


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serving-version", default=TF_SERVING_VERSION)
    p.add_argument(
        "--venv",
        type=Path,
        default=None,
        help="throwaway environment (default var/serving-compat/venv-tf<version>)",
    )
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--kinds", nargs="*", default=None, help="default: every zoo kind")
    args = p.parse_args(argv)
    venv = args.venv or Path("var/serving-compat") / f"venv-tf{args.serving_version}"
    with tempfile.TemporaryDirectory(prefix="recflow-compat-") as tmp:
        report = check(args.serving_version, Path(tmp), venv, args.kinds)
    report = {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **report,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving_compat.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "serving_compat.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
