#!/usr/bin/env bash
# System packages of the serving tests, installed with apt when missing: a real PostgreSQL (tests/serve start
# a throwaway cluster) and headless Chromium with its WebDriver (the browser test of the web chat).
set -euo pipefail
need=()
command -v pg_ctl >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || need+=(postgresql)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if ((${#need[@]})); then
  echo "installing system packages for the serving tests: ${need[*]}"
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
