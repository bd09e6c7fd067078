"""Code-RSIC for GIS: learned compression of large georeferenced rasters."""

import os

__version__ = "0.1.0"

# The integer entropy path runs NumPy GEMMs on OpenBLAS, between the transforms' runtime
# calls. OpenBLAS's idle threads spin for 2**28 cycles by default, stealing the cores the
# runtime then needs: 12.6 s of system time in an 8192 px compress, 2.7 s with 2**4
# (measured; results/codec_throughput_torchfree.json). Read when OpenBLAS loads, so here,
# before any NumPy import of ours; a value the user set is kept.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
