#!/usr/bin/env bash
# Builds every image of the compose stack with podman, from Debian's packages, without a registry:
#
#   vidscore-debian:bookworm         mmdebstrap --variant=minbase bookworm, imported (made once)
#   vidscore-python:3.11-bookworm    docker/base/python.Dockerfile   (PYTHON_IMAGE of docker/Dockerfile)
#   vidscore-postgres:15-bookworm    docker/base/postgres.Dockerfile (VIDSCORE_POSTGRES_IMAGE in compose)
#   vidscore-dagster:$TAG            docker/Dockerfile --target dagster  (webserver, daemon)
#   vidscore-user-code:$TAG          docker/Dockerfile (code server and runs; torch's CUDA wheels)
#   vidscore-user-code:$TAG-cpu      the same with torch's CPU wheels (--cpu; TORCH_INDEX_URL)
#
#   scripts/build-images.sh [--cpu] [--host-pip-config]
#
# --cpu              build the CPU user-code image instead of the CUDA one.
# --host-pip-config  pip in the builds uses this host's pip configuration (indexes, local wheels,
#                    constraints; see scripts/host_pip_config.py), mounted read-only for the build
#                    only. Without it pip in the builds uses plain PyPI.
# Podman's layer cache makes a second run quick: only layers whose inputs changed are rebuilt.
# Environment: VIDSCORE_IMAGE_TAG (0.1.0), TORCH_VERSION / TORCHVISION_VERSION and
# VIDSCORE_TORCH_CPU_INDEX_URL (https://download.pytorch.org/whl/cpu) for --cpu.
set -euo pipefail
cd "$(dirname "$0")/.."

cpu=0
host_pip=0
for arg in "$@"; do
  case "$arg" in
    --cpu) cpu=1 ;;
    --host-pip-config) host_pip=1 ;;
    *) echo "error: unknown option $arg (use --cpu, --host-pip-config)" >&2; exit 2 ;;
  esac
done

tag="${VIDSCORE_IMAGE_TAG:-0.1.0}"
base=localhost/vidscore-debian:bookworm
python_image=localhost/vidscore-python:3.11-bookworm

pip_args=()  # for the builds that run pip
if [[ $host_pip == 1 ]]; then
  pip_dir=$(mktemp -d)
  trap 'rm -rf "$pip_dir"' EXIT
  python3 scripts/host_pip_config.py >"$pip_dir/listing"
  sed '/^--paths--$/,$d' "$pip_dir/listing" >"$pip_dir/pip.conf"
  pip_args+=(--volume "$pip_dir:/run/host-pip:ro" --build-arg PIP_CONFIG_FILE=/run/host-pip/pip.conf)
  while read -r path; do
    pip_args+=(--volume "$path:$path:ro")
  done < <(sed '1,/^--paths--$/d' "$pip_dir/listing")
fi

step() {  # step NAME COMMAND...: runs a build step and reports its wall time
  local name=$1 start ms
  shift
  start=$(date +%s%N)
  "$@"
  ms=$((($(date +%s%N) - start) / 1000000))
  printf 'built %-40s in %d.%d s\n' "$name" $((ms / 1000)) $((ms % 1000 / 100))
}

make_base() {
  if podman image exists "$base"; then
    return
  fi
  local rootfs
  rootfs=$(mktemp -d)
  mmdebstrap --quiet --variant=minbase bookworm "$rootfs/rootfs.tar"
  podman import --quiet --change 'CMD ["/bin/bash"]' "$rootfs/rootfs.tar" "$base" >/dev/null
  rm -rf "$rootfs"
}

build() {  # build TAG podman-build-arguments...
  local image=$1
  shift
  podman build --layers -t "$image" "$@"
}

step "$base" make_base
step "$python_image" build "$python_image" --build-arg BASE_IMAGE="$base" \
  -f docker/base/python.Dockerfile docker/base
step localhost/vidscore-postgres:15-bookworm build localhost/vidscore-postgres:15-bookworm \
  --build-arg BASE_IMAGE="$base" -f docker/base/postgres.Dockerfile docker/base
step "localhost/vidscore-dagster:$tag" build "localhost/vidscore-dagster:$tag" \
  "${pip_args[@]}" --build-arg PYTHON_IMAGE="$python_image" -f docker/Dockerfile --ignorefile docker/Dockerfile.dockerignore --target dagster .
if [[ $cpu == 1 ]]; then
  step "localhost/vidscore-user-code:$tag-cpu" build "localhost/vidscore-user-code:$tag-cpu" \
    "${pip_args[@]}" --build-arg PYTHON_IMAGE="$python_image" \
    --build-arg TORCH_INDEX_URL="${VIDSCORE_TORCH_CPU_INDEX_URL:-https://download.pytorch.org/whl/cpu}" \
    --build-arg TORCH_VERSION="${TORCH_VERSION:-2.14.1}" \
    --build-arg TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.29.1}" \
    -f docker/Dockerfile --ignorefile docker/Dockerfile.dockerignore --target user-code .
else
  step "localhost/vidscore-user-code:$tag" build "localhost/vidscore-user-code:$tag" \
    "${pip_args[@]}" --build-arg PYTHON_IMAGE="$python_image" -f docker/Dockerfile --ignorefile docker/Dockerfile.dockerignore --target user-code .
fi
