"""The end-to-end pipeline: candidates -> relax -> featurize -> predict, SRO for alloys, HEA
screening, and a resumable run directory with a manifest and one HTML report.

``run_pipeline(config, run_dir)`` is the one definition, called by ``python -m matflow.pipeline``,
``matflow pipeline`` and the Prefect flow ``flows/pipeline.py``.
"""

from __future__ import annotations

from matflow.pipeline.config import PipelineConfig, PipelineConfigError, load_config, preset
from matflow.pipeline.run import run_pipeline

__all__ = ["PipelineConfig", "PipelineConfigError", "load_config", "preset", "run_pipeline"]
