#!/bin/sh
# Installs what the benchmark crate needs from the system: bdwgc's
# development files (libgc-dev: gc.h and libgc.so), which the `gc` workload
# group links against (see benches/build.rs and benches/README.md).
# Idempotent: does nothing when libgc is already there.
set -eu

have_libgc() {
    # pkg-config knows bdwgc as "bdw-gc"; fall back to looking for the
    # unversioned shared object the linker needs for -lgc.
    if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists bdw-gc; then
        return 0
    fi
    for dir in /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib /usr/local/lib; do
        [ -e "$dir/libgc.so" ] && return 0
    done
    return 1
}

if have_libgc; then
    echo "benches/setup.sh: libgc (bdwgc) is installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=
elif command -v sudo >/dev/null 2>&1; then
    SUDO=sudo
else
    echo "benches/setup.sh: libgc-dev is missing and this is not root without sudo;" >&2
    echo "install it yourself: apt-get install -y libgc-dev" >&2
    exit 1
fi

echo "benches/setup.sh: installing libgc-dev (bdwgc)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libgc-dev
have_libgc || { echo "benches/setup.sh: libgc-dev installed but libgc.so not found" >&2; exit 1; }
echo "benches/setup.sh: libgc (bdwgc) is installed"
