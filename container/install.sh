#!/bin/sh
# Install forgetmenot, as a wheel (not editable), into a fresh virtualenv.
#
#   container/install.sh SRC VENV FLAVOR [EXTRAS]
#
# SRC     the source tree (pyproject.toml, constraints.txt, monitor/)
# VENV    the virtualenv to create (must not exist)
# FLAVOR  slim:  no torch; probes served models through the openai backend
#         model: adds the in-process stack (extra `model`: torch, transformers, peft)
# EXTRAS  more extras, comma-separated (e.g. report)
#
# This is exactly what the Containerfile's builder stage runs, and what tests/test_container.py
# runs into a temporary directory. pip's own configuration applies (PIP_INDEX_URL,
# PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_CERT, pip.conf).
#
# torch: pinned through SRC/constraints.txt wherever pip installs it. If the interpreter already
# has a torch (a CUDA torch base image), the virtualenv sees the system site-packages and that
# torch is kept: the pin is dropped, nothing is downloaded for it.
set -eu

if [ $# -lt 3 ]; then
    echo "usage: $0 SRC VENV slim|model [EXTRAS]" >&2
    exit 2
fi
src=$1 venv=$2 flavor=$3 more=${4:-}
python=${PYTHON:-python3}

case $flavor in
    slim) extras="postgres,kubernetes" ;;
    model) extras="postgres,kubernetes,model" ;;
    *) echo "$0: FLAVOR must be slim or model, not '$flavor'" >&2; exit 2 ;;
esac
[ -z "$more" ] || extras="$extras,$more"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
constraints="$work/constraints.txt"
venv_opts=""
if [ "$flavor" = model ] && "$python" -c "import torch" 2>/dev/null; then
    echo "install.sh: keeping the interpreter's torch $("$python" -c 'import torch; print(torch.__version__)')"
    venv_opts="--system-site-packages"
    grep -v '^torch[=<>~! ]' "$src/constraints.txt" > "$constraints"
else
    cp "$src/constraints.txt" "$constraints"
fi

"$python" -m venv $venv_opts "$venv"
pip="$venv/bin/python -m pip"
$pip wheel --quiet --no-cache-dir --no-deps --wheel-dir "$work/wheel" "$src"
wheel=$(ls "$work"/wheel/forgetmenot-*.whl)
$pip install --quiet --no-cache-dir --constraint "$constraints" "${wheel}[${extras}]"
$pip check

# What the flavour promises.
"$venv/bin/forgetmenot" --help >/dev/null
if [ "$flavor" = slim ] && "$venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "install.sh: the slim flavour must not contain torch" >&2
    exit 1
fi
if [ "$flavor" = model ]; then
    "$venv/bin/python" -c "import torch, transformers, peft; print('install.sh: torch', torch.__version__, 'transformers', transformers.__version__)"
fi
echo "install.sh: forgetmenot ($flavor; extras $extras) installed in $venv"
