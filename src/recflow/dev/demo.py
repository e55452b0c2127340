"""`make demo`: run the training DAG end to end with `airflow dags test`, then ask the model
server for recommendations over gRPC and print them with titles.

Run it twice: the second run trains a new candidate, gates it against the champion and
promotes it or declines it, with the reasons shown.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from recflow.config import PipelineConfig, default_work_dir, from_params
from recflow.dev.airflow_env import airflow_env
from recflow.net import port_open
from recflow.serving.server_process import ModelServerProcess

DAG_ID = "recsys_training"
_FINISHED = re.compile(r"DagRun Finished: dag_id=(\S+), .*?run_id=([^,]+), .*?state=(\w+)")
_TASK_STATE = re.compile(r"Task instance state updated.*?new_state=(\w+)")
# `dags test` announces each task it runs; later lines (state updates, tracebacks) are that
# task's until the next announcement. Other lines name task ids too (e.g. an XCom push of the
# task before), so only these two say which task is running.
_TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(\S+)")
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\S+ \[")  # a new structured log record
_CHAINED = ("The above exception was", "During handling of the above exception")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="recflow-demo", description=__doc__)
    parser.add_argument("--data", help="MovieLens-100K folder (default: synthetic data)")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port of the model server")
    parser.add_argument("--user", help="user to recommend for (default: first user)")
    parser.add_argument("-k", type=int, default=10, help="number of recommendations")
    parser.add_argument("--epochs", type=int, help="override the training epochs")
    parser.add_argument("--conf", default="{}", help="extra DAG params as JSON")
    return parser.parse_args(argv)


HEARTBEAT_SECONDS = 30.0


class _Progress:
    """Prints progress lines with elapsed seconds, and a heartbeat when nothing was printed for
    HEARTBEAT_SECONDS: a step such as training on MovieLens can be quiet for a while, and a
    silent terminal looks like a hang."""

    def __init__(self, heartbeat: float = HEARTBEAT_SECONDS) -> None:
        self.started = self.last = time.monotonic()
        self.heartbeat = heartbeat
        self.task = ""
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> _Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def say(self, text: str) -> None:
        with self._lock:
            now = time.monotonic()
            print(f"  {now - self.started:6.1f}s  {text}", flush=True)
            self.last = now

    def _beat(self) -> None:
        while not self._done.wait(1.0):
            if time.monotonic() - self.last >= self.heartbeat:
                where = f"in task {self.task}" if self.task else "starting Airflow"
                self.say(f"... still running ({where})")


class _DagLog:
    """Follows ``airflow dags test`` output: which task runs, which failed and with what error."""

    def __init__(self, progress: _Progress | None = None) -> None:
        self.progress = progress
        self.task = ""
        self.run_id = ""
        self.state = "unknown"
        self.failed: dict[str, str] = {}  # task -> the message of the exception it raised
        self.declined = False  # the gate recorded a decline (its task then fails on purpose)
        self._traceback = False
        self._error: list[str] = []

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress.say(text)

    def feed(self, line: str) -> None:
        text = line.rstrip("\n")
        if self._traceback or self._error:
            if _LOG_LINE.match(text) or text.startswith("[recflow]"):
                self._end_error()
            elif text.startswith(_CHAINED):  # a chained exception: the next traceback follows
                self._error = []
                return
            elif self._error:
                self._error.append(text)
                return
            else:
                # Frames are indented; the first unindented line is "<exception type>: <message>".
                if text and not text[0].isspace() and not text.startswith("Traceback"):
                    self._error = [text]
                return
        if "[recflow]" in text:
            self._say(text.strip())
            self.declined |= "[recflow] gate: DECLINED" in text
        started = _TASK_START.search(text)
        if started:
            self.task = started.group(1)
            if self.progress is not None:
                self.progress.task = self.task
        if text.startswith("Traceback (most recent call last):"):
            self._traceback = True
        if "Task instance state updated" in text:
            new_state = _TASK_STATE.search(text)
            if new_state and self.declined and self.task == "gate" and "=failed" in text:
                self._say("gate declined the candidate: the promotion steps do not run")
            elif new_state and new_state.group(1) in ("failed", "skipped", "up_for_retry"):
                self._say(f"task {self.task or '?'}: {new_state.group(1)}")
                if new_state.group(1) == "failed":
                    self.failed.setdefault(self.task or "?", "")
        finished = _FINISHED.search(text)
        if finished:
            self.run_id, self.state = finished.group(2), finished.group(3)

    def _end_error(self) -> None:
        if self._error:
            # The last exception of a task is the one it failed with.
            self.failed[self.task or "?"] = "\n".join(self._error).strip()
        self._traceback, self._error = False, []

    def close(self) -> None:
        self._end_error()

    @property
    def only_declined(self) -> bool:
        """The run failed only because the gate declined (a decision, not a crash)."""
        return self.declined and set(self.failed) <= {"gate"}

    def failure_report(self) -> str:
        """The failed tasks with their errors, for the person who ran the demo."""
        lines = []
        for task, error in self.failed.items():
            lines.append(f"task {task} failed" + (":" if error else " (no error message found)"))
            lines.extend(f"  {line}" for line in error.splitlines())
        return "\n".join(lines)


def _run_dag(conf: dict, env: dict[str, str], log_path: Path) -> _DagLog:
    """Run the DAG, echo our progress lines, keep Airflow's full output in ``log_path``."""
    cmd = ["airflow", "dags", "test", DAG_ID, "-c", json.dumps(conf)]
    print(f"$ {' '.join(cmd[:4])} -c '{json.dumps(conf)}'   (full log: {log_path})", flush=True)
    with open(log_path, "w", encoding="utf-8") as log, _Progress() as progress:
        watcher = _DagLog(progress)
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            watcher.feed(line)
        proc.wait()
        watcher.close()
    if proc.returncode != 0 and watcher.state == "unknown":
        watcher.state = "failed"
    return watcher


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    work_dir = default_work_dir()
    conf: dict = json.loads(args.conf)
    if args.data:
        conf.update({"data_source": "movielens-100k", "data_path": str(Path(args.data).resolve())})
    if args.epochs:
        conf["epochs"] = args.epochs
    conf.setdefault("serving_port", args.port)
    cfg = from_params(conf)
    env = airflow_env(work_dir)
    logs = work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()

    print(f"recflow demo: work folder {work_dir}", flush=True)
    subprocess.run(
        ["airflow", "db", "migrate"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    server = None
    if port_open(cfg.serving.host, cfg.serving.grpc_port):
        print(f"model server already listening on {cfg.server_address}; using it", flush=True)
    else:
        server = ModelServerProcess(
            cfg.model_config_file, port=cfg.serving.grpc_port, log_file=logs / "model_server.log"
        ).start()
        print(f"started the local model server on {server.address} (log: {server.log_file})")
    try:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dag = _run_dag(conf, env, logs / f"dag-{stamp}.log")
        run_id, state = dag.run_id, dag.state
        print(f"DAG run {run_id or '?'} finished: {state} ({time.monotonic() - t0:.0f} s)")
        if state != "success" and dag.only_declined and run_id:
            print("the gate declined the candidate: nothing was promoted (the run is marked "
                  "failed on purpose, so no promotion step runs); its reasons follow")  # fmt: skip
        elif state != "success":
            report = dag.failure_report()
            print(
                (report + "\n" if report else "")
                + f"the run did not succeed. The full log is {logs / f'dag-{stamp}.log'}. Fix "
                "the cause (data, params in --conf, a busy --port) and run the demo again; "
                "`make airflow` shows the same run in the Airflow UI.",
                file=sys.stderr,
            )
            return 1
        print(
            "plots and a summary of this run are in MLflow: `make mlflow`, experiment "
            f"'{cfg.registry.experiment}', run '{DAG_ID}:{run_id}', Artifacts > report/",
            flush=True,
        )
        return _show_recommendations(cfg, run_id, args)
    finally:
        if server is not None:
            server.stop()


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence native libraries writing straight to fd 2 (TensorFlow's absl start-up lines)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def _show_recommendations(cfg: PipelineConfig, run_id: str, args: argparse.Namespace) -> int:
    from recflow.data import read_dataset
    from recflow.errors import RecflowError
    from recflow.features import load_split
    from recflow.pipeline.context import RunContext
    from recflow.schema import ITEM_ID, TIMESTAMP, TITLE, USER_ID
    from recflow.serving.client import ServingClient
    from recflow.serving.recommender import RecommenderClient

    ctx = RunContext.create(cfg, DAG_ID, run_id)
    gate = ctx.read_json("gate.json")
    first = gate.get("champion_version") is None
    print("\nGate:", "PASSED" if gate["passed"] else "DECLINED (the champion keeps serving)"
          if not first else "DECLINED (there is no champion yet: no model serves)")  # fmt: skip
    for reason in gate["reasons"]:
        print(f"  - {reason}")
    if not gate["passed"] and first:
        print("\nNothing to recommend with yet. Train longer (--epochs) or relax the gate's "
              "floors in --conf (see docs/settings.md, 'Evaluation and gate'), then run the demo "
              "again.", file=sys.stderr)  # fmt: skip
        return 1

    ds = read_dataset(ctx.data_dir)
    split = load_split(ctx.split_dir)
    # The pipeline only ever stored pseudonyms; like an application holding the key, the demo
    # turns the raw id it is asked about (default "1") into the pseudonym the model knows.
    from recflow.privacy import is_pseudonym, load_key, pseudonymise_one

    raw_user = args.user or "1"
    user = (
        raw_user if is_pseudonym(raw_user) else pseudonymise_one(raw_user, load_key(cfg.work_dir))
    )
    known = set(split.train[USER_ID].astype(str))
    if user not in known:
        print(f"user {raw_user} is not in this run's training data; showing the first user instead")
        raw_user = user = sorted(known)[0]
    titles = dict(zip(ds.items[ITEM_ID].astype(str), ds.items[TITLE].astype(str), strict=False))
    seen = split.train[split.train[USER_ID].astype(str) == user].sort_values(TIMESTAMP)
    held_out = [
        str(frame.loc[frame[USER_ID].astype(str) == user, ITEM_ID].iloc[0])
        for frame in (split.validation, split.test)
        if (frame[USER_ID].astype(str) == user).any()
    ]
    shown = raw_user if raw_user == user else f"{raw_user} (pseudonym {user})"
    print(f"\nUser {shown}: last items the model trained on:")
    for item in seen[ITEM_ID].astype(str).tail(5):
        print(f"  - {titles.get(item, item)}")
    if held_out:
        print(
            "held out for evaluation (the model never saw them): "
            + ", ".join(titles.get(i, i) for i in held_out)
        )
    with _quiet_native_stderr():
        import tensorflow  # noqa: F401  (its start-up chatter would bury the answer)
    try:
        served = ServingClient(cfg.server_address, timeout=cfg.serving.timeout_seconds)
        with RecommenderClient(served) as client:
            recs = client.recommend(
                cfg.serving.model_name, [user], k=args.k, label="stable", pseudonymised=True
            )
    except RecflowError as error:
        print(f"could not fetch recommendations: {error}", file=sys.stderr)
        return 1
    rec = recs[0]
    print(
        f"\nTop-{args.k} for user {shown} over gRPC from {cfg.server_address} "
        f"(model '{cfg.serving.model_name}', label stable = version {rec.model_version}):"
    )
    reasons = rec.reasons or [""] * len(rec.items)
    for rank, ((item_id, title, score), why) in enumerate(
        zip(rec.items, reasons, strict=True), start=1
    ):
        mark = "  <- held out" if item_id in held_out else ""
        print(f"  {rank:2d}. {title:<40.40s} score {score:.4f}  {why}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
