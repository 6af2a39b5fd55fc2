#!/bin/sh
# The image's entrypoint: `forgetmenot`, with the container's defaults.
#
#   (no arguments)            serve --config /etc/forgetmenot/forgetmenot.yaml --host 0.0.0.0
#   --port 9000 ...           options only: they are serve's, with the default --config and --host
#   validate -c FILE          any forgetmenot command, as `forgetmenot validate -c FILE`
#   forgetmenot validate ...  the same
#   sh|python|/path ...       a shell, python or a path runs as given (debugging)
set -eu

: "${FORGETMENOT_HOME:=/var/lib/forgetmenot}"
export FORGETMENOT_HOME

# The state volume must be writable by whoever the container runs as (uid 10001 unless --user).
if [ ! -w "$FORGETMENOT_HOME" ]; then
    echo "forgetmenot-entrypoint: warning: $FORGETMENOT_HOME is not writable by uid $(id -u):" \
         "mount a volume there (model cache, reports, the spool and SQLite live in it)" >&2
fi

case "${1:-}" in
    "") exec forgetmenot serve --config /etc/forgetmenot/forgetmenot.yaml --host 0.0.0.0 ;;
    -h|--help|--install-completion|--show-completion) exec forgetmenot "$@" ;;
    -*) exec forgetmenot serve --config /etc/forgetmenot/forgetmenot.yaml --host 0.0.0.0 "$@" ;;
    forgetmenot) shift; exec forgetmenot "$@" ;;
    sh|bash|python|python3|*/*) exec "$@" ;;
    *) exec forgetmenot "$@" ;;
esac
