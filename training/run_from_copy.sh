# shellcheck shell=bash
# Source it first thing in a script that runs for hours, then call `run_from_copy VAR "$@"`: the script is run again
# from a temporary copy, because bash reads a script while it runs it, so that editing (or checking out) the repo's
# file during the run cannot change what the running process executes. VAR (the script's own name for it) carries the
# original folder into the copy, where it is set and run_from_copy returns at once: use "${VAR}" as the script's
# folder after the call.
run_from_copy() {
  local var=$1 script=${BASH_SOURCE[1]} copy
  shift
  if [ -n "${!var:-}" ]; then  # the copy
    # bash holds it open and reads on from the open file, so it can go now: no copy of a past run is left behind
    if [ "$script" = "${RUN_FROM_COPY_FILE:-}" ]; then rm -f "$script"; fi
    return 0
  fi
  copy=$(mktemp "${TMPDIR:-/tmp}/$(basename "$script" .sh).XXXXXX.sh")
  cp "$script" "$copy"
  export "$var=$(cd "$(dirname "$script")" && pwd)"
  RUN_FROM_COPY_FILE=$copy exec bash "$copy" "$@"
}
