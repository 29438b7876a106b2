"""A search as one self-contained HTML page: space, trials, curves, importance, test metrics, explanations."""

from raylung.report.build import REPORT_FILE, build_report

__all__ = ["REPORT_FILE", "build_report"]
