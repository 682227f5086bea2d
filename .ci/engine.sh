# Start a private Docker Engine for the tests and benchmarks; source this file.
# The daemon runs on a socket and data folder of its own (no system daemon is touched), without
# iptables, bridge or overlayfs, which containers and sandboxes often lack. Images come from
# `docker import` of the machine's busybox (tests/enginestack.py), so no registry is needed.
# Exports DOCKER_HOST and defines engine_stop. Needs root and the docker.io package.
ENGINE_DIR="${ENGINE_DIR:-/tmp/rotation-engine}"

engine_stop() {
    if [ -f "$ENGINE_DIR/docker.pid" ]; then
        local pid
        pid="$(cat "$ENGINE_DIR/docker.pid")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        rm -f "$ENGINE_DIR/docker.pid"
    fi
    umount "$ENGINE_DIR/exec/netns/default" 2>/dev/null || true
    # No `ip link del docker0`: this daemon runs with --bridge=none and never makes one, so a docker0
    # on this machine belongs to the machine's own Docker daemon, which the tests must not touch.
}

engine_start() {
    engine_stop
    mkdir -p "$ENGINE_DIR"
    setsid dockerd --host "unix://$ENGINE_DIR/docker.sock" --data-root "$ENGINE_DIR/data" \
        --exec-root "$ENGINE_DIR/exec" --pidfile "$ENGINE_DIR/docker.pid" \
        --iptables=false --ip-masq=false --bridge=none --storage-driver=vfs \
        >"$ENGINE_DIR/dockerd.log" 2>&1 < /dev/null &
    export DOCKER_HOST="unix://$ENGINE_DIR/docker.sock"
    for _ in $(seq 100); do
        docker version >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "dockerd did not start; its log:" >&2
    tail -20 "$ENGINE_DIR/dockerd.log" >&2
    return 1
}
