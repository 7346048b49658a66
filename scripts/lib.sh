# SPDX-License-Identifier: MIT
# Shared by scripts/demo and scripts/test: install what is missing, build.
# shellcheck shell=bash

# Debian 12 packages the build and the tests need.
MAINTD_PACKAGES=(
  gcc pkg-config meson ninja-build
  libsqlite3-dev libuv1-dev libyaml-dev libsystemd-dev
  python3 python3-pytest sqlite3
  sqlite3-tools     # sqlite3_analyzer: the deep scan's figures are checked against it
  systemd           # systemd-journald, journalctl and systemd-analyze for the tests
  util-linux        # mount (tmpfs for the disk-full tests), setpriv
  procps            # /bin/kill, for the unit's ExecReload
  acl               # setfacl, for the tests of directories and configurations an ACL opens
  man-db groff-base # man --warnings, to check the man pages render cleanly
  valgrind          # the daemon and sqlite-maintctl under memcheck (test_valgrind.py)
)

ensure_packages() {
  local missing=() p
  for p in "${MAINTD_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]}; run as root or install them with apt-get" >&2
    return 1
  fi
  echo "==> installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# build DIR [meson options...]: configure once, then build.
build() {
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log" >&2; return 1; }
  fi
  ninja -C "$dir" >"$dir.build.log" 2>&1 || { cat "$dir.build.log" >&2; return 1; }
  # A warning is a failure here; werror is on, but say so plainly too.
  if grep -q 'warning:' "$dir.build.log"; then
    grep 'warning:' "$dir.build.log" >&2
    return 1
  fi
}
