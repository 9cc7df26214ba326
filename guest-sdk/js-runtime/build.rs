//! Compiles the prelude (`src/prelude.js`) to QuickJS bytecode, which the runtime evaluates in
//! each realm instead of parsing the source (see `src/bytecode.rs`). It runs natively on the
//! build machine; the bytecode is the same for every target of this QuickJS version.

#[path = "src/bytecode.rs"]
mod bytecode;

fn main() {
    println!("cargo::rerun-if-changed=src/prelude.js");
    println!("cargo::rerun-if-changed=src/bytecode.rs");
    let source = std::fs::read_to_string("src/prelude.js").expect("src/prelude.js is readable");
    let runtime = rquickjs::Runtime::new().expect("QuickJS starts");
    let context = rquickjs::Context::full(&runtime).expect("a QuickJS context");
    let bytes = context.with(|ctx| {
        bytecode::compile(&ctx, &source, bytecode::PRELUDE_NAME).unwrap_or_else(|error| {
            let thrown = ctx.catch();
            panic!("src/prelude.js does not compile: {error}: {thrown:?}")
        })
    });
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("prelude.qjsbc"), bytes).expect("OUT_DIR is writable");
}
