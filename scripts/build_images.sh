#!/bin/sh
# Build podvirt's container images with docker, podman or buildah, whichever is on PATH (in that order;
# CONTAINER_TOOL=NAME picks one). Tags are <registry>/<component>:<tag>, as the manifests reference them.
#
#   scripts/build_images.sh [--registry quay.io/podvirt] [--tag v<version>] [--push]
#
# Order: images/builder (wheels of podvirt and its dependencies, not shipped), images/base (the runtime
# with podvirt's venv), then each component on top of it, then the OLM bundle (bundle.Dockerfile).
set -eu

ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/pyproject.toml" | head -n 1)
REGISTRY=quay.io/podvirt
TAG="v$VERSION"
PUSH=no
COMPONENTS="virt-api virt-controller virt-handler virt-launcher virt-operator"

usage() {
    echo "usage: $0 [--registry REGISTRY] [--tag TAG] [--push]" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --registry) [ $# -ge 2 ] || usage; REGISTRY=$2; shift 2 ;;
        --tag) [ $# -ge 2 ] || usage; TAG=$2; shift 2 ;;
        --push) PUSH=yes; shift ;;
        *) usage ;;
    esac
done

if [ "$TAG" = latest ]; then
    echo "build_images: refusing the tag 'latest': the manifests and the OLM bundle pin images to a version" >&2
    exit 2
fi

TOOL=${CONTAINER_TOOL:-}
if [ -z "$TOOL" ]; then
    for candidate in docker podman buildah; do
        if command -v "$candidate" >/dev/null 2>&1; then
            TOOL=$candidate
            break
        fi
    done
fi
if [ -z "$TOOL" ] || ! command -v "$TOOL" >/dev/null 2>&1; then
    echo "build_images: no container build tool found: install docker, podman or buildah (or set CONTAINER_TOOL)" >&2
    exit 1
fi

build() { # build IMAGE CONTAINERFILE [--build-arg K=V ...]
    image=$1; file=$2; shift 2
    echo "build_images: $TOOL: $image from $file"
    case "$TOOL" in
        buildah) buildah bud --file "$file" --tag "$image" "$@" "$ROOT" ;;
        *) "$TOOL" build --file "$file" --tag "$image" "$@" "$ROOT" ;;
    esac
}

BUILDER="$REGISTRY/podvirt-builder:$TAG"
BASE="$REGISTRY/podvirt-base:$TAG"
build "$BUILDER" "$ROOT/images/builder/Containerfile"
build "$BASE" "$ROOT/images/base/Containerfile" --build-arg "BUILDER=$BUILDER"
for component in $COMPONENTS; do
    build "$REGISTRY/$component:$TAG" "$ROOT/images/$component/Containerfile" --build-arg "BASE=$BASE"
done
build "$REGISTRY/podvirt-operator-bundle:$TAG" "$ROOT/bundle.Dockerfile"

if [ "$PUSH" = yes ]; then
    for image in $COMPONENTS podvirt-operator-bundle; do
        "$TOOL" push "$REGISTRY/$image:$TAG"
    done
fi
echo "build_images: built $COMPONENTS and podvirt-operator-bundle as $REGISTRY/<name>:$TAG with $TOOL"
