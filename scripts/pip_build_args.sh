# shellcheck shell=bash
# Sourced by the build scripts: pass the machine's pip proxy certificate and local wheel folder (when pip
# is configured with them) into `podman/docker build` as build args, with their folders mounted read-only.
# Nothing of this is baked into an image.
PIP_BUILD_ARGS=()
_pip_value() {  # environment first, then pip's own configuration
  local env_name="$1" key="$2"
  local value="${!env_name:-}"
  if [ -z "$value" ] && command -v pip3 >/dev/null 2>&1; then
    value="$(pip3 config list 2>/dev/null | sed -n "s/^[a-z:.]*${key}='\(.*\)'$/\1/p" | head -n 1)"
  fi
  printf '%s' "$value"
}
_cert="$(_pip_value PIP_CERT cert)"
_links="$(_pip_value PIP_FIND_LINKS find-links)"
if [ -n "$_cert" ] && [ -e "$_cert" ]; then
  PIP_BUILD_ARGS+=(--build-arg "PIP_CERT=$_cert" --volume "$(dirname "$_cert"):$(dirname "$_cert"):ro")
fi
if [ -n "$_links" ] && [ -d "$_links" ]; then
  PIP_BUILD_ARGS+=(--build-arg "PIP_FIND_LINKS=$_links" --volume "$_links:$_links:ro")
fi
