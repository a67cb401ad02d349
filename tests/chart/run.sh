#!/usr/bin/env bash
# Chart tests: render charts/xdp-speaker offline with helm-python-sdk (Helm v4
# as a library) and check the objects. Creates (once) and reuses a virtualenv
# under ${XDG_CACHE_HOME:-$HOME/.cache}/xdp-speaker-chart-venv, installs the
# pinned requirements when they change, and exits with pytest's status.
# Extra arguments go to pytest (e.g. -k memberlist).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/xdp-speaker-chart-venv"
requirements="$here/requirements.txt"

as_root_apt_install() {
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "run.sh: need $* (install it, or run as root on Debian)" >&2
        exit 1
    fi
    echo "run.sh: installing $* with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v python3 >/dev/null 2>&1 || as_root_apt_install python3 python3-venv

# A venv whose interpreter no longer runs (python upgraded or removed) is rebuilt.
if [ -e "$venv" ] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$venv"
fi

if [ ! -x "$venv/bin/python" ] || [ ! -x "$venv/bin/pip" ]; then
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    # Debian's python3 needs python3-venv (ensurepip) to create a venv with pip.
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        version="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        as_root_apt_install python3-venv "python${version}-venv"
        python3 -m venv "$venv"
    fi
fi

# Install only when the requirements changed since the last install.
stamp="$venv/.requirements.sha256"
wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    echo "$wanted" >"$stamp"
fi

cd "$here"
status=0
PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider "$here" "$@" || status=$?
exit "$status"
