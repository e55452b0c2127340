"""``python -m recflow.serving.server``: the local model server (``recflow-model-server``)."""

import sys

from recflow.serving.server.cli import main

sys.exit(main())
