# Sourced by the scripts: the per-machine cache every clone shares (servers, Garage, and the
# compiled dependencies of planrun's builds). PLANRUN_CACHE moves it; CARGO_TARGET_DIR, when set,
# keeps builds where it says.
cache="${PLANRUN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/planrun}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
