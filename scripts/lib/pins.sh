# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this
# The pinned versions of every binary flotilla's scripts build: sourced by scripts/testbin.sh (the
# test binaries) and scripts/build-release.sh (what the container image ships), so the helm and
# kustomize the tests run against are the ones the image contains. deploy/Dockerfile COPYs this
# file with those scripts; its base images (rust, golang, distroless) are pinned there.

KUBE_VERSIONS=(v1.34.4 v1.37.2)   # two minors, so version classifiers meet real differences
ETCD_VERSION=v3.6.16
HELM_VERSION=v4.3.1
KUSTOMIZE_VERSION=v5.7.1
REGISTRY_VERSION=v3.0.0           # github.com/distribution/distribution/v3; its go.mod says go 1.23.7
