//! A workflow built against `corral:workflow@0.1.0`, the first release of Corral's WIT, from a
//! frozen copy of that file (`wit/workflow.wit`, never to be edited). It reads a file, greps,
//! starts and waits for an agent call and logs, so that a host of a later 0.1.x proves it still
//! runs components built before it.

// wit-bindgen's generated glue lowers and lifts values across the component ABI with raw
// pointers; that code is generated from the WIT file, not written by hand.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        world: "workflow",
        path: "wit",
    });

    use super::Compat;
    export!(Compat with_types_in self);
}

use bindings::corral::workflow::{agents, progress, tools};

struct Compat;

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl bindings::Guest for Compat {
    fn run(_args_json: String) -> Result<String, String> {
        progress::phase("compat");
        let text = tools::read("README.md").map_err(|e| format!("read: {e:?}"))?;
        let matches = tools::grep(
            "hello",
            &tools::GrepOptions {
                glob: None,
                ignore_case: true,
                max_matches: None,
            },
        )
        .map_err(|e| format!("grep: {e:?}"))?;
        let options = agents::AgentOptions {
            label: Some("compat".to_string()),
            phase: None,
            model: None,
            effort: None,
            schema: None,
            tools: None,
            max_tokens: None,
            max_turns: None,
            timeout_ms: None,
        };
        let id = agents::start("say hello", &options).map_err(|e| format!("start: {e:?}"))?;
        let done = agents::wait(&[id]);
        let answer = match done.into_iter().next().map(|c| c.outcome) {
            Some(Ok(output)) => output.text,
            other => return Err(format!("the agent call failed: {other:?}")),
        };
        progress::log("compat: done");
        Ok(format!(
            "{{\"read\": {}, \"grep\": {}, \"agent\": {}}}",
            escape(&text),
            matches.len(),
            escape(&answer)
        ))
    }
}
