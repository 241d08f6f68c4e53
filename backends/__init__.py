"""Emitters from dpc's IR: `torch` writes a standalone PyTorch module; `graph` draws the unrolled network."""
