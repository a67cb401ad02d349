#!/usr/bin/env bash
# Creates (once) and reuses the chart tests' virtualenv under
# ${XDG_CACHE_HOME:-$HOME/.cache}/xdp-speaker-chart-venv with the pinned
# requirements (reinstalled only when requirements.txt changes), and prints
# the venv's python. python3 with venv comes from tools.toml (`cargo xtask
# test` installs it). Used by run.sh (pytest) and render.sh (the pod lab).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/xdp-speaker-chart-venv"
requirements="$here/requirements.txt"

# A venv whose interpreter no longer runs (python upgraded or removed) is rebuilt.
if [ -e "$venv" ] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$venv"
fi

if [ ! -x "$venv/bin/python" ] || [ ! -x "$venv/bin/pip" ]; then
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if ! python3 -m venv "$venv" >&2; then
        echo "venv.sh: python3 cannot create a venv (Debian: the python3-venv package, see tools.toml)" >&2
        exit 1
    fi
fi

# Parallel callers (pytest and a lab test) must not install at the same time.
exec 9>"$venv/.lock"
flock 9
stamp="$venv/.requirements.sha256"
wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
    echo "$wanted" >"$stamp"
fi
echo "$venv/bin/python"
