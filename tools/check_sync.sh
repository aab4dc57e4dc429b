#!/usr/bin/env bash
# Fails (exit 1) with a clear message if nbdev-clean or nbdev-export would change the committed tree.
set -uo pipefail
BIN=${BIN:-.venv/bin}
dirty_before=$(git status --porcelain -- nbs image_poser)
if [ -n "$dirty_before" ]; then
  echo "check_sync: nbs/ or image_poser/ has uncommitted changes; commit them first:"; echo "$dirty_before"; exit 1
fi
status=0
"$BIN/nbdev-clean" >/dev/null
if [ -n "$(git status --porcelain -- nbs)" ]; then
  echo "ERROR: notebooks are not clean: run 'nbdev-clean' (make clean-nbs) and commit. Changed:"
  git status --porcelain -- nbs; git checkout -q -- nbs; status=1
fi
"$BIN/nbdev-export" >/dev/null
if [ -n "$(git status --porcelain -- image_poser)" ]; then
  echo "ERROR: image_poser/ is out of sync with nbs/: edit the notebooks, run 'nbdev-export' (make export), commit both. Differs:"
  git status --porcelain -- image_poser; git diff --stat -- image_poser
  git checkout -q -- image_poser; git clean -qfd -- image_poser; status=1
fi
if ! "$BIN/ruff" check -q nbs tests tools image_poser || ! "$BIN/ruff" format -q --check nbs tests tools; then
  echo "ERROR: the lint gate fails: run 'make format' (ruff), fix what remains, export and commit."; status=1
fi
[ $status -eq 0 ] && echo "check_sync: notebooks clean, library in sync, lint clean"
exit $status
