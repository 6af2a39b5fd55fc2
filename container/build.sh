#!/bin/sh
# Build the image: container/build.sh [slim|model|all]   (default slim; `make image`)
#
#   CONTAINER_ENGINE  podman | buildah | docker (default: the first installed)
#   IMAGE             name without tag (default localhost/forgetmenot); tags are the flavour and
#                     <version>-<flavour>, the Helm chart's default tag
#   BASE              base image for both stages (default python:3.11-slim-bookworm). `local`,
#                     or the default when no registry answers: a Debian bookworm python3 image made
#                     here with mmdebstrap from Debian's mirror (localhost/debian-python:bookworm)
#   EXTRAS            more extras (comma-separated) on top of the flavour's
#   WHEELS            a folder of wheels for pip (--find-links), mounted into the build (podman,
#                     buildah); default: pip's own find-links on this machine, if it is a folder
#   PIP_CERT_FILE     CA bundle pip must trust (a build secret, never in a layer); default: pip's
#                     own `cert` setting, else /etc/ssl/certs/ca-certificates.crt
#   BUILD_ISOLATION   podman/buildah --isolation (chroot where OCI runtimes cannot run here)
set -eu
. "$(dirname "$0")/lib.sh"
cd "$root"

flavors=${1:-slim}
[ "$flavors" = all ] && flavors="slim model"

make_local_base() {
    if image_exists "$LOCAL_BASE"; then return 0; fi
    command -v mmdebstrap >/dev/null 2>&1 || {
        echo "BASE=local needs mmdebstrap (apt-get install mmdebstrap)" >&2; exit 2; }
    tar=$(mktemp -d)/rootfs.tar
    log "making $LOCAL_BASE with mmdebstrap (Debian bookworm, python3, python3-venv, ca-certificates)"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$tar" \
        "deb http://deb.debian.org/debian bookworm main" \
        "deb http://deb.debian.org/debian bookworm-updates main" \
        "deb http://deb.debian.org/debian-security bookworm-security main"
    "$images_cmd" import "$tar" "$LOCAL_BASE" >/dev/null
    rm -rf "$(dirname "$tar")"
}

base=${BASE:-}
if [ "$base" = local ]; then
    make_local_base; base=$LOCAL_BASE
elif [ -z "$base" ]; then
    base=$DEFAULT_BASE
    if ! image_exists "$base" && ! "$images_cmd" pull -q "$base" >/dev/null 2>&1; then
        log "cannot pull $base: using a local Debian bookworm base instead"
        make_local_base; base=$LOCAL_BASE
    fi
fi
sandbox_check "$base"

cert=${PIP_CERT_FILE:-${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}}
[ -n "$cert" ] || cert=/etc/ssl/certs/ca-certificates.crt
wheels=${WHEELS:-${PIP_FIND_LINKS:-$(python3 -m pip config get global.find-links 2>/dev/null || true)}}

version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
set -- --build-arg "BASE=$base" --build-arg "EXTRAS=${EXTRAS:-}" \
    --build-arg "VERSION=$version" \
    --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
[ ! -f "$cert" ] || set -- "$@" --secret "id=pip_cert,src=$cert"
case $CONTAINER_ENGINE in
    docker) build="docker build" ;;
    buildah) build="buildah bud --format docker" ;;
    podman) build="podman build --format docker" ;;
esac
if [ "$CONTAINER_ENGINE" != docker ]; then
    [ -z "${BUILD_ISOLATION:-}" ] || set -- "$@" --isolation "$BUILD_ISOLATION"
    if [ -n "$wheels" ] && [ -d "$wheels" ]; then
        set -- "$@" -v "$wheels:/wheels:ro" --build-arg PIP_FIND_LINKS=/wheels
    fi
fi
[ -z "${PIP_INDEX_URL:-}" ] || set -- "$@" --build-arg "PIP_INDEX_URL=$PIP_INDEX_URL"

for flavor in $flavors; do
    log "building $IMAGE:$flavor ($CONTAINER_ENGINE, BASE=$base)"
    start=$(date +%s)
    # also tagged <version>-<flavor>: the Helm chart's default tag (appVersion-flavor)
    $build -f Containerfile --build-arg "FLAVOR=$flavor" "$@" -t "$IMAGE:$flavor" \
        -t "$IMAGE:$version-$flavor" .
    took=$(( $(date +%s) - start ))
    size=$("$images_cmd" image inspect "$IMAGE:$flavor" --format '{{.Size}}' 2>/dev/null || echo '?')
    log "built $IMAGE:$flavor in ${took}s, $size bytes"
done
