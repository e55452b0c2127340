"""Data validation of the canonical tables with Great Expectations (GX Core, called from Python).

Importing this package is cheap: pandas and great_expectations are imported when a function
runs, so DAG files may import it at parse time.
"""

from __future__ import annotations

from recflow.validation.run import ValidationReport, validate_dataset

__all__ = ["ValidationReport", "validate_dataset"]
