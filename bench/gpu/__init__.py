"""The native CUDA bench (``native``), the kernel labs (``attnlab``, ``convlab``, ``gemmlab``) and
their shell wrappers for the lent GPU machine."""
