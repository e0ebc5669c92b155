"""Metric-aware weighted ensembles of nnU-Net v2 specialists for PANTHER (pancreatic tumour in MRI)."""

__version__ = "0.1.0"
