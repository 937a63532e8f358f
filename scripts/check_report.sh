#!/usr/bin/env bash
# Manual check of a screening report in a real browser: headless Chromium loads the HTML,
# paints it into a PNG screenshot (1280 x 2000) and the check fails when the page did not
# render (no screenshot, wrong size, or a blank page).
#
#   scripts/check_report.sh REPORT.html OUT.png
#
# Needs Debian's chromium (apt-get install chromium) and python3 with Pillow (the project's
# .venv has it). The report is self-contained, so no network is used or needed.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 REPORT.html OUT.png" >&2
    exit 2
fi
report=$1
out=$2
if [[ ! -f "$report" ]]; then
    echo "error: report not found: $report (write one with render_report)" >&2
    exit 2
fi
chromium_bin=$(command -v chromium || true)
if [[ -z "$chromium_bin" ]]; then
    echo "error: chromium not installed: apt-get install chromium" >&2
    exit 3
fi
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
[[ -x "$python" ]] || python=python3

abs_report=$(realpath "$report")
report_uri=$("$python" -c 'import pathlib, sys; print(pathlib.Path(sys.argv[1]).as_uri())' "$abs_report")
mkdir -p "$(dirname "$out")"
abs_out=$(realpath "$out")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

rm -f "$abs_out"
timeout 60 "$chromium_bin" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --user-data-dir="$profile" --virtual-time-budget=5000 \
    --window-size=1280,2000 --screenshot="$abs_out" "$report_uri" >/dev/null 2>&1 || {
    echo "error: chromium failed to render $abs_report" >&2
    exit 1
}

"$python" - "$abs_out" <<'PY'
import sys

from PIL import Image

path = sys.argv[1]
with Image.open(path) as im:
    size = im.size
    colours = im.convert("RGB").getcolors(maxcolors=1 << 24) or []
if size != (1280, 2000):
    sys.exit(f"error: screenshot {path} is {size[0]}x{size[1]}, expected 1280x2000")
if len(colours) <= 100:
    sys.exit(f"error: screenshot {path} looks blank ({len(colours)} distinct colours)")
print(f"OK: {path} {size[0]}x{size[1]}, {len(colours)} distinct colours")
PY
