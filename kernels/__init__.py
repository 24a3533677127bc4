"""Fused Triton kernels for the M2 layers (installed as ``m2bert.kernels``).

Importing this package must not touch a Triton driver: kernels are compiled lazily, on
first use, and only where ``kernels: triton`` (or ``auto`` on CUDA) selects them.
"""
