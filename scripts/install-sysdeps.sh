#!/usr/bin/env bash
# System packages the tests need (Debian): dcm2niix is the reference for DICOM series geometry;
# chromium + chromium-driver run the web viewer's browser test (headless, driven by Selenium).
set -euo pipefail
missing=()
command -v dcm2niix >/dev/null 2>&1 || missing+=(dcm2niix)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
  echo "medlens: missing system packages: ${missing[*]} (install them with apt-get as root)" >&2
  exit 0
fi
echo "medlens: installing ${missing[*]} with apt-get"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
