#!/usr/bin/env bash
# Builds the site into a temporary directory and takes the screenshots shown in
# docs/design.md with headless Chromium (apt-get install chromium). Run from anywhere:
#   bash docs/screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(mktemp -d)
profile=$(mktemp -d)
trap 'rm -rf "$site" "$profile"' EXIT
NO_MKDOCS_2_WARNING=1 .venv/bin/python -m mkdocs build --strict --quiet -d "$site"

shot() {  # shot PAGE OUTPUT
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$profile" --hide-scrollbars --window-size=1280,900 \
        --screenshot="$2" "file://$site/$1" 2>/dev/null
}
shot index.html docs/images/screenshot-home.png
shot performance/index.html docs/images/screenshot-performance.png
echo "wrote docs/images/screenshot-home.png docs/images/screenshot-performance.png"
