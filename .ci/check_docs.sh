#!/usr/bin/env bash
# The docs site builds with no warning (mkdocs.yml sets strict), and this check can fail.
#
# mkdocs counts only the warnings its log handler sees, so `--quiet` (which silences them)
# turned `--strict` into a check that always passed. Here the build runs without it, and a
# canary build with one broken link must then fail, so the step proves on every run that a
# broken link would fail CI. Usage: bash .ci/check_docs.sh PATH/TO/mkdocs
set -euo pipefail
cd "$(dirname "$0")/.."
mkdocs=$1
export NO_MKDOCS_2_WARNING=1

"$mkdocs" build --strict --site-dir "$(mktemp -d)"

page=docs/hardening.md
backup=$(mktemp)
cp "$page" "$backup"
trap 'cp "$backup" "$page"' EXIT
printf '\n[canary](no-such-page.md)\n' >>"$page"
if "$mkdocs" build --strict --site-dir "$(mktemp -d)" >/dev/null 2>&1; then
    echo "docs check is broken: a page with a broken link built without error" >&2
    exit 1
fi
echo "docs check: a broken link fails the build (canary), the real pages build cleanly"
