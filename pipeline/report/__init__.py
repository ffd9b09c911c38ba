"""``counterfactory report OUT``: preview page, plots, data card and Croissant metadata of an output."""

from pipeline.report.build import write_report

__all__ = ["write_report"]
