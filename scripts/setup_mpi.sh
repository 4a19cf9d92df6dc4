#!/usr/bin/env bash
# Install Debian's OpenMPI (openmpi-bin: mpirun; libopenmpi-dev: mpicc and headers) when
# missing: Jittor's data-parallel runs start under mpirun and Jittor compiles its MPI ops
# with mpicc (on import, once, cached; so this runs before the Jittor compile step).
# Idempotent. Prints one line. Exit status is 0 even when OpenMPI cannot be had: the
# project then runs single-process Jittor only, and the data-parallel tests say why.
set -u
if command -v mpirun >/dev/null 2>&1 && command -v mpicc >/dev/null 2>&1; then
  echo "OpenMPI: already installed ($(mpirun --version 2>/dev/null | head -n 1))"; exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev) \
    >/tmp/rtdetr_apt_mpi.log 2>&1
fi
if command -v mpirun >/dev/null 2>&1 && command -v mpicc >/dev/null 2>&1; then
  echo "OpenMPI: installed Debian's $(mpirun --version 2>/dev/null | head -n 1)"
else
  echo "OpenMPI: NOT available (openmpi-bin/libopenmpi-dev could not be installed, see /tmp/rtdetr_apt_mpi.log); Jittor runs single-process only"
fi
exit 0
