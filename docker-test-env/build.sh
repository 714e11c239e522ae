#!/usr/bin/env bash
# Builds the Docker images the tests use, locally and without a registry.
# Idempotent and fast when the images already exist (keyed by a content hash).
#
#   harness-test/busybox  a busybox-static rootfs via `docker import`:
#                         sh, httpd, nc, wget: serves HTTP and runs health commands.
#   harness-test/web      busybox serving /www over HTTP on port 80 by default,
#                         with an engine HEALTHCHECK (wget of /health).
#   harness-test/sshd     busybox plus the host's OpenSSH server (sshd and its
#                         libraries, copied): `sshd -D -e` on port 22, root login
#                         by key; mount a public key at /root/.ssh/authorized_keys.
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

build_web() {
  local tag
  tag="$(docker image inspect -f '{{.Id}}' harness-test/busybox:latest | cut -c8-19)-$(hash_of build.sh)"
  if docker image inspect "harness-test/web:$tag" >/dev/null 2>&1; then
    docker tag "harness-test/web:$tag" harness-test/web:latest
    return
  fi
  # The classic builder takes a Dockerfile on stdin without a context; nothing is pulled.
  local log
  log=$(mktemp)
  trap 'rm -f "$log"' RETURN
  if DOCKER_BUILDKIT=0 docker build -q -t "harness-test/web:$tag" - >/dev/null 2>"$log" <<'DOCKERFILE'
FROM harness-test/busybox:latest
EXPOSE 80
HEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD wget -q -O /dev/null http://127.0.0.1:80/health || exit 1
CMD ["httpd", "-f", "-p", "80", "-h", "/www"]
DOCKERFILE
  then :; else cat "$log" >&2; return 1; fi
  docker tag "harness-test/web:$tag" harness-test/web:latest
  echo "built harness-test/web:$tag" >&2
}

build_sshd() {
  local sshd_bin=/usr/sbin/sshd
  if [ ! -x "$sshd_bin" ]; then
    echo "note: $sshd_bin missing (Debian package openssh-server): harness-test/sshd not built" >&2
    return
  fi
  local libs
  libs=$( (ldd "$sshd_bin"; ldd /usr/lib/openssh/sftp-server) | awk '/=> \//{print $3} /^\s*\/lib/{print $1}' | sort -u)
  local nss
  nss=$(ls /lib/*-linux-gnu/libnss_files.so.2 2>/dev/null || true)
  local tag
  # shellcheck disable=SC2086
  tag="$(hash_of "$busybox_bin" "$sshd_bin" /usr/lib/openssh/sftp-server $libs $nss build.sh)"
  if docker image inspect "harness-test/sshd:$tag" >/dev/null 2>&1; then
    docker tag "harness-test/sshd:$tag" harness-test/sshd:latest
    return
  fi
  local root
  root=$(mktemp -d)
  trap 'rm -rf "$root"' RETURN
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/lib/openssh,tmp,etc/ssh,run/sshd,var/empty,proc,sys,dev,root/.ssh}
  cp "$busybox_bin" "$root/bin/busybox"
  for applet in $("$busybox_bin" --list); do
    [ "$applet" = busybox ] || ln -sf /bin/busybox "$root/bin/$applet"
  done
  cp "$sshd_bin" "$root/usr/sbin/sshd"
  cp /usr/lib/openssh/sftp-server "$root/usr/lib/openssh/sftp-server"
  for lib in $libs $nss; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  # /lib64 for the loader path some binaries carry.
  if [ -e /lib64/ld-linux-x86-64.so.2 ] && [ ! -e "$root/lib64/ld-linux-x86-64.so.2" ]; then
    mkdir -p "$root/lib64"
    cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
  fi
  chmod 1777 "$root/tmp"
  chmod 700 "$root/root/.ssh"
  cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
sshd:x:74:65534:sshd privsep:/run/sshd:/bin/false
nobody:x:65534:65534:nobody:/:/bin/false
PASSWD
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
  # No password login ('*'); a '!' would lock the account for keys too.
  printf 'root:*:19000:0:99999:7:::\nsshd:*:19000::::::\n' > "$root/etc/shadow"
  chmod 600 "$root/etc/shadow"
  echo 'passwd: files' > "$root/etc/nsswitch.conf"
  echo 'group: files' >> "$root/etc/nsswitch.conf"
  echo 'shadow: files' >> "$root/etc/nsswitch.conf"
  ssh-keygen -q -N '' -t ed25519 -f "$root/etc/ssh/ssh_host_ed25519_key"
  cat > "$root/etc/ssh/sshd_config" <<'SSHD'
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
StrictModes no
AllowTcpForwarding yes
Subsystem sftp /usr/lib/openssh/sftp-server
SSHD
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin' \
    -c 'EXPOSE 22' \
    -c 'CMD ["/usr/sbin/sshd", "-D", "-e"]' \
    - "harness-test/sshd:$tag" >/dev/null
  docker tag "harness-test/sshd:$tag" harness-test/sshd:latest
  echo "built harness-test/sshd:$tag" >&2
}

build_busybox
build_web
build_sshd
