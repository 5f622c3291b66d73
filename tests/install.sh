#!/bin/sh
# make install into a scratch DESTDIR, then use what it installed as a user would: build examples/sample_grid.c
# with pkg-config against the shared library, run it on models/fmnist-s, check the SONAME and the man page.
# usage: sh tests/install.sh [BUILD]   (BUILD: the build directory, default build)
set -e
BUILD=${1:-build}
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
fail() { echo "install: FAILED: $*" >&2; exit 1; }

make -j2 BUILD="$BUILD" install DESTDIR="$scratch" PREFIX=/usr > "$scratch/make.log" 2>&1 ||
    { tail -20 "$scratch/make.log"; fail "make install"; }
root=$scratch/usr
version=$(sed -n 's/^#define DIFFUSE_VERSION "\(.*\)"/\1/p' include/diffuse.h)
major=${version%%.*}
for f in bin/diffuse lib/libdiffuse.a lib/libdiffuse.so.$version lib/libdiffuse.so.$major lib/libdiffuse.so \
         include/diffuse.h lib/pkgconfig/diffuse.pc share/man/man1/diffuse.1; do
    [ -e "$root/$f" ] || fail "$f not installed"
done
[ "$(readlink "$root/lib/libdiffuse.so")" = "libdiffuse.so.$major" ] || fail "libdiffuse.so does not point to .so.$major"
[ "$(readlink "$root/lib/libdiffuse.so.$major")" = "libdiffuse.so.$version" ] || fail "libdiffuse.so.$major does not point to .so.$version"
readelf -d "$root/lib/libdiffuse.so.$version" | grep -q "SONAME.*\[libdiffuse\.so\.$major\]" || fail "SONAME is not libdiffuse.so.$major"
"$root/bin/diffuse" --version | grep -qx "diffuse $version" || fail "the installed command's --version"

# the .pc file as written says /usr; --define-prefix points it at the scratch tree it was found in
export PKG_CONFIG_PATH="$root/lib/pkgconfig"
[ "$(pkg-config --modversion diffuse)" = "$version" ] || fail "pkg-config --modversion"
pkg-config --variable=prefix diffuse | grep -qx /usr || fail "diffuse.pc's prefix is not /usr"
pkg-config --static --libs diffuse | grep -q -- "-lopenblas" || fail "Libs.private lacks the library's dependencies"
flags=$(pkg-config --define-prefix --cflags --libs diffuse)
case "$flags" in *"-I$root/include"*"-L$root/lib"*) ;; *) fail "pkg-config --define-prefix gave: $flags" ;; esac
# shellcheck disable=SC2086
${CC:-cc} -std=c11 examples/sample_grid.c $flags -o "$scratch/sample_grid" || fail "building examples/sample_grid.c"
readelf -d "$scratch/sample_grid" | grep -q "NEEDED.*\[libdiffuse\.so\.$major\]" || fail "the example is not linked to libdiffuse.so.$major"
LD_LIBRARY_PATH="$root/lib" "$scratch/sample_grid" models/fmnist-s "$scratch/grid.png" || fail "running the example"
[ "$(head -c 8 "$scratch/grid.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "the example wrote no PNG"

# the man page: one page from the option tables, rendered without warnings
man="$root/share/man/man1/diffuse.1"
grep -q '^\.TH DIFFUSE 1 ' "$man" || fail "no .TH line in diffuse.1"
grep -q '^\.SH "DIFFUSE SAMPLE"' "$man" || fail "no section for diffuse sample"
grep -q '^\\fB\\-\\-sampler\\fR' "$man" || fail "no --sampler in diffuse.1"
rendered=$(groff -man -Tutf8 -P-cbu -ww "$man" 2>"$scratch/groff.err") || fail "groff failed"
[ -s "$scratch/groff.err" ] && { cat "$scratch/groff.err"; fail "groff warned"; }
echo "$rendered" | grep -q -- "--guidance" || fail "the rendered page lacks --guidance"

make BUILD="$BUILD" uninstall DESTDIR="$scratch" PREFIX=/usr > "$scratch/make.log" 2>&1 || fail "make uninstall"
left=$(find "$root" -type f -o -type l)
[ -z "$left" ] || fail "make uninstall left: $left"
echo "install: make install, pkg-config, the shared library, the example and the man page all fine"
