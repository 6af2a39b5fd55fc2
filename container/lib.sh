# Shared by build.sh and test.sh (sourced). Picks the container engine and works around sandboxes.
#
# CONTAINER_ENGINE  podman | docker | buildah (build only); default: the first one installed
# IMAGE             the image name without tag (default localhost/forgetmenot)

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
IMAGE=${IMAGE:-localhost/forgetmenot}
DEFAULT_BASE=docker.io/library/python:3.11-slim-bookworm
LOCAL_BASE=localhost/debian-python:bookworm

if [ -z "${CONTAINER_ENGINE:-}" ]; then
    for candidate in podman docker buildah; do
        if command -v "$candidate" >/dev/null 2>&1; then CONTAINER_ENGINE=$candidate; break; fi
    done
fi
if [ -z "${CONTAINER_ENGINE:-}" ]; then
    echo "no container engine: install podman (apt-get install podman buildah) or docker" >&2
    exit 2
fi
# The image store: buildah and podman share one.
case $CONTAINER_ENGINE in buildah) images_cmd=podman ;; *) images_cmd=$CONTAINER_ENGINE ;; esac
command -v "$images_cmd" >/dev/null 2>&1 || images_cmd=buildah

log() { printf '%s %s\n' "[$(date +%H:%M:%S)]" "$*" >&2; }

image_exists() {
    case $images_cmd in
        podman) podman image exists "$1" ;;
        buildah) buildah inspect --type image "$1" >/dev/null 2>&1 ;;
        *) "$images_cmd" image inspect "$1" >/dev/null 2>&1 ;;
    esac
}

# A sandbox (no systemd, hybrid cgroups, no CAP_SYS_RESOURCE) where podman's defaults fail: then
# use container/containers-sandbox.conf and chroot isolation for RUN steps. Needs an image to try.
sandbox_check() {
    [ "$CONTAINER_ENGINE" != docker ] || return 0
    [ -z "${CONTAINERS_CONF:-}" ] || return 0
    command -v podman >/dev/null 2>&1 || return 0
    if ! err=$(podman run --rm --network none --entrypoint /bin/sh "$1" -c true 2>&1); then
        log "podman run fails with its defaults here ($(printf '%s' "$err" | tail -1)); using container/containers-sandbox.conf"
        CONTAINERS_CONF=$here/containers-sandbox.conf
        export CONTAINERS_CONF
        BUILD_ISOLATION=${BUILD_ISOLATION:-chroot}
    fi
}
