#!/usr/bin/env bash
# Build the documentation site and take headless-Chromium screenshots of the landing page, a domain page and a
# concept page with formulas, so a person (or an agent with an image viewer) can look at the site as a reader does.
#
#   bash docs/scripts/screenshots.sh [OUT_DIR]        # default OUT_DIR: /tmp/flowsci_screenshots
#
# Needs: the docs extra (mkdocs), Debian's chromium (apt-get install -y chromium) and, to check the formulas
# offline, Debian's MathJax (apt-get install -y libjs-mathjax fonts-mathjax): the published site loads MathJax 3
# from a CDN; for the screenshots the CDN script is swapped for the local MathJax 2 when it is installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/flowsci_screenshots}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
SITE="$WORK/site"
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet -d "$SITE"

LOCAL_MJ=/usr/share/javascript/mathjax/MathJax.js
if [ -f "$LOCAL_MJ" ]; then
  cat > "$SITE/mathjax-local-config.js" <<'JS'
window.MathJax = { tex2jax: { inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true,
  ignoreClass: ".*", processClass: "arithmatex" }, messageStyle: "none", "HTML-CSS": { availableFonts: ["TeX"] } };
JS
  # every page: replace the CDN MathJax 3 script by the local MathJax 2 (and its config)
  find "$SITE" -name '*.html' -print0 | xargs -0 sed -i -E \
    -e "s#<script src=\"[^\"]*javascripts/mathjax.js\"></script>#<script src=\"file://$SITE/mathjax-local-config.js\"></script>#" \
    -e "s#<script src=\"https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js\"></script>#<script src=\"file://$LOCAL_MJ?config=TeX-AMS_HTML\"></script>#"
  echo "formulas: local MathJax 2 from $LOCAL_MJ"
else
  echo "formulas: $LOCAL_MJ not installed; the CDN is used (without network the TeX source shows)" >&2
fi

BROWSER=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$BROWSER" ]; then echo "no chromium found: apt-get install -y chromium" >&2; exit 2; fi
shot() {  # shot NAME PAGE
  local profile; profile=$(mktemp -d)
  "$BROWSER" --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$profile" --allow-file-access-from-files \
    --virtual-time-budget=15000 --hide-scrollbars --window-size=1400,2000 \
    --screenshot="$OUT/$1.png" "file://$SITE/$2" >/dev/null 2>&1 || true
  rm -rf "$profile"
  if [ -s "$OUT/$1.png" ]; then echo "$OUT/$1.png  <- $2"; else echo "FAILED: $1 ($2)" >&2; return 1; fi
}
shot landing index.html
shot proteins domains/proteins/index.html
shot paths concepts/paths/index.html
shot leaderboard leaderboard/index.html
