#!/usr/bin/env bash
# Renders the fixture report and screenshots report.html in headless Chromium, offline.
#
#   report/scripts/render_check.sh [OUT_DIR]      (default: a fresh temporary directory)
#
# Writes OUT_DIR/report (the fixture report, via `cargo run -p report --example fixture`) and
# OUT_DIR/report.png (a 1400 px wide full-page screenshot), then checks that the screenshot
# exists and is not trivially small. Open the PNG and look at it: every figure must be drawn,
# no label may overlap another. Needs /usr/bin/chromium (Debian: apt-get install -y chromium).
# Chromium runs with networking features off and a throw-away profile; the page itself has no
# URL to fetch (the Rust tests check that too).
set -euo pipefail
cd "$(dirname "$0")/../.."

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  echo "render_check: $CHROMIUM not found; install it with: apt-get install -y chromium" >&2
  exit 2
fi

OUT=${1:-$(mktemp -d)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -rf "$OUT/report"

cargo run --quiet -p report --example fixture -- "$OUT/report"

PROFILE=$(mktemp -d)
trap 'rm -rf "$PROFILE"' EXIT
# The page is about 10 500 px tall at 1400 px wide; a taller window captures all of it.
HEIGHT=${HEIGHT:-11500}
"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --user-data-dir="$PROFILE" \
  --screenshot="$OUT/report.png" --window-size=1400,"$HEIGHT" \
  "file://$OUT/report/report.html" 2>"$OUT/chromium.log" || {
    echo "render_check: chromium failed; see $OUT/chromium.log" >&2
    exit 1
  }

SIZE=$(stat -c %s "$OUT/report.png" 2>/dev/null || echo 0)
if [ "$SIZE" -lt 50000 ]; then
  echo "render_check: screenshot $OUT/report.png is missing or blank ($SIZE bytes)" >&2
  exit 1
fi
echo "render_check: screenshot $OUT/report.png ($SIZE bytes) of $OUT/report/report.html"
