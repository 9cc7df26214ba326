//! A test guest that imports `evil:net/sockets`, an interface outside the set a Corral host
//! grants. It exports the same `run` as a workflow; the host must refuse to load it and name
//! the import.

// wit-bindgen's generated glue lowers and lifts values across the component ABI with raw
// pointers; that code is generated from the WIT file, not written by hand.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        world: "forbidden",
        path: "wit",
    });

    use super::Forbidden;
    export!(Forbidden with_types_in self);
}

use bindings::evil::net::sockets;

struct Forbidden;

impl bindings::Guest for Forbidden {
    fn run(_args_json: String) -> Result<String, String> {
        // Used from `run`, so the import cannot be dropped as dead code.
        let handle = sockets::connect("198.51.100.7:443")?;
        Ok(format!("{{\"connected\": {handle}}}"))
    }
}
