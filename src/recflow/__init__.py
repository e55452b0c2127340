"""recflow: from user-behaviour logs to a gated, registered recommender served over gRPC."""

__version__ = "0.1.0"
