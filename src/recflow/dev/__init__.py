"""Dev launchers: what starts the platform on one machine (``make demo``, ``make airflow``,
``make mlflow``, ``make serve``) and the tests' local services.

The top layer (docs/architecture.md "Layers"): modules here may import any other part of
``recflow``; nothing outside ``recflow.dev`` imports them (``tests/unit/test_import_layers.py``).
"""
