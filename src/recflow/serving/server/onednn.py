"""Whether TensorFlow's oneDNN custom ops run in the local model server: off unless asked.

TensorFlow turns them on by default on x86 Linux. With them on, the soak's server grew by
~90 MB over its first two minutes of traffic and by ~15-20 MB more at its first hot swaps
(oneDNN keeps primitives for every input shape it meets, and the serving batches come in many
shapes); with them off it stayed within ~35 MB of its start for ten minutes
(bench/results/soak-diagnosis.md, "oneDNN"). TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once,
when it is first imported, so the choice is made before that.

``--onednn=auto`` (default) keeps a ``TF_ENABLE_ONEDNN_OPTS`` the environment sets and turns
them off otherwise (unless TensorFlow is already imported, as when a test runs the server in
its own process); ``on`` and ``off`` set it or refuse to start when it is too late. The log
says which runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

from recflow.errors import ConfigError

CHOICES = ("auto", "on", "off")
ENV = "TF_ENABLE_ONEDNN_OPTS"


def choose(choice: str, env: MutableMapping[str, str] | None = None) -> None:
    """Set ``TF_ENABLE_ONEDNN_OPTS`` in ``env`` (this process's by default) for ``choice``.

    Raises ConfigError when TensorFlow is already imported and would not see the change.
    """
    if choice not in CHOICES:
        raise ConfigError(f"--onednn: expected one of {CHOICES}, found {choice!r}")
    env = os.environ if env is None else env
    imported = env is os.environ and "tensorflow" in sys.modules
    if choice == "auto":
        if ENV in env or imported:  # the environment's choice, or too late to make one
            return
        value = "0"
    else:
        value = "1" if choice == "on" else "0"
    if env.get(ENV) == value:
        return
    if imported:
        raise ConfigError(
            f"--onednn={choice}: expected to run before TensorFlow is imported, found it "
            f"imported; set {ENV}={value} in the environment instead"
        )
    env[ENV] = value


def in_use() -> str:
    """'on' or 'off': what this process's TensorFlow does (for the log); 'unknown' if this
    TensorFlow no longer has the (private) module that tells."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return "unknown"
    return "on" if _pywrap_util_port.IsMklEnabled() else "off"
