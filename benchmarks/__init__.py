"""Speed measurements beside other frameworks: the peer models (`benchmarks.peers`) and measurement scripts.

    python -m scripts.benchmark          # every reference model beside PyTorch and Keras 3 (writes RESULTS.md)
    python -m benchmarks.vae_overhead    # model=vae's training path against a bare jitted loop
    python -m benchmarks.conv_paths      # XLA CPU convolution paths against the default one

Benchmark-only: torch and keras are the optional extra `bench` (`pip install -e .[bench]`).
"""
