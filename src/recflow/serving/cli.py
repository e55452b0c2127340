"""``recommend``: ask the model server for a user's top-k, or show what it serves."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from recflow.errors import RecflowError

COMMANDS = {
    "status": "versions of a model with their state (AVAILABLE, LOADING, END + error)",
}
EPILOG = (
    "commands:\n"
    "  (none)    top-k recommendations for --user from the served model\n"
    + "".join(f"  {name:<9} {text}\n" for name, text in COMMANDS.items())
    + "\nexamples:\n"
    "  recommend --user 42 -k 5\n"
    "  recommend --user 42 --version 3\n"
    "  recommend status --model recommender\n"
    "  recommend --server 127.0.0.1:8500 status\n"
)


def recommend_parser() -> argparse.ArgumentParser:
    """One parser for both commands: options may come before or after ``status``."""
    p = argparse.ArgumentParser(
        prog="recommend",
        description="Top-k recommendations from the model server (TF Serving gRPC API).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "command", nargs="?", choices=sorted(COMMANDS), help="status, or none for recommendations"
    )
    p.add_argument("--user", action="append", help="user id (repeatable; recommendations)")
    p.add_argument("-k", type=int, default=None, help="how many items (default 10)")
    p.add_argument(
        "--pseudonymised",
        action="store_true",
        help="the --user ids already are pseudonyms (p_...); by default they are hashed with "
        "the key in $RECFLOW_PSEUDONYM_KEY (or the local demo key) before sending",
    )
    p.add_argument("--label", default=None, help="version label (default stable)")
    p.add_argument(
        "--version", type=int, default=None, help="a specific version (status: only this one)"
    )
    p.add_argument(
        "--server", default="127.0.0.1:8500", help="gRPC host:port (default %(default)s)"
    )
    p.add_argument("--model", default="recommender", help="model name (default %(default)s)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per call (default 10)")
    return p


# Options that only mean something when asking for recommendations.
_RECOMMEND_ONLY = {
    "user": "--user",
    "k": "-k",
    "label": "--label",
    "pseudonymised": "--pseudonymised",
}


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; exits with a usage message (code 2) on a wrong combination."""
    p = recommend_parser()
    args = p.parse_args(argv)
    if args.command == "status":
        given = [flag for name, flag in _RECOMMEND_ONLY.items() if getattr(args, name)]
        if given:
            p.error(f"status takes --server, --model, --timeout and --version; not {given}")
        return args
    if not args.user:
        p.error("the following arguments are required: --user (or the command 'status')")
    if args.label is not None and args.version is not None:
        p.error("argument --version: not allowed with argument --label (choose one)")
    if args.k is None:
        args.k = 10
    return args


def _run_recommend(args: argparse.Namespace) -> int:
    from recflow.serving.client import ServingClient
    from recflow.serving.recommender import RecommenderClient

    label = None if args.version is not None else (args.label or "stable")
    with RecommenderClient(ServingClient(args.server, timeout=args.timeout)) as client:
        recs = client.recommend(
            args.model,
            args.user,
            k=args.k,
            version=args.version,
            label=label,
            pseudonymised=bool(args.pseudonymised),
        )
    for rec in recs:
        via = f"version {args.version}" if args.version is not None else f"label {label!r}"
        print(
            f"Top {len(rec.items)} for user {rec.user_id} — model {args.model} "
            f"version {rec.model_version} (asked for {via})"
        )
        width = max([len("item_id"), *(len(i) for i, _, _ in rec.items)])
        print(f"{'rank':>4}  {'item_id':<{width}}  {'score':>8}  title")
        reasons = rec.reasons or [""] * len(rec.items)
        for rank, ((item, title, score), why) in enumerate(
            zip(rec.items, reasons, strict=True), start=1
        ):
            print(
                f"{rank:>4}  {item:<{width}}  {score:>8.4f}  {title}"
                + (f"  ({why})" if why else "")
            )
        print()
    return 0


def _run_status(args: argparse.Namespace) -> int:
    from recflow.serving.client import ServingClient

    with ServingClient(args.server, timeout=args.timeout) as client:
        rows = client.model_status(args.model, args.version)
    print(f"model {args.model} at {args.server}")
    print(f"{'version':>7}  {'state':<10}  error")
    for version, state, error in rows:
        print(f"{version:>7}  {state:<10}  {error or ''}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse(argv)
        if args.command == "status":
            return _run_status(args)
        return _run_recommend(args)
    except RecflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
