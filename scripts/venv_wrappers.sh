#!/usr/bin/env bash
# Make DIR/bin/{python,pip,pytest,torchrun} wrappers that exec the shared venv VENV by its real
# path. A symlink to the venv would not do: Python then reports the symlink's path, and
# Jittor, which keys its compiled-kernel cache by the path of its installation, would
# compile every kernel again for each clone.
#   usage: scripts/venv_wrappers.sh VENV DIR
set -euo pipefail
venv=$1 dir=$2
[ -L "$dir" ] && rm -f "$dir"
mkdir -p "$dir/bin"
for exe in python python3 pip pytest torchrun; do
  printf '#!/bin/sh\nexec %s/bin/%s "$@"\n' "$venv" "$exe" > "$dir/bin/$exe.tmp"
  chmod +x "$dir/bin/$exe.tmp"
  mv "$dir/bin/$exe.tmp" "$dir/bin/$exe"
done
