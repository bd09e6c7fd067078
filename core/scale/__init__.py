"""Scale-out: tile jobs on Dask (``parallel``, ``dask_plugin``) and many rasters at once (``batch``).

This package imports nothing itself, so the in-process default never pays for Dask.
"""
