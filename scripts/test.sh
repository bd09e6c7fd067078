#!/usr/bin/env bash
# Run every test: the library in .venv, the QGIS plugin in the system Python that has QGIS.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -q tests --ignore=tests/qgis "$@"
if [ -d tests/qgis ]; then
  if /usr/bin/python3 -c "import qgis.core" 2>/dev/null; then
    QT_QPA_PLATFORM=offscreen CODERSIC_PYTHON="$PWD/.venv/bin/python" /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/qgis
  else
    echo "SKIPPED tests/qgis: QGIS is not installed (sudo apt-get install qgis python3-qgis python3-pytest xvfb)" >&2
  fi
fi
