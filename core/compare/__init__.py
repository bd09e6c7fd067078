"""Comparing rasters: PSNR (once), a decoded raster's PSNR, difference rasters."""
