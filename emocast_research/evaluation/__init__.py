"""Evaluating generated talking-head videos with the field's metrics (``python -m emocast_research evaluate``).

Sync-C / Sync-D (SyncNet), FID (Inception), FVD (I3D), identity similarity (ArcFace), emotion
accuracy (an expression classifier), the clip-border seam ratio and the mouth-audio correlation.
Every network comes from a file the user gives; nothing is downloaded. See docs/evaluation.md.

The names below are imported on first use (as diffusers does), so that the command line can
register ``evaluate`` without loading torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "EvaluationSettings": "evaluate", "Evaluator": "evaluate", "MetricWeights": "evaluate",
    "evaluate_videos": "evaluate", "plan_evaluation": "evaluate", "VideoPlan": "evaluate", "VideoLabels": "inputs", "collect_videos": "inputs",
    "read_labels_file": "inputs", "METRIC_NAMES": "report", "EvaluationReport": "report", "VideoResult": "report",
}
__all__ = [
    "METRIC_NAMES", "EvaluationReport", "EvaluationSettings", "Evaluator", "MetricWeights", "VideoLabels",
    "VideoPlan", "VideoResult", "collect_videos", "evaluate_videos", "plan_evaluation", "read_labels_file",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
