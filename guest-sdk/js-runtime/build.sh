#!/usr/bin/env bash
# Builds Corral's JavaScript runtime component (QuickJS-ng via rquickjs) for wasm32-wasip2.
#
# rquickjs-sys compiles QuickJS's C sources. For WASI its build script would download wasi-sdk,
# which a machine without general internet access cannot do, so this script points it at Debian's
# clang and wasi-libc headers instead. On a fresh Debian machine:
#
#   apt-get update && apt-get install -y clang-19 llvm-19 wasi-libc
#
# Usage (from anywhere):
#   build.sh            build target/wasm32-wasip2/guest/js_runtime.wasm
#   build.sh clippy     clippy for the wasm target, warnings denied
#   build.sh test       unit tests on the host target (they run QuickJS natively against a fake host)
#   build.sh update     build, then refresh the committed artifact and its checksum
#   build.sh verify     build, then fail unless the committed artifact matches the fresh build
#
# Overrides: CLANG (default clang-19), LLVM_AR (default llvm-ar-19),
# WASI_LIBC_INCLUDE (default /usr/include/wasm32-wasi).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
artifact="$here/js_runtime.wasm"

clang="${CLANG:-clang-19}"
llvm_ar="${LLVM_AR:-llvm-ar-19}"
wasi_include="${WASI_LIBC_INCLUDE:-/usr/include/wasm32-wasi}"

missing=()
command -v "$clang" >/dev/null || missing+=("$clang (apt-get install clang-19)")
command -v "$llvm_ar" >/dev/null || missing+=("$llvm_ar (apt-get install llvm-19)")
[[ -f "$wasi_include/malloc.h" ]] || missing+=("$wasi_include/malloc.h (apt-get install wasi-libc)")
if ((${#missing[@]})); then
    printf 'build.sh: missing %s\n' "${missing[@]}" >&2
    exit 1
fi

# Read by rquickjs-sys: do not download wasi-sdk.
export RQUICKJS_SYS_NO_WASI_SDK=1
# Read by the `cc` crate, for the wasm target only; host builds keep the system compiler.
export CC_wasm32_wasip2="$clang"
export AR_wasm32_wasip2="$llvm_ar"
# `-nostdlibinc -isystem` rather than `--sysroot`: the host's /usr/include stays out of the search
# path while clang keeps its own builtin headers (stddef.h, stdarg.h). c/quickjs-wasi.h turns
# QuickJS's stack-overflow check back on (see the header). The file-prefix map keeps the checkout
# path out of the artifact, so any clone builds the same bytes.
export CFLAGS_wasm32_wasip2="-nostdlibinc -isystem $wasi_include -include $here/c/quickjs-wasi.h -ffile-prefix-map=$root/=corral/"

cd "$root"
wasm_args=(--profile guest --target wasm32-wasip2 -p js-runtime)
output="$root/target/wasm32-wasip2/guest/js_runtime.wasm"

build() {
    cargo build "${wasm_args[@]}"
    echo "built $output ($(stat -c %s "$output") bytes)"
}

case "${1:-build}" in
    build) build ;;
    clippy) cargo clippy "${wasm_args[@]}" -- -D warnings ;;
    test) cargo test -p js-runtime ;;
    update)
        build
        cp "$output" "$artifact"
        (cd "$here" && sha256sum js_runtime.wasm >js_runtime.wasm.sha256)
        echo "updated $artifact"
        ;;
    verify)
        build
        (cd "$here" && sha256sum --check --quiet js_runtime.wasm.sha256)
        if ! cmp -s "$output" "$artifact"; then
            echo "build.sh: the committed js_runtime.wasm is stale; run guest-sdk/js-runtime/build.sh update" >&2
            exit 1
        fi
        echo "committed artifact matches the fresh build"
        ;;
    *)
        echo "usage: build.sh [build|clippy|test|update|verify]" >&2
        exit 2
        ;;
esac
