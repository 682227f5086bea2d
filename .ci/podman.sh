# Start Podman's Docker-compatible API, the fallback engine the tests also run on;
# source this file. Exports PODMAN_HOST and defines podman_stop. Needs root, podman and catatonit.
# Its configuration lives in a folder of its own, so nothing under /etc is changed.
PODMAN_DIR="${PODMAN_DIR:-/tmp/rotation-podman}"

podman_stop() {
    for pidfile in "$PODMAN_DIR/health.pid" "$PODMAN_DIR/service.pid"; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
        rm -f "$pidfile"
    done
    return 0
}

podman_start() {
    podman_stop
    mkdir -p "$PODMAN_DIR"
    cat > "$PODMAN_DIR/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
# A lookup of a container being replaced falls through to the host's resolver, which the
# stack's internal network cannot reach: fail it in a second, not after 20 s of retries.
dns_options = ["timeout:1", "attempts:1"]

[network]
# aardvark-dns answers service names on internal networks too; the CNI backend would not.
network_backend = "netavark"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
exit_command_delay = 2
CONF
    cat > "$PODMAN_DIR/storage.conf" <<CONF
[storage]
driver = "vfs"
runroot = "$PODMAN_DIR/run"
graphroot = "$PODMAN_DIR/storage"
CONF
    export CONTAINERS_CONF="$PODMAN_DIR/containers.conf" CONTAINERS_STORAGE_CONF="$PODMAN_DIR/storage.conf"
    setsid podman system service --time=0 "unix://$PODMAN_DIR/podman.sock" \
        >"$PODMAN_DIR/service.log" 2>&1 < /dev/null &
    echo $! > "$PODMAN_DIR/service.pid"
    # Podman runs healthchecks from systemd timers; without systemd, run them once a second.
    # Like a timer's unit, a container's check never overlaps its previous one (flock -n): checks
    # piling up on a busy machine would finish out of order and report stale verdicts.
    mkdir -p "$PODMAN_DIR/health"
    setsid sh -c 'while true; do
        for id in $(podman ps --format "{{.ID}} {{.Status}}" | grep -E "\((starting|healthy|unhealthy)\)$" | cut -d" " -f1); do
            flock -n "$0/health/$id" podman healthcheck run "$id" >/dev/null 2>&1 &
        done
        sleep 1
    done' "$PODMAN_DIR" >/dev/null 2>&1 < /dev/null &
    echo $! > "$PODMAN_DIR/health.pid"
    export PODMAN_HOST="unix://$PODMAN_DIR/podman.sock"
    for _ in $(seq 100); do
        DOCKER_HOST="$PODMAN_HOST" docker version >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "podman did not start; its log:" >&2
    tail -20 "$PODMAN_DIR/service.log" >&2
    return 1
}
