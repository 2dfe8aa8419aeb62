#!/usr/bin/env bash
# Build sipworker/opus/_rtopus.so: the Opus codec factory the SIP workers register with the pjsua2 wheel
# (README.md beside this file).  Needs gcc and libopus-dev; as root on Debian it installs what is missing.
# Takes about a second once the packages are there (measured: gcc 0.3 s; apt-get install libopus-dev ~5 s).
# Usage: sipworker/opus/build.sh [--no-apt]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/_rtopus.so"

if [ "${1:-}" != "--no-apt" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    need=()
    for pkg in gcc libc6-dev libopus-dev; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
fi

if ! printf '#include <opus/opus.h>\n' | "${CC:-gcc}" -E -x c - >/dev/null 2>&1; then
    echo "build.sh: opus/opus.h not found: install libopus-dev (Debian) or libopus headers" >&2
    exit 1
fi

# -Werror: the _Static_asserts on pjproject's struct layouts must stop the build, never warn.
"${CC:-gcc}" -shared -fPIC -O2 -Wall -Wextra -Werror -o "$out.tmp" "$here/rtopus.c" -lopus
mv "$out.tmp" "$out"
echo "built $out"
