"""matflow: a materials-informatics pipeline for lab teams.

The library never imports Prefect; the flows in ``flows/`` wrap it.
"""

from __future__ import annotations

__version__ = "0.1.0"
