#!/usr/bin/env bash
# Writes the containers.conf settings podman needs on machines like the CI one (run as root by
# `scripts/install.sh --dev`); idempotent: only vidscore's own block is replaced on a second run.
#   runtime = "runc"      crun, podman's default, fails there ("cgroups in hybrid mode not supported")
#   default_ulimits = []  the sandbox refuses raising rlimits, which podman does for every container
#   pids_limit = 0        (likewise a limit podman would set)
# `podman system service` (the Docker API socket compose and DockerRunLauncher use) reads only this
# file, not command-line flags, hence a file and not options.
set -euo pipefail
conf="${1:-/etc/containers/containers.conf}"
begin="# >>> vidscore podman settings (scripts/podman-config.sh)"
end="# <<< vidscore"

mkdir -p "$(dirname "$conf")"
touch "$conf"
if grep -qE '^\[(engine|containers)\]' <(sed "\\|^$begin\$|,\\|^$end\$|d" "$conf"); then
  echo "error: $conf already has [engine] or [containers] tables; add runtime = \"runc\", default_ulimits = [] and pids_limit = 0 to them by hand" >&2
  exit 1
fi
tmp=$(mktemp)
sed "\\|^$begin\$|,\\|^$end\$|d" "$conf" >"$tmp"
cat >>"$tmp" <<CONF
$begin
[containers]
default_ulimits = []
pids_limit = 0

[engine]
runtime = "runc"
$end
CONF
install -m 0644 "$tmp" "$conf"
rm -f "$tmp"
echo "podman settings written to $conf"
