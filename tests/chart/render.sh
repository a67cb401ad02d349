#!/usr/bin/env bash
# Renders charts/xdp-speaker with real Helm (helm-python-sdk, in the venv that
# venv.sh keeps) and prints the manifests as multi-document YAML; see
# render.py for the options. Used by the chart-pod lab.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="$(bash "$here/venv.sh")"
PYTHONDONTWRITEBYTECODE=1 exec "$python" "$here/render.py" "$@"
