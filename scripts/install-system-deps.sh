#!/usr/bin/env bash
# Installs the system packages the tests need: Mesa's software Vulkan driver (lavapipe) and the Vulkan
# loader, so that the WGPU backend runs on machines without a GPU. With `--browser`, also Debian's
# Chromium, which scripts/check-report.sh renders report.html in; with `--slurm`, Debian's Slurm
# and munge, which scripts/test-slurm.sh runs a one-node cluster of. Idempotent; needs root or sudo.
set -euo pipefail
packages=(mesa-vulkan-drivers libvulkan1)
for arg in "$@"; do
  case "$arg" in
    --browser) packages+=(chromium) ;;
    --slurm) packages+=(slurm-wlm munge) ;;
    *) echo "unknown option $arg (--browser, --slurm)" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
