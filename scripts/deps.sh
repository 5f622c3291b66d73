#!/bin/sh
# Install the Debian packages diffuse needs, if any is missing (run as root on Debian 12).
# Called by the README commands, so a fresh machine needs nothing run before them.
set -e
PKGS="build-essential libopenblas-dev libdnnl-dev libcjson-dev libpng-dev libjpeg-dev libgif-dev zlib1g-dev
      libcairo2-dev nettle-dev libutf8proc-dev fonts-dejavu-core python3-scipy python3-torchvision python3-regex
      python3 python3-torch python3-numpy dataset-fashion-mnist clang libclang-rt-14-dev valgrind pkg-config
      groff-base"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "diffuse: installing Debian packages:$missing"
if [ "$(id -u)" != 0 ]; then
    echo "diffuse: these packages are missing and installing them needs root:$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
