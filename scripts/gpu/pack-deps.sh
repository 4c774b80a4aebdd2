#!/usr/bin/env bash
# pack-deps.sh: the .deb files of fetch-debs.sh, unpacked and slimmed into one archive that
# gpu-build.sh unpacks like the .debs themselves, small enough to travel to a GPU host beside the
# checkout (what travels there is limited to 64 MiB in all, and the checkout alone is ~56 MiB).
#
#   scripts/gpu/pack-deps.sh DEBS_DIR OUT_DIR [--with-fallback]
#
# Writes OUT_DIR/imagegen-deps.tar.xz (deps/ and, with --with-fallback, deps-fb/, laid out as
# gpu-build.sh's prefix before it fixes links and pkg-config files) and OUT_DIR/MANIFEST.txt.
# Left out: documentation, manual pages, sources, and the static archives (Debian's -dev packages
# ship .a files beside the .so ones; the build links the shared ones), except GoogleTest's, which
# Debian ships only static. Four shared libraries that only CMake's gRPC and protobuf config
# files name (they check that every file of every imported target exists) and that no imagegen
# binary, protoc or grpc_cpp_plugin loads are replaced by empty files: gRPC's "unsecure" variants,
# channelz and protobuf-lite (STUBS below); linking one of them fails loudly. The fallback
# run-time libraries (libssl3, zlib1g, libcurl4) are left out unless asked for: the GPU hosts have
# their own.
set -euo pipefail

die() { echo "pack-deps.sh: $*" >&2; exit 1; }
[ $# -ge 2 ] && [ $# -le 3 ] || die "usage: pack-deps.sh DEBS_DIR OUT_DIR [--with-fallback]"
DEBS=$(cd "$1" && pwd) || die "no folder $1"
mkdir -p "$2" && OUTDIR=$(cd "$2" && pwd) || die "cannot create $2"
FALLBACK=0
[ "${3:-}" = --with-fallback ] && FALLBACK=1
[ -z "${3:-}" ] || [ "$FALLBACK" = 1 ] || die "unknown argument $3"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (run on Debian)"
command -v xz >/dev/null || die "xz not found"

STUBS="libgrpc_unsecure.so.* libgrpc++_unsecure.so.* libgrpcpp_channelz.so.* libprotobuf-lite.so.*"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
shopt -s nullglob
debs=("$DEBS"/*.deb)
fbdebs=("$DEBS"/fallback/*.deb)
shopt -u nullglob
((${#debs[@]})) || die "no .deb files in $DEBS (scripts/gpu/fetch-debs.sh fills it)"
mkdir -p "$TMP/deps"
for f in "${debs[@]}"; do dpkg-deb -x "$f" "$TMP/deps"; done
if ((FALLBACK)) && ((${#fbdebs[@]})); then
  mkdir -p "$TMP/deps-fb"
  for f in "${fbdebs[@]}"; do dpkg-deb -x "$f" "$TMP/deps-fb"; done
fi
for d in "$TMP"/deps*; do
  rm -rf "$d"/usr/share/{doc,man,info,lintian,bug,locale} "$d/usr/src"
done
# static archives, but GoogleTest's
find "$TMP" -name '*.a' ! -name 'libgtest*.a' ! -name 'libgmock*.a' -delete
# empty stand-ins for the shared libraries nothing loads (only CMake checks that they exist)
stubbed=()
for pattern in $STUBS; do
  for f in "$TMP"/deps/usr/lib/x86_64-linux-gnu/$pattern; do
    [ -f "$f" ] && [ ! -L "$f" ] || continue
    : >"$f"
    stubbed+=("$(basename "$f")")
  done
done
top=(deps)
[ -d "$TMP/deps-fb" ] && top+=(deps-fb)
tar -C "$TMP" --owner=0 --group=0 -cf - "${top[@]}" | xz -9e -T0 >"$OUTDIR/imagegen-deps.tar.xz.new"
mv -f "$OUTDIR/imagegen-deps.tar.xz.new" "$OUTDIR/imagegen-deps.tar.xz"
{
  echo "# imagegen-deps.tar.xz: scripts/gpu/pack-deps.sh on $(date -u +%F) from $DEBS ($(( ${#debs[@]} )) packages$( ((FALLBACK)) && echo ", ${#fbdebs[@]} fallback"))"
  echo "# empty stand-ins (never loaded; CMake's config files name them): ${stubbed[*]:-none}"
  [ -f "$DEBS/MANIFEST.txt" ] && grep -v '^#' "$DEBS/MANIFEST.txt"
} >"$OUTDIR/MANIFEST.txt"
size=$(stat -c %s "$OUTDIR/imagegen-deps.tar.xz")
printf '%s: %d packages, %d bytes = %.1f MiB\n' "$OUTDIR/imagegen-deps.tar.xz" "${#debs[@]}" "$size" \
  "$(awk -v t="$size" 'BEGIN {print t / 1048576}')"
