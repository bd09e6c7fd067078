"""The plugin's settings (QgsSettings under ``CodeRSIC/``) and the worker they select."""

from __future__ import annotations

from dataclasses import dataclass

from qgis.core import QgsSettings

from ._contract import options
from .worker_client import WorkerCommand, find_worker

PREFIX = "CodeRSIC/"
MAX_THREADS = 256  # the most worker CPU threads the settings offer (0: all cores)


@dataclass
class PluginSettings:
    worker_python: str = ""  # empty: find it automatically
    source_dir: str = ""  # a Code-RSIC source folder put on the worker's PYTHONPATH (optional)
    threads: int = 0  # CPU threads for the worker's torch (0: all cores)
    device: str = options.DEFAULT_DEVICE
    enhancer: str = ""  # enhancer weights (name or .safetensors); empty: the shipped one

    @classmethod
    def load(cls) -> "PluginSettings":
        s = QgsSettings()
        return cls(
            worker_python=str(s.value(PREFIX + "worker_python", "") or ""),
            source_dir=str(s.value(PREFIX + "source_dir", "") or ""),
            threads=int(s.value(PREFIX + "threads", 0) or 0),
            device=str(s.value(PREFIX + "device", options.DEFAULT_DEVICE) or options.DEFAULT_DEVICE),
            enhancer=str(s.value(PREFIX + "enhancer", "") or ""),
        )

    def save(self) -> None:
        s = QgsSettings()
        s.setValue(PREFIX + "worker_python", self.worker_python)
        s.setValue(PREFIX + "source_dir", self.source_dir)
        s.setValue(PREFIX + "threads", int(self.threads))
        s.setValue(PREFIX + "device", self.device)
        s.setValue(PREFIX + "enhancer", self.enhancer)

    def job_extras(self) -> dict:
        """What every worker job gets from the settings."""
        extras = {"threads": int(self.threads)}
        if self.enhancer:
            extras["enhancer"] = self.enhancer
        return extras


def current_worker() -> WorkerCommand:
    """The worker command for the current settings (raises WorkerError with a setup hint)."""
    st = PluginSettings.load()
    return find_worker(st.worker_python, st.source_dir)
