//! A fake LLM server for offline demos: `fake-llm anthropic|openai [--port N] [--key KEY]`.
//!
//! It speaks the real wire protocol on 127.0.0.1, validates every request, and answers
//! automatically (a valid instance of the submit tool's schema when one is offered, else text),
//! so `corral run` can make a full HTTP round trip without a network or an account. Each request
//! is summarised on stderr. It stops after `--max-requests` requests (default 10000) or on Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use tests::fake_llm::{FakeLlm, Protocol};

const USAGE: &str = "usage: fake-llm anthropic|openai [--port N] [--key KEY] [--max-requests N]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fake-llm: {message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let protocol = match args.next().as_deref() {
        Some("anthropic") => Protocol::Anthropic,
        Some("openai") => Protocol::OpenAi,
        Some(other) => return Err(format!("unknown protocol '{other}'")),
        None => return Err("name a protocol".to_string()),
    };
    let (mut port, mut key, mut max_requests) = (0u16, None, 10_000usize);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => {
                port = value
                    .parse()
                    .map_err(|_| format!("invalid port '{value}'"))?
            }
            "--key" => key = Some(value),
            "--max-requests" => {
                max_requests = value
                    .parse()
                    .map_err(|_| format!("invalid count '{value}'"))?
            }
            other => return Err(format!("unknown flag '{other}'")),
        }
    }
    let server = FakeLlm::start_on(protocol, key.as_deref(), port)
        .map_err(|error| format!("cannot listen: {error}"))?;
    let variable = match protocol {
        Protocol::Anthropic => "ANTHROPIC_BASE_URL",
        Protocol::OpenAi => "OPENAI_BASE_URL",
    };
    println!("{}", server.url());
    eprintln!(
        "fake-llm: listening; point Corral at it with {variable}={}",
        server.url()
    );
    let mut seen = 0;
    while seen < max_requests {
        std::thread::sleep(Duration::from_millis(100));
        let received = server.received();
        for request in &received[seen.min(received.len())..] {
            eprintln!(
                "fake-llm: {} {} -> {} model={} messages={} usage={}",
                request.method,
                request.path,
                request.status,
                request.body["model"],
                request.body["messages"].as_array().map_or(0, Vec::len),
                request.usage
            );
        }
        seen = received.len();
    }
    Ok(())
}
