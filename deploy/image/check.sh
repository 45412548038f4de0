#!/bin/sh
# Builds the image from the Dockerfile where no image registry is reachable,
# then runs it as the Kubernetes Deployment does and checks that it
# - runs as user 65532 on a read-only root filesystem, with no capabilities;
# - answers /readyz on the admin port with 200;
# - serves its own config, /opt/arrpc/arrpc.toml, with every handler from the
#   compile cache baked in: `arrpc-host send`, run on this machine against
#   the published port, round-trips through echo and sum;
# - on SIGTERM, still replies to a message in flight, then exits 0.
# Exits non-zero with "check.sh: FAILED: ..." on the first check that fails.
#   usage: sh deploy/image/check.sh
#
# The two base images are stand-ins built from Debian's packages with
# mmdebstrap and passed as the Dockerfile's build arguments: for
# rust:1.95-bookworm, bookworm with gcc and rustup's Rust of the tag's
# version; for distroless cc-debian12:nonroot, bookworm's glibc, libgcc,
# libssl, libstdc++, CA certificates and user 65532, without a shell.
#
# Needs root on Debian or Ubuntu; installs podman, runc, mmdebstrap and curl
# with apt-get when missing. The network must reach Debian's mirror,
# static.rust-lang.org and crates.io. The client is the image's own binary,
# so the machine needs glibc 2.36 or later (Debian 12, Ubuntu 24.04).
# Took about 48 minutes on 2 cores the first time (the stand-ins 3 to 4, the build
# 44.5: compiling arrpc-host, one core, beside other work), 10 s the next:
# podman keeps the stand-ins and the build's layers until a change to what
# the image is built from, in about 8 GB (`podman rmi` the localhost/arrpc-check/*
# images to rebuild the stand-ins).
set -eu
cd "$(dirname "$0")/../.."

fail() {
    echo "check.sh: FAILED: $*" >&2
    exit 1
}
say() { echo "check.sh: $*"; }

missing=
for tool in podman:podman runc:runc mmdebstrap:mmdebstrap curl:curl; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing="$missing ${tool#*:}"
done
if [ -n "$missing" ]; then
    say "installing$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# crun, podman's default runtime, fails where cgroups are in hybrid mode;
# runc does not. Podman's default ulimits raise nofile, which a nested or
# unprivileged host may refuse, so the limits are set, and low.
runtime="--runtime runc"
limits="--ulimit nofile=1024:1024 --ulimit nproc=1024:1024"

# The stand-ins are named after the tags they replace and built once.
rust_version=$(sed -n 's/^ARG BUILD_IMAGE=rust:\([0-9.]*\)-bookworm$/\1/p' Dockerfile)
[ -n "$rust_version" ] || fail "no 'ARG BUILD_IMAGE=rust:<version>-bookworm' in the Dockerfile"
build_image=localhost/arrpc-check/rust:$rust_version-bookworm
runtime_image=localhost/arrpc-check/distroless-cc:nonroot
image=localhost/arrpc-host:check
# Numbers enough for sum to run a while (0.1 s here), few enough for its
# 64 MiB, in messages enough to outlast `podman kill` (up to 1.5 GB at once).
drain_numbers=1000000
drain_messages=32

