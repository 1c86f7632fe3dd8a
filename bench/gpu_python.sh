# Sourced by bench/gpu.sh and bench/gpu_train.sh: `pick_python` prints the Python to use,
# $PYTHON if set, else .venv/bin/python if it imports onnxruntime, else a fresh .venv-gpu
# with the train, serve and dev extras installed by pip (3 minutes at most). A machine
# without a package index keeps whatever it has. Needs `say` and $log from the caller.
pick_python() {
    if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
    if .venv/bin/python -c "import onnxruntime" 2>/dev/null; then echo .venv/bin/python; return; fi
    if [[ ! -x .venv-gpu/bin/python ]]; then
        python3 -m venv --system-site-packages .venv-gpu >>"$log" 2>&1 || { echo python3; return; }
    fi
    say "installing the train, serve and dev extras into .venv-gpu (at most 180 s)" >&2
    if ! timeout 180 .venv-gpu/bin/pip install --quiet -e '.[train,serve,dev]' >>"$log" 2>&1; then
        say "pip install failed or timed out (no package index?); using what is installed" >&2
    fi
    echo .venv-gpu/bin/python
}
