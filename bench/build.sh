#!/bin/sh
# SPDX-License-Identifier: MIT
# Builds the binaries the benchmarks measure: a release build of the working
# tree in BUILD (default /tmp/bench-build), its revision written to
# BUILD/REVISION so the figures name what was measured even if the tree
# moves on while they run.
#   bench/build.sh [BUILD]
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-/tmp/bench-build}
rev=$(git -C "$src" rev-parse --short HEAD)
if [ -n "$(git -C "$src" status --porcelain --untracked-files=no)" ]; then
        rev="$rev with uncommitted changes"
fi
if [ -d "$build/meson-private" ]; then
        meson setup --reconfigure "$build" "$src" --buildtype=release -Dwerror=false
else
        meson setup "$build" "$src" --buildtype=release -Dwerror=false
fi
ninja -C "$build"
echo "$rev" > "$build/REVISION"
echo "built $build/src/sqlite-maintd from $rev"
