"""Code-RSIC QGIS plugin: compress raster layers with learned ELIC tiles, compare before/after.

QGIS loads the plugin through ``classFactory``. Nothing is imported from QGIS at module
level here, so ``python -m coderic_qgis.build`` runs without QGIS.
"""


def classFactory(iface):  # noqa: N802 - the name QGIS looks for
    from .plugin import CodeRsicPlugin

    return CodeRsicPlugin(iface)