work=$(mktemp -d)
container=arrpc-check-$$
cleanup() {
    podman rm -f "$container" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

if ! podman image exists "$build_image"; then
    say "building $build_image"
    cat >"$work/rustup.sh" <<EOF
set -eu
export RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo
curl --proto '=https' --tlsv1.2 -sSf -o /tmp/rustup-init \\
    https://static.rust-lang.org/rustup/dist/\$(uname -m)-unknown-linux-gnu/rustup-init
chmod +x /tmp/rustup-init
/tmp/rustup-init -y -q --no-modify-path --profile minimal --default-toolchain $rust_version >/dev/null
rm /tmp/rustup-init
chmod -R a+w "\$RUSTUP_HOME" "\$CARGO_HOME"
EOF
    # The build stage trusts what this machine trusts, so it fetches
    # crates behind a TLS-inspecting proxy as the machine does.
    mmdebstrap --quiet --variant=minbase --include=ca-certificates,curl,gcc,libc6-dev \
        --customize-hook='cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/"' \
        --customize-hook="cp '$work/rustup.sh' \"\$1/tmp/\"" \
        --customize-hook='chroot "$1" sh /tmp/rustup.sh' \
        --customize-hook='rm "$1/tmp/rustup.sh"' \
        bookworm "$work/build.tar"
    podman import --quiet \
        --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        "$work/build.tar" "$build_image" >/dev/null
    rm "$work/build.tar"
fi

if ! podman image exists "$runtime_image"; then
    say "building $runtime_image"
    # Extracted, not installed: no maintainer scripts run, so no shell is
    # needed and none is added. The hook does what distroless sets up.
    cat >"$work/distroless.sh" <<'EOF'
set -eu
root=$1
printf '%s\n' root:x:0:0:root:/root:/sbin/nologin \
    nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin \
    nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin >"$root/etc/passwd"
printf '%s\n' root:x:0: nobody:x:65534: nonroot:x:65532: >"$root/etc/group"
mkdir -p "$root/root" "$root/home/nonroot" "$root/tmp" "$root/etc/ssl/certs"
chmod 700 "$root/root"
chown 65532:65532 "$root/home/nonroot"
chmod 1777 "$root/tmp"
cat "$root"/usr/share/ca-certificates/mozilla/*.crt >"$root/etc/ssl/certs/ca-certificates.crt"
EOF
    mmdebstrap --quiet --variant=extract \
        --include=base-files,netbase,tzdata,ca-certificates,libc6,libgcc-s1,libssl3,libstdc++6 \
        --extract-hook="sh '$work/distroless.sh' \"\$1\"" \
        bookworm "$work/runtime.tar"
    podman import --quiet \
        --change 'USER 65532:65532' \
        --change 'WORKDIR /home/nonroot' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        "$work/runtime.tar" "$runtime_image" >/dev/null
    rm "$work/runtime.tar"
fi

say "building $image from the Dockerfile"
# shellcheck disable=SC2086 # $runtime and $limits are lists of flags
podman build $runtime $limits \
    --build-arg BUILD_IMAGE="$build_image" \
    --build-arg RUNTIME_IMAGE="$runtime_image" \
    --tag "$image" . || fail "podman build"
[ "$(podman image inspect --format '{{.Config.User}}' "$image")" = 65532:65532 ] ||
    fail "the image's user is not 65532:65532"

# The client: the image's binary, run here, outside the container.
podman create --name "$container" "$image" >/dev/null
podman cp "$container:/opt/arrpc/bin/arrpc-host" "$work/arrpc-host"
podman cp "$container:/opt/arrpc/arrpc.toml" "$work/arrpc.toml"
podman rm "$container" >/dev/null
"$work/arrpc-host" --help >/dev/null 2>&1 ||
    fail "the image's arrpc-host does not run on this machine (glibc older than the image's?)"
client=$work/arrpc-host

say "starting $image"
# As the Deployment runs it: read-only root without even a /tmp, no
# capabilities, no privilege escalation; the image's own user and config.
# shellcheck disable=SC2086
podman run $runtime $limits --detach --name "$container" \
    --read-only --read-only-tmpfs=false \
    --cap-drop ALL --security-opt no-new-privileges \
    --publish 127.0.0.1::8080 --publish 127.0.0.1::9100 \
    "$image" >/dev/null
message=$(podman port "$container" 8080/tcp)
admin=$(podman port "$container" 9100/tcp)

logs() {
    echo "--- container log" >&2
    podman logs "$container" >&2 || true
}

# /readyz: 503 until the handlers are loaded, then 200.
ready=
for _ in $(seq 60); do
    [ "$(podman inspect --format '{{.State.Running}}' "$container")" = true ] || {
        logs
        fail "the container exited before it was ready"
    }
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://$admin/readyz" || true)
    if [ "$code" = 200 ]; then
        ready=1
        break
    fi
    sleep 1
done
[ -n "$ready" ] || {
    logs
    fail "/readyz on the admin port answered '$code', not 200, for 60 s"
}
say "/readyz answers 200"

pid=$(podman inspect --format '{{.State.Pid}}' "$container")
ids=$(awk '/^Uid:|^Gid:/ { printf "%s %s %s %s ", $2, $3, $4, $5 }' "/proc/$pid/status")
[ "$ids" = "65532 65532 65532 65532 65532 65532 65532 65532 " ] ||
    fail "the host runs as uid/gid '$ids', not 65532"
caps=$(awk '/^CapEff:/ { print $2 }' "/proc/$pid/status")
[ "$caps" = 0000000000000000 ] || fail "the host has capabilities $caps"
root_options=$(awk '$5 == "/" { print $6 }' "/proc/$pid/mountinfo")
case $root_options in
ro,* | ro) ;;
*) fail "the root filesystem is mounted '$root_options', not read-only" ;;
esac
say "runs as 65532:65532 with no capabilities on a read-only root"

# Its own config: every handler in /opt/arrpc/arrpc.toml, compiled from
# the cache baked in (nothing could be compiled into a read-only cache).
handlers=$(grep -c '^\[\[handler\]\]' "$work/arrpc.toml")
cached=$(podman logs "$container" 2>&1 | grep -c 'from_cache=true' || true)
[ "$cached" = "$handlers" ] || {
    logs
    fail "$cached of the $handlers handlers in /opt/arrpc/arrpc.toml came from the image's compile cache"
}
say "loaded the $handlers handlers of /opt/arrpc/arrpc.toml from the compile cache"

reply=$("$client" send --addr "$message" '{"image":"check"}') ||
    fail "send to the published port $message"
[ "$reply" = '{"image":"check"}' ] || fail "echo answered '$reply'"
reply=$("$client" send --addr "$message" --handler sum '[1,2,3.5]') ||
    fail "send --handler sum to the published port $message"
[ "$reply" = '{"count":3,"sum":6.5}' ] || fail "sum answered '$reply'"
say "send from outside round-trips through echo and sum"

# SIGTERM with messages in flight: sums over long arrays, several sent at
# once so some are still running when the host takes the signal, whatever
# `podman kill` costs. The scrape that shows the host no longer accepting
# tells how many had finished and how many were running: each of those
# must get its reply. Messages not yet read by then may be refused.
yes 1 | head -n "$drain_numbers" | { printf '['; paste -s -d , -; printf ']'; } >"$work/numbers.json"
metric() { awk -v name="$1" '$1 == name { print $2 }' "$work/metrics"; }
scrape() { curl -s -o "$work/metrics" "http://$admin/metrics" || : >"$work/metrics"; }
ok='arrpc_messages_total{handler="sum",outcome="ok"}'
scrape
before=$(metric "$ok")
senders=
for i in $(seq "$drain_messages"); do
    "$client" send --addr "$message" --handler sum --retries 0 --timeout 60s \
        --file "$work/numbers.json" >"$work/drain.$i" 2>&1 &
    senders="$senders $!"
done
for _ in $(seq 1000); do
    scrape
    [ "$(metric arrpc_messages_in_flight)" -lt 2 ] || break
    sleep 0.01
done
[ "$(metric arrpc_messages_in_flight)" -ge 2 ] || fail "the sums were never in flight together"
podman kill --signal TERM "$container" >/dev/null
for _ in $(seq 1000); do
    scrape
    [ "$(metric arrpc_listener_accepting)" != 0 ] || break
done
[ "$(metric arrpc_listener_accepting)" = 0 ] ||
    fail "/metrics never showed the host stop accepting after SIGTERM"
running=$(metric arrpc_messages_in_flight)
read=$(($(metric "$ok") - before + running))
[ "$running" -gt 0 ] ||
    fail "inconclusive: every sum read had finished when the host took SIGTERM; raise drain_messages"
for sender in $senders; do
    wait "$sender" || :
done
replies=$(cat "$work"/drain.* | grep -c -x "{\"count\":$drain_numbers,\"sum\":$drain_numbers}" || :)
[ "$replies" = "$read" ] || {
    cat "$work"/drain.* >&2
    fail "$read messages were read before SIGTERM ($running still running), $replies answered"
}
status=$(podman wait "$container")
[ "$status" = 0 ] || {
    logs
    fail "the container exited $status after SIGTERM, not 0"
}
say "on SIGTERM, $running messages were still running; they and the $((read - running)) finished got their replies; the host exited 0"

say "passed"
