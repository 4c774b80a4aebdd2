#!/usr/bin/env bash
# fetch-debs.sh: download the Debian 12 packages that gpu-build.sh unpacks on the GPU host.
#
#   scripts/gpu/fetch-debs.sh DEST [MANIFEST]     (from the repo root: DEST .gpu-debs, git-ignored)
#
# Run on a Debian 12 (bookworm) amd64 machine with network, e.g. the one you build imagegen on.
# MANIFEST (default: debs.txt next to this script) lists package names, one a line ('#' starts a
# comment); a second word "fallback" puts that package into DEST/fallback/. The current candidate
# version of each package is downloaded with `apt-get download` (after `apt-get update` when apt
# cannot find a package or a file), checked against the SHA256 of apt's index and saved under a
# name with only [A-Za-z0-9._-] ('%3a' -> '-', others -> '_').
#
# Idempotent: a file already in DEST with the right SHA256 is kept; once every package is there, a
# package's older file and any other .deb not in the manifest are removed (so gpu-build.sh never
# unpacks two versions) and DEST/MANIFEST.txt records package, version, sha256 and file. Prints
# the total size. Exits 1, naming the packages, when one cannot be downloaded (then nothing is
# removed).
#
# Environment: FETCH_DEBS_ANY_RELEASE=1 skips the check that this machine is Debian 12 amd64 (the
# packages must be Debian 12's: gpu-build.sh links against their sonames).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "fetch-debs.sh: $*" >&2; exit 1; }

if [ $# -lt 1 ] || [ $# -gt 2 ]; then die "usage: fetch-debs.sh DEST [MANIFEST]"; fi
DEST=$1
MANIFEST=${2:-$HERE/debs.txt}
[ -f "$MANIFEST" ] || die "no manifest $MANIFEST"
command -v apt-get >/dev/null || die "apt-get not found: run this on Debian 12"
command -v sha256sum >/dev/null || die "sha256sum not found"

if [ "${FETCH_DEBS_ANY_RELEASE:-0}" != 1 ]; then
  codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release 2>/dev/null | tr -d '"')
  arch=$(dpkg --print-architecture 2>/dev/null)
  if [ "$codename" != bookworm ] || [ "$arch" != amd64 ]; then
    die "this is ${codename:-unknown}/${arch:-unknown}, not Debian 12 (bookworm) amd64; the build needs Debian 12's packages (FETCH_DEBS_ANY_RELEASE=1 to try anyway)"
  fi
fi

mkdir -p "$DEST" || die "cannot create $DEST"
DEST=$(cd "$DEST" && pwd)
TMP=$(mktemp -d "$DEST/.partial.XXXXXX") || die "cannot create a temporary folder in $DEST"
trap 'rm -rf "$TMP"' EXIT

UPDATED=0
apt_update() {  # once per run
  [ "$UPDATED" = 1 ] && return 1
  UPDATED=1
  echo "apt-get update ..."
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq || die "apt-get update failed"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo -n apt-get update -qq || die "sudo apt-get update failed"
  else
    die "apt cannot find a package or file; run 'sudo apt-get update' and try again"
  fi
}

# uri PKG: sets INFO to "URL FILE SIZE SHA256:HEX" of the candidate version (from
# apt-get download --print-uris); not in a subshell, so that apt_update runs once per run
uri() {
  INFO=$(apt-get download --print-uris "$1" 2>"$TMP/err" | tail -1)
  if [ -z "$INFO" ] && apt_update; then
    INFO=$(apt-get download --print-uris "$1" 2>"$TMP/err" | tail -1)
  fi
  [ -n "$INFO" ]
}

sanitize() { local n=${1//%3a/-}; echo "${n//[^A-Za-z0-9._-]/_}"; }

declare -A KEEP=()
FAILED=()
: >"$TMP/manifest"
n_have=0 n_new=0
while read -r pkg tag _; do
  case "$pkg" in ''|'#'*) continue ;; esac
  sub=.
  [ "${tag:-}" = fallback ] && sub=fallback
  mkdir -p "$DEST/$sub"
  if ! uri "$pkg"; then
    echo "  FAILED $pkg: $(tr '\n' ' ' <"$TMP/err")"
    FAILED+=("$pkg")
    continue
  fi
  read -r _ file size sum <<<"$INFO"
  sum=${sum#SHA256:}
  name=$(sanitize "$file")
  version=${file#"${pkg}"_}; version=${version%_*}; version=${version//%3a/:}
  rel=$name
  [ "$sub" = fallback ] && rel=fallback/$name
  target=$DEST/$rel
  KEEP["$target"]=1
  if [ -f "$target" ] && [ "$(sha256sum "$target" | cut -d' ' -f1)" = "$sum" ]; then
    n_have=$((n_have + 1))
  else
    rm -f "$TMP"/*.deb
    if ! (cd "$TMP" && apt-get download -q "$pkg" >"$TMP/log" 2>&1); then
      apt_update && (cd "$TMP" && apt-get download -q "$pkg" >"$TMP/log" 2>&1)
    fi
    got=$(find "$TMP" -maxdepth 1 -name '*.deb' | head -1)
    if [ -z "$got" ] || [ "$(sha256sum "$got" | cut -d' ' -f1)" != "$sum" ]; then
      echo "  FAILED $pkg ($file): $(grep -E '^(E|W|Err):' "$TMP/log" | tr '\n' ' ')"
      FAILED+=("$pkg")
      continue
    fi
    mv -f "$got" "$target"
    echo "  got $rel ($size bytes)"
    n_new=$((n_new + 1))
  fi
  echo "$pkg $version $sum $rel" >>"$TMP/manifest"
done <"$MANIFEST"

if ((${#FAILED[@]})); then  # nothing removed, MANIFEST.txt left as it was
  die "could not download ${#FAILED[@]} package(s): ${FAILED[*]}"
fi

# .deb files that the manifest no longer names (older versions, removed packages)
while IFS= read -r f; do
  [ -n "${KEEP[$f]:-}" ] && continue
  rm -f "$f" && echo "  removed $(basename "$f") (not in the manifest, or an older version)"
done < <(find "$DEST" "$DEST/fallback" -maxdepth 1 -name '*.deb' 2>/dev/null)
rmdir "$DEST/fallback" 2>/dev/null

{
  echo "# Debian packages fetched by fetch-debs.sh on $(date -u +%F) from $(basename "$MANIFEST")"
  echo "# package version sha256 file"
  cat "$TMP/manifest"
} >"$DEST/MANIFEST.txt"

total=$(find "$DEST" -name '*.deb' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
count=$(find "$DEST" -name '*.deb' | wc -l)
printf '%s: %d .deb files (%d already there, %d downloaded), %d bytes = %.1f MiB\n' \
  "$DEST" "$count" "$n_have" "$n_new" "$total" "$(awk -v t="$total" 'BEGIN {print t / 1048576}')"
if ((total > 48 * 1048576)); then
  echo "note: carried paths may hold 64 MiB in all; this folder alone is over 48 MiB"
fi
exit 0
