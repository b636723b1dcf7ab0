#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs every test of the workspace
# on the CPU (Flex) backend and, for the parity tests, on WGPU through Mesa's software Vulkan driver.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-deps.sh
cargo test --workspace "$@"
