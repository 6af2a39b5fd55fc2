#!/bin/sh
# Test built images for real (`make image-test`): container/test.sh [slim|model|all]
# (default: the flavours already built). Runs tests/test_container.py with FORGETMENOT_IMAGE set:
# validate, probe against a scripted OpenAI-compatible server and serve's /healthz, all in a
# read-only container as uid 10001 with no capabilities.
set -eu
. "$(dirname "$0")/lib.sh"
cd "$root"

flavors=${1:-}
[ "$flavors" = all ] && flavors="slim model"
if [ -z "$flavors" ]; then
    for flavor in slim model; do
        if image_exists "$IMAGE:$flavor"; then flavors="$flavors $flavor"; fi
    done
fi
[ -n "$flavors" ] || { echo "no image $IMAGE:slim or :model; run container/build.sh first" >&2; exit 2; }

python=${PYTHON:-$root/.venv/bin/python}
case " $flavors " in
    *" model "*)
        # SmolLM2 as a transformers folder for the model flavour's in-process probe (made once,
        # cached under FORGETMENOT_HOME), readable by the image's uid 10001.
        if [ -z "${FORGETMENOT_TEST_MODEL_DIR:-}" ]; then
            FORGETMENOT_TEST_MODEL_DIR=$(COLUMNS=1000 "$root/.venv/bin/forgetmenot" model prepare smollm2 | sed -n 's/^ready //p')
        fi
        chmod -R a+rX "$FORGETMENOT_TEST_MODEL_DIR"
        export FORGETMENOT_TEST_MODEL_DIR ;;
esac
status=0
for flavor in $flavors; do
    sandbox_check "$IMAGE:$flavor"
    log "testing $IMAGE:$flavor"
    FORGETMENOT_IMAGE=$IMAGE:$flavor FORGETMENOT_CONTAINER_ENGINE=$images_cmd \
        "$python" -m pytest -q -p no:cacheprovider tests/test_container.py -k test_image_ -rA || status=1
done
exit $status
