//! QuickJS bytecode of a global script: compiled once, evaluated many times.
//!
//! The prelude (`prelude.js`, 500 lines) is the same in every realm of every run, and parsing it
//! was more than half of what a run cost before its first agent call. `build.rs` compiles it
//! with this module on the build machine and the runtime evaluates the bytecode. QuickJS's
//! bytecode format does not depend on the target (values are written tagged, opcodes and atom
//! operands are remapped on reading), but it does depend on the QuickJS sources: built-in atoms
//! are written by index. The build dependency and the runtime's dependency are therefore the
//! same `rquickjs-sys` (one version in Cargo.lock). rquickjs has no safe API for script
//! (non-module) bytecode, hence the raw calls below; each is the documented QuickJS entry point,
//! used as its header says.
//!
//! This file is also compiled into `build.rs` (by `#[path]`), so it depends on rquickjs only.

#![allow(unsafe_code)]

use rquickjs::{Ctx, Error, Value, qjs};

/// The file name the prelude is compiled under: QuickJS reports it for the prelude's frames,
/// which the runtime leaves out of stack traces.
pub const PRELUDE_NAME: &str = "corral:prelude";

/// How the prelude is compiled: a global (non-module) script whose frames end a backtrace.
const COMPILE_FLAGS: u32 =
    qjs::JS_EVAL_TYPE_GLOBAL | qjs::JS_EVAL_FLAG_COMPILE_ONLY | qjs::JS_EVAL_FLAG_BACKTRACE_BARRIER;

/// Compiles `source` as a global script named `file` and returns its bytecode.
///
/// # Errors
///
/// A syntax error (as a pending exception of `ctx`: [`Error::Exception`]), or a name with a NUL.
#[allow(dead_code)] // Used by build.rs; the runtime only evaluates.
pub fn compile(ctx: &Ctx<'_>, source: &str, file: &str) -> rquickjs::Result<Vec<u8>> {
    let file = std::ffi::CString::new(file)?;
    let raw = ctx.as_raw().as_ptr();
    // SAFETY: `raw` is the live context of `ctx`. JS_Eval reads exactly `source.len()` bytes of
    // `source` (QuickJS also requires a NUL at `source[len]`, which `CString` provides below) and
    // the NUL-terminated file name; with COMPILE_ONLY it returns the function bytecode object (or
    // JS_EXCEPTION), owned by us.
    let code = std::ffi::CString::new(source)?;
    let function = unsafe {
        qjs::JS_Eval(
            raw,
            code.as_ptr(),
            source.len() as _,
            file.as_ptr(),
            COMPILE_FLAGS as i32,
        )
    };
    // SAFETY: `function` is an owned value of this context; `Value` frees it when dropped.
    let function = unsafe { Value::from_raw(ctx.clone(), function) };
    if function.is_exception() {
        return Err(Error::Exception);
    }
    let mut len = std::mem::MaybeUninit::<qjs::size_t>::uninit();
    // SAFETY: JS_WriteObject reads the (borrowed) function object and returns a buffer of `len`
    // bytes allocated by the context, or NULL with an exception pending.
    let buffer = unsafe {
        qjs::JS_WriteObject(
            raw,
            len.as_mut_ptr(),
            function.as_raw(),
            qjs::JS_WRITE_OBJ_BYTECODE as i32,
        )
    };
    if buffer.is_null() {
        return Err(Error::Exception);
    }
    // SAFETY: on success `len` was written and `buffer` holds that many bytes, which are copied
    // before the buffer is given back to the context's allocator.
    let bytes = unsafe {
        let bytes = std::slice::from_raw_parts(buffer, len.assume_init() as usize).to_vec();
        qjs::js_free(raw, buffer.cast());
        bytes
    };
    Ok(bytes)
}

/// Evaluates bytecode made by [`compile`] and returns the script's completion value.
///
/// # Safety
///
/// `bytecode` must come from [`compile`] with this same QuickJS (`rquickjs-sys`): QuickJS does
/// not verify bytecode, and other bytes can make it read or write out of bounds.
///
/// # Errors
///
/// What the script throws, or a refusal of the bytecode, as a pending exception of `ctx`
/// ([`Error::Exception`]).
#[allow(dead_code)] // build.rs only compiles.
pub unsafe fn eval<'js>(ctx: &Ctx<'js>, bytecode: &[u8]) -> rquickjs::Result<Value<'js>> {
    let raw = ctx.as_raw().as_ptr();
    // SAFETY: JS_ReadObject reads exactly `bytecode.len()` bytes, which the caller promises are
    // bytecode of this QuickJS; it copies what it keeps and returns an owned function bytecode
    // object, or JS_EXCEPTION.
    let function = unsafe {
        qjs::JS_ReadObject(
            raw,
            bytecode.as_ptr(),
            bytecode.len() as _,
            qjs::JS_READ_OBJ_BYTECODE as i32,
        )
    };
    // SAFETY: `function` is a plain value; checking its tag reads nothing behind it.
    if unsafe { qjs::JS_IsException(function) } {
        return Err(Error::Exception);
    }
    // SAFETY: JS_EvalFunction takes ownership of the function object and returns an owned
    // completion value or JS_EXCEPTION.
    let result = unsafe { qjs::JS_EvalFunction(raw, function) };
    // SAFETY: an owned value of this context.
    let result = unsafe { Value::from_raw(ctx.clone(), result) };
    if result.is_exception() {
        return Err(Error::Exception);
    }
    Ok(result)
}
