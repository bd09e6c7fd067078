"""The swipe map tool: drag a divider across the map to see the decoded layer on the left
and the original on the right.

The canvas keeps drawing the layers as usual, with the original shown (the before/after
group is switched to it); ``SwipeItem``, a map canvas item above them, draws the decoded
layer rendered on its own for the same view (a ``QgsMapRendererParallelJob``, redone
whenever the canvas is redrawn), clipped at the divider. Leaving the tool shows the
decoded layer again.
"""

from __future__ import annotations

from qgis.core import QgsMapRendererParallelJob, QgsMapSettings, QgsProject
from qgis.gui import QgsMapCanvasItem, QgsMapTool
from qgis.PyQt.QtCore import QPointF, QRectF, Qt
from qgis.PyQt.QtGui import QColor, QFont, QImage, QPen

HANDLE = 9  # px, half the height of the divider's grip
LABEL_MARGIN = 8  # px


class SwipeItem(QgsMapCanvasItem):
    """Draws ``layer`` left of ``divider`` (pixels from the canvas's left edge)."""

    def __init__(self, canvas, layer):
        super().__init__(canvas)
        self.canvas = canvas
        self.layer = layer
        self.divider = canvas.width() // 2
        self.image: QImage | None = None
        self.job: QgsMapRendererParallelJob | None = None
        self.labels = ("decoded", "original")
        self.setZValue(100)
        canvas.mapCanvasRefreshed.connect(self.render)
        self.render()

    def render(self) -> None:
        """Render the layer for the canvas's current view (asynchronously)."""
        if self.job is not None:
            self.job.cancelWithoutBlocking()
        settings = QgsMapSettings(self.canvas.mapSettings())
        settings.setLayers([self.layer])
        job = self.job = QgsMapRendererParallelJob(settings)
        job.finished.connect(lambda: self._rendered(job))
        job.start()

    def _rendered(self, job) -> None:
        if job is not self.job:
            return  # an older view
        self.image = job.renderedImage()
        self.setRect(self.canvas.extent())
        self.update()

    def wait(self) -> None:
        """Finish the pending rendering now (tests, screenshots)."""
        if self.job is not None and self.job.isActive():
            self.job.waitForFinished()
        if self.job is not None and self.image is None:
            self._rendered(self.job)

    def set_divider(self, x: float) -> None:
        self.divider = int(max(0, min(self.canvas.width(), x)))
        self.update()

    def paint(self, painter, *args):  # noqa: D401 - QgsMapCanvasItem's drawing hook
        if self.image is None or self.image.isNull():
            return
        rect = self.boundingRect()
        width, height = rect.width(), rect.height()
        ratio = self.image.width() / max(width, 1)
        x = min(self.divider, width)
        painter.drawImage(QRectF(0, 0, x, height), self.image, QRectF(0, 0, x * ratio, self.image.height()))
        painter.setPen(QPen(QColor(255, 255, 255), 3))
        painter.drawLine(QPointF(x, 0), QPointF(x, height))
        painter.setPen(QPen(QColor(20, 20, 20), 1))
        painter.drawLine(QPointF(x, 0), QPointF(x, height))
        painter.setBrush(QColor(255, 255, 255))
        painter.drawRect(QRectF(x - HANDLE / 2, height / 2 - HANDLE, HANDLE, 2 * HANDLE))
        font = QFont(painter.font())
        font.setBold(True)
        painter.setFont(font)
        metrics = painter.fontMetrics()
        left, right = self.labels
        for text, px in ((left, x - LABEL_MARGIN - metrics.horizontalAdvance(left)), (right, x + LABEL_MARGIN)):
            top = height - LABEL_MARGIN - metrics.height() - 2  # at the bottom: QGIS's message bar covers the top
            box = QRectF(px - 3, top, metrics.horizontalAdvance(text) + 6, metrics.height() + 2)
            painter.setPen(Qt.NoPen)
            painter.setBrush(QColor(255, 255, 255, 200))
            painter.drawRect(box)
            painter.setPen(QPen(QColor(20, 20, 20)))
            painter.drawText(box, Qt.AlignCenter, text)

    def remove(self) -> None:
        try:
            self.canvas.mapCanvasRefreshed.disconnect(self.render)
        except TypeError:
            pass
        if self.job is not None:
            self.job.cancel()
        self.canvas.scene().removeItem(self)


class SwipeTool(QgsMapTool):
    """Press and drag on the map to move the divider; the decoded layer is left of it."""

    def __init__(self, canvas, decoded, original=None):
        super().__init__(canvas)
        self.decoded, self.original = decoded, original
        self.item: SwipeItem | None = None
        self.dragging = False
        self.setCursor(Qt.SplitHCursor)

    def _show(self, layer) -> None:
        node = QgsProject.instance().layerTreeRoot().findLayer(layer.id()) if layer is not None else None
        if node is not None:
            node.setItemVisibilityChecked(True)

    def activate(self):
        super().activate()
        if self.original is not None:
            self._show(self.original)  # in the exclusive group this hides the decoded layer
            node = QgsProject.instance().layerTreeRoot().findLayer(self.decoded.id())
            parent = node.parent() if node is not None else None
            if node is not None and parent is not None and not parent.isMutuallyExclusive():
                node.setItemVisibilityChecked(False)
        self.item = SwipeItem(self.canvas(), self.decoded)
        self.canvas().refresh()

    def deactivate(self):
        if self.item is not None:
            self.item.remove()
            self.item = None
        self._show(self.decoded)
        self.canvas().refresh()
        super().deactivate()

    def canvasPressEvent(self, event):  # noqa: N802 - QGIS name
        if event.button() == Qt.LeftButton and self.item is not None:
            self.dragging = True
            self.item.set_divider(event.pos().x())

    def canvasMoveEvent(self, event):  # noqa: N802 - QGIS name
        if self.dragging and self.item is not None:
            self.item.set_divider(event.pos().x())

    def canvasReleaseEvent(self, event):  # noqa: N802 - QGIS name
        if self.item is not None and self.dragging:
            self.item.set_divider(event.pos().x())
        self.dragging = False
