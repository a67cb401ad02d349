#!/usr/bin/env bash
# Chart tests: render charts/xdp-speaker offline with helm-python-sdk (Helm v4
# as a library) and check the objects, in the venv that venv.sh keeps; exits
# with pytest's status. Extra arguments go to pytest (e.g. -k memberlist).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="$(bash "$here/venv.sh")"
cd "$here"
status=0
PYTHONDONTWRITEBYTECODE=1 "$python" -m pytest -q -p no:cacheprovider "$here" "$@" || status=$?
exit "$status"
