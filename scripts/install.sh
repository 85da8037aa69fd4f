#!/usr/bin/env bash
# Sets up everything voxray needs on a Debian machine: system packages for test
# speech and the peers tests talk to, then a virtualenv with the project in it.
set -euo pipefail
cd "$(dirname "$0")/.."

# openssh-server and rsync: `ray up` reaches nodes over ssh (tests/test_ray_up.py runs a real one).
APT_PACKAGES=(espeak-ng sox libsndfile1 chromium sip-tester kamailio baresip tcpdump openssh-server rsync)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install() {
  # Quiet, but a failure still fails the script (the filter only drops pip's
  # notes about this machine's extra package folders).
  .venv/bin/python -m pip install -q "$@" 2> >(grep -v "^WARNING: Location" >&2)
}
pip_install --upgrade pip
# torch first and pinned: a bare `torch` would pull a multi-GB CUDA build.
pip_install "torch==2.13.0"
pip_install -e ".[test]"
.venv/bin/python -c "import voxray, ray, faster_whisper, piper, silero_vad, torch; print('voxray installed; torch', torch.__version__)"
