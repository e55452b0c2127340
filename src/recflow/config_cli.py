"""Check a DAG conf outside Airflow and show every setting it resolves to.

    python -m recflow.config_cli [--dag recsys_training|recsys_policy] [--conf JSON] [name=value ...]

Prints ``{DAG param: value}`` as JSON; a bad value exits 2 with the message naming the field,
its bound and the value. The names and checks are the declarations' (recflow.settings), so a
new setting is accepted here without changes.
"""

from __future__ import annotations

import argparse
import json
import sys

from recflow.errors import ConfigError
from recflow.jsontypes import JSONObject


def parse_assignments(pairs: list[str]) -> JSONObject:
    """``["epochs=3", "model=ease"]`` -> ``{"epochs": "3", "model": "ease"}`` (coerced later)."""
    out: JSONObject = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"expected name=value, found {pair!r}")
        out[name.strip()] = value
    return out


def main(argv: list[str] | None = None) -> int:
    from recflow import config
    from recflow.settings import flat_values

    parser = argparse.ArgumentParser(prog="python -m recflow.config_cli", description=__doc__)
    parser.add_argument(
        "--dag", choices=("recsys_training", "recsys_policy"), default="recsys_training"
    )
    parser.add_argument(
        "--conf", default="{}", help="DAG conf as JSON (as for airflow dags trigger -c)"
    )
    parser.add_argument("assignments", nargs="*", metavar="name=value")
    args = parser.parse_args(argv)
    try:
        conf = {**json.loads(args.conf), **parse_assignments(args.assignments)}
        parse = config.from_params if args.dag == "recsys_training" else config.from_policy_params
        values = flat_values(parse(conf))
    except (ConfigError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(values, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
