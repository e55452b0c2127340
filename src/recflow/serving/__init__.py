"""Serving: TF Serving model config, a local TF Serving-compatible server, client and CLI.

Submodules are imported on demand (``recflow.serving.model_config`` is light; the server and
client need tensorflow's protos), so importing this package costs nothing.
"""
