"""lightning_mbo: offline model-based optimization on design-bench tasks with PyTorch Lightning."""

__version__ = "0.1.0"
