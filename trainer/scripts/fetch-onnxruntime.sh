#!/usr/bin/env bash
# fetch-onnxruntime.sh DEST_DIR
#
# Puts ONNX Runtime's CPU shared library at DEST_DIR/libonnxruntime.so.1 (linux/x64).
# The library comes from the npm package onnxruntime-node, which ships it prebuilt;
# `npm pack` downloads the package tarball without installing anything. The tarball's
# sha256 is pinned below, and so is the library's, so a changed upstream artefact fails
# loudly instead of being loaded into the trainer. Running it again is a no-op once the
# library is in place and still matches its pinned hash.
#
# Used by `make ort`; the Go code finds the library through TEXGRID_ORT_LIB, a flag, or
# .cache/onnxruntime/libonnxruntime.so.1 under the repository root.
set -euo pipefail

ORT_NPM_VERSION=1.30.0
# sha256 of onnxruntime-node-1.30.0.tgz as served by registry.npmjs.org (recorded 2026-11-21).
TARBALL_SHA256=6e3390d6b783e7be946fad629292799da28d0b42f84856e50d2c1b0383291e75
# sha256 of package/bin/napi-v6/linux/x64/libonnxruntime.so.1 inside that tarball.
LIB_SHA256=ffb75a925ba05e47b235bb66e3e3911714a80b328a9c9425539feb204aa32a23
LIB_IN_TARBALL=package/bin/napi-v6/linux/x64/libonnxruntime.so.1

die() { echo "fetch-onnxruntime: $*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: $0 DEST_DIR"
dest=$1

case "$(uname -s)/$(uname -m)" in
Linux/x86_64) ;;
*) die "only linux/x86_64 is supported (this is $(uname -s)/$(uname -m)); set TEXGRID_ORT_LIB to a libonnxruntime you built or downloaded" ;;
esac

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f $dest/libonnxruntime.so.1 ]]; then
	got=$(sha256_of "$dest/libonnxruntime.so.1")
	if [[ $got == "$LIB_SHA256" ]]; then
		echo "fetch-onnxruntime: $dest/libonnxruntime.so.1 already present (sha256 ok)"
		exit 0
	fi
	echo "fetch-onnxruntime: $dest/libonnxruntime.so.1 has sha256 $got, want $LIB_SHA256; fetching again" >&2
fi

command -v npm >/dev/null || die "npm is not installed (Debian: apt-get install npm, or run make deps)"
command -v sha256sum >/dev/null || die "sha256sum is not installed (coreutils)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "fetch-onnxruntime: npm pack onnxruntime-node@$ORT_NPM_VERSION (about 110 MB)"
(cd "$tmp" && npm pack --silent "onnxruntime-node@$ORT_NPM_VERSION" >/dev/null) ||
	die "npm pack onnxruntime-node@$ORT_NPM_VERSION failed (is the npm registry reachable?)"
tarball=$tmp/onnxruntime-node-$ORT_NPM_VERSION.tgz
[[ -f $tarball ]] || die "npm pack did not produce $tarball"

got=$(sha256_of "$tarball")
if [[ $got != "$TARBALL_SHA256" ]]; then
	die "CHECKSUM MISMATCH for onnxruntime-node-$ORT_NPM_VERSION.tgz: got $got, want $TARBALL_SHA256; refusing to install it"
fi

tar -xzf "$tarball" -C "$tmp" "$LIB_IN_TARBALL" || die "$LIB_IN_TARBALL is not in the tarball"
got=$(sha256_of "$tmp/$LIB_IN_TARBALL")
[[ $got == "$LIB_SHA256" ]] || die "CHECKSUM MISMATCH for $LIB_IN_TARBALL: got $got, want $LIB_SHA256"

mkdir -p "$dest"
# Copy then rename, so an interrupted run never leaves a half-written library behind.
cp "$tmp/$LIB_IN_TARBALL" "$dest/.libonnxruntime.so.1.tmp"
chmod 0644 "$dest/.libonnxruntime.so.1.tmp"
mv -f "$dest/.libonnxruntime.so.1.tmp" "$dest/libonnxruntime.so.1"
echo "fetch-onnxruntime: installed $dest/libonnxruntime.so.1 (onnxruntime-node $ORT_NPM_VERSION)"
