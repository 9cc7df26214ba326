/*
 * Force-included (clang -include) before every QuickJS source file when building for
 * wasm32-wasip2; see build.sh.
 *
 * QuickJS turns its stack-overflow check off when `__wasi__` is defined. The check works on
 * wasm32 all the same: `__builtin_frame_address(0)` reads the shadow-stack pointer, which is
 * where QuickJS's frames live. So this header includes every libc header QuickJS needs while
 * `__wasi__` is still defined (wasi-libc's own headers require it), then hides `__wasi__` from
 * QuickJS. A runaway recursion then throws a catchable `RangeError` instead of corrupting
 * memory or trapping. The check sees only the shadow stack, not the native stack the host gives
 * wasm code, which C recursion with small shadow frames can exhaust first: the runtime keeps
 * QuickJS's stack limit low and bounds JSON, parser and proxy nesting for that (`Limits::stack`
 * in src/script.rs; README.md, "Limits").
 *
 * Without `__wasi__`, QuickJS can no longer ask libc for allocation sizes, so the runtime
 * enables rquickjs's `rust-alloc` feature, whose allocator records sizes itself (QuickJS's
 * memory limit depends on them).
 */
#ifndef CORRAL_QUICKJS_WASI_H
#define CORRAL_QUICKJS_WASI_H

#include <alloca.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fenv.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#undef __wasi__

#endif
