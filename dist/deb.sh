#!/usr/bin/env bash
# Builds the Debian package target/debian/ovl_VERSION-1_ARCH.deb (README: "Debian package")
# with cargo-deb (`cargo install cargo-deb --locked`): a release build (skipped with
# --no-build), then what the binary generates and the service files of dist/, staged under
# target/deb/root/ as they are installed ([package.metadata.deb] assets in Cargo.toml):
#
#   usr/share/man/man1/ovl*.1, man5/ovl.toml.5, ovl-profile.5   `ovl man --dir`
#   usr/share/bash-completion/completions/ovl                   `ovl completions bash`
#   usr/share/zsh/vendor-completions/_ovl                       `ovl completions zsh`
#   usr/share/fish/vendor_completions.d/ovl.fish                `ovl completions fish`
#   usr/share/doc/ovl/example-site/                             `ovl init`
#   lib/systemd/system/                                         dist/systemd/*.service,
#                                                               *.socket, *.timer, when present
#   usr/lib/sysusers.d/ovl.conf, usr/lib/tmpfiles.d/ovl.conf    dist/systemd/ovl.sysusers,
#                                                               dist/systemd/ovl.tmpfiles
#
# dist/openrc/ (Alpine servers) is not part of a Debian package.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" != "--no-build" ]; then
  cargo build --release --locked
fi
bin=target/release/ovl
root=target/deb/root
rm -rf target/deb
mkdir -p "$root/usr/share/man/man1" "$root/usr/share/man/man5"

"$bin" man --dir "$root/usr/share/man/man1" >/dev/null
mv "$root"/usr/share/man/man1/*.5 "$root/usr/share/man/man5/"

install -d "$root/usr/share/bash-completion/completions" \
  "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d"
"$bin" completions bash > "$root/usr/share/bash-completion/completions/ovl"
"$bin" completions zsh > "$root/usr/share/zsh/vendor-completions/_ovl"
"$bin" completions fish > "$root/usr/share/fish/vendor_completions.d/ovl.fish"

"$bin" init "$root/usr/share/doc/ovl/example-site" >/dev/null

shopt -s nullglob
units=(dist/systemd/*.service dist/systemd/*.socket dist/systemd/*.timer)
if [ ${#units[@]} -gt 0 ]; then
  install -d "$root/lib/systemd/system"
  install -m 0644 "${units[@]}" "$root/lib/systemd/system/"
fi
if [ -f dist/systemd/ovl.sysusers ]; then
  install -D -m 0644 dist/systemd/ovl.sysusers "$root/usr/lib/sysusers.d/ovl.conf"
fi
if [ -f dist/systemd/ovl.tmpfiles ]; then
  install -D -m 0644 dist/systemd/ovl.tmpfiles "$root/usr/lib/tmpfiles.d/ovl.conf"
fi

cargo deb --no-build --locked
