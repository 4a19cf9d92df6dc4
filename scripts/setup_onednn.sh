#!/usr/bin/env bash
# Lay Debian's oneDNN (libdnnl-dev) out where Jittor looks for its oneDNN download,
# so that Jittor's MKL conv/matmul ops compile offline. Idempotent. Prints one line.
# Exit status is 0 even when oneDNN cannot be had: the project then runs without it.
set -u
home_dir="${JITTOR_HOME:-$HOME}"
target="$home_dir/.cache/jittor/mkl/dnnl_lnx_2.2.0_cpu_gomp"
if [ -e "$target/lib/libmkldnn.so" ] && [ -e "$target/include/dnnl.hpp" ]; then
  echo "oneDNN: already laid out at $target"; exit 0
fi
find_lib() { ls /usr/lib/*/libdnnl.so 2>/dev/null | head -n 1; }
lib=$(find_lib)
if [ -z "$lib" ] || [ ! -e /usr/include/dnnl.hpp ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libdnnl-dev) >/tmp/rtdetr_apt_dnnl.log 2>&1
    lib=$(find_lib)
  fi
fi
if [ -z "$lib" ] || [ ! -e /usr/include/dnnl.hpp ]; then
  echo "oneDNN: NOT available (libdnnl-dev could not be installed); Jittor will run with use_mkl=0 (slow convolutions)"
  exit 0
fi
mkdir -p "$target/include" "$target/lib"
for f in /usr/include/dnnl*.h /usr/include/dnnl*.hpp /usr/include/oneapi; do
  ln -sfn "$f" "$target/include/$(basename "$f")"
done
ln -sfn "$lib" "$target/lib/libmkldnn.so"
ln -sfn "$lib" "$target/lib/libdnnl.so"
echo "oneDNN: laid out Debian's $(readlink -f "$lib") at $target"
