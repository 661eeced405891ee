#!/usr/bin/env bash
# Installs what the whole-system tests need on Debian 12: the peer targets (tgt, istgt),
# libiscsi's command-line initiator tools, Wireshark's dumpcap and tshark, and the basics
# (iproute2, procps, a C linker), fio (the anchor of iscsi-bench) and chromium (renders its
# HTML report in a test), and bindfs (a FUSE pass-through the hostile-client tests stop with
# SIGSTOP to hang a LUN's backing store), and sg3_utils (sg_luns decodes our REPORT LUNS of
# protocol endpoints), and strace (iscsi-bench's end_syncfs test counts syncfs calls beside
# fio's), and util-linux-extra's fincore (the uncached tests read the page cache with it).
# Installs a Rust toolchain with rustup if cargo is missing.
#
# Idempotent and quiet: when everything is present it touches nothing (no apt-get update).
# Runs as root (CI) or through sudo.
set -euo pipefail

packages=(tgt istgt libiscsi-bin tshark fio chromium bindfs sg3-utils strace util-linux-extra iproute2 procps gcc libc6-dev ca-certificates curl)
# One executable per package proves it is usable, not only unpacked.
tools=(tgtd tgtadm istgt iscsi-ls iscsi-inq iscsi-readcapacity16 tshark dumpcap fio chromium bindfs sg_luns strace fincore ip ps cc)

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "install-deps: need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

have_tool() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

missing_packages=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing_packages+=("$package")
    fi
done

if [ "${#missing_packages[@]}" -gt 0 ]; then
    echo "install-deps: installing ${missing_packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Never let a package's maintainer script start a system tgtd or istgt here: the tests
    # start their own daemons on their own ports and need nothing else listening.
    policy=/usr/sbin/policy-rc.d
    created_policy=no
    if [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        created_policy=yes
    fi
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing_packages[@]}" >/dev/null
    if [ "$created_policy" = yes ]; then
        as_root rm -f "$policy"
    fi
fi

for tool in "${tools[@]}"; do
    if ! have_tool "$tool"; then
        echo "install-deps: $tool is still missing after installing packages" >&2
        exit 1
    fi
done

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: installing the stable Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
        | sh -s -- -y -q --profile minimal --component clippy,rustfmt >/dev/null
fi
