"""sdpack's benchmarks: run each as ``python -m bench.<module>`` from the repository root."""
