"""Check a SavedModel against ``recflow.contract`` the way a model server will see it.

The check runs in a fresh Python process whose script (:mod:`recflow.models.contract_probe`,
run by path) imports only TensorFlow: a model that secretly needs recflow, Keras custom
objects or state of the exporting process fails here, not in TF Serving.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recflow import contract
from recflow.errors import ContractError
from recflow.models import contract_probe
from recflow.models.contract_probe import ProbeArgs

UNKNOWN_USER_ID = "__recflow_contract_check_unknown_user__"
_RESULT_PREFIX = "RECFLOW_CONTRACT_RESULT "


def probe_args(
    path: Path, *, top_k: int | None = None, sample_user_ids: Sequence[str] = ()
) -> ProbeArgs:
    """What the probe checks the SavedModel at ``path`` against: the contract's names, dtypes,
    shapes and versions, the users to call it with, where its answer line starts."""
    return {
        "path": str(path.resolve()),
        "prefix": _RESULT_PREFIX,
        "signature": contract.SIGNATURE_NAME,
        "input_name": contract.INPUT_USER_ID,
        "scores_name": contract.OUTPUT_SCORES,
        "item_ids_name": contract.OUTPUT_ITEM_IDS,
        "inputs": contract.INPUTS,
        "outputs": contract.OUTPUTS,
        "versioned_outputs": contract.VERSIONED_OUTPUTS,
        "reasons_name": contract.OUTPUT_REASONS,
        "top_k": top_k,
        "sample_user_ids": [str(u) for u in sample_user_ids],
        "unknown_user_id": UNKNOWN_USER_ID,
        "score_all_attr": contract.SCORE_ALL_ATTR,
        "catalogue_attr": contract.CATALOGUE_ATTR,
        "version_attr": contract.CONTRACT_VERSION_ATTR,
        "contract_version": contract.CONTRACT_VERSION,
        "warmup_path": contract.WARMUP_RELATIVE_PATH,
        "max_warmup": contract.MAX_WARMUP_RECORDS,
    }


def probe_command(args: ProbeArgs) -> list[str]:
    """The probe's command line: this Python, the probe's file by path (``-P``: neither its
    folder nor the working directory on ``sys.path``), the arguments as one JSON document."""
    return [sys.executable, "-P", str(Path(contract_probe.__file__)), json.dumps(args)]


def check_contract(
    path: Path,
    *,
    top_k: int | None = None,
    sample_user_ids: Sequence[str] = (),
    timeout_seconds: float = 300.0,
) -> dict[str, Any]:
    """Verify the SavedModel at ``path`` in a fresh TensorFlow-only process.

    Returns the subprocess' JSON summary (signature view, K, catalogue size, contract version,
    warmup record count, sample answers). Raises ContractError listing every violation.
    """
    path = Path(path)
    if not (path / "saved_model.pb").is_file():
        raise ContractError(
            f"contract: expected a SavedModel (saved_model.pb) in {path}, found none; "
            "export the model first"
        )
    args = probe_args(path, top_k=top_k, sample_user_ids=sample_user_ids)
    try:
        proc = subprocess.run(
            probe_command(args),
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ContractError(
            f"contract: expected the check of {path} to finish within {timeout_seconds:.0f} s, "
            "it did not; the model may be too slow to load or call"
        ) from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_RESULT_PREFIX)]
    if not lines:
        raise ContractError(
            f"contract: expected a result from the checking process for {path}, found exit "
            f"code {proc.returncode}; its stderr ends with:\n{proc.stderr[-2000:]}"
        )
    result = json.loads(lines[-1][len(_RESULT_PREFIX) :])
    if result["problems"]:
        listed = "\n".join(f"- {p}" for p in result["problems"])
        raise ContractError(f"SavedModel {path} breaks the serving contract:\n{listed}")
    summary: dict[str, Any] = result["summary"]
    return summary
