"""Emitters from dpc's IR: `torch` writes a standalone PyTorch module."""
