#!/usr/bin/env bash
# Builds the Docker images the tests use, locally and without a registry.
# Idempotent and fast when the images already exist (keyed by a content hash).
#
#   harness-test/busybox  a busybox-static rootfs via `docker import`:
#                         sh, httpd, nc, wget: serves HTTP and runs health commands.
set -euo pipefail
cd "$(dirname "$0")"

busybox_bin=$(command -v busybox || echo /bin/busybox)
if [ ! -x "$busybox_bin" ]; then
  echo "error: busybox (Debian package busybox-static) is needed to build test images" >&2
  exit 1
fi

hash_of() { cat "$@" | sha256sum | cut -c1-12; }

build_busybox() {
  local tag
  tag="$(hash_of "$busybox_bin" build.sh)"
  if docker image inspect "harness-test/busybox:$tag" >/dev/null 2>&1; then
    docker tag "harness-test/busybox:$tag" harness-test/busybox:latest
    return
  fi
  local root
  root=$(mktemp -d)
  trap 'rm -rf "$root"' RETURN
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,tmp,etc,www,state,proc,sys,dev,root}
  cp "$busybox_bin" "$root/bin/busybox"
  for applet in $("$busybox_bin" --list); do
    [ "$applet" = busybox ] || ln -sf /bin/busybox "$root/bin/$applet"
  done
  chmod 1777 "$root/tmp"
  echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
  echo 'nobody:x:65534:65534:nobody:/:/bin/false' >> "$root/etc/passwd"
  echo 'root:x:0:' > "$root/etc/group"
  echo 'nogroup:x:65534:' >> "$root/etc/group"
  echo 'ok' > "$root/www/health"
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin' \
    -c 'CMD ["/bin/sh"]' \
    - "harness-test/busybox:$tag" >/dev/null
  docker tag "harness-test/busybox:$tag" harness-test/busybox:latest
  echo "built harness-test/busybox:$tag" >&2
}

build_busybox
