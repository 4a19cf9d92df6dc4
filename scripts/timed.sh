#!/usr/bin/env bash
# Run a command and print how long it took: `timed.sh "label" cmd args...`.
label="$1"; shift
start=$(date +%s)
echo "==> $label"
"$@"; rc=$?
echo "<== $label: $(( $(date +%s) - start )) s (exit $rc)"
exit $rc
