//! `corral serve` through a real HTTP client against a real server on 127.0.0.1: the API end to
//! end, tenant isolation on every endpoint, authentication, bad input, quotas, fair sharing,
//! metrics, the OpenAPI document, and SIGTERM / `kill -9` restarts that pay no completed call
//! twice.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tests::fake_llm::{FakeLlm, Protocol};
use tests::guests::guest_path;
use tests::server::{Answer, Api, TestServer, corral_ok, tenant_with_token};
use tests::support::{fixture_repo, wait_until};

/// `n` agents at once; each call's prompt is `fan-out call I`.
const FANOUT: &str = "export const meta = { name: 'fanout', description: 'n agents at once' }
const n = args.n
const opts = (i) => ({ phase: args.phase ?? 'Fan', label: `call ${i}`, maxTokens: args.maxTokens ?? 256 })
const results = await parallel(Array.from({ length: n }, (_, i) => () => agent(`fan-out call ${i}`, opts(i))))
return results.filter((r) => r !== null).length
";

fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.text);
    assert_eq!(answer.json["code"], code, "{}", answer.text);
    assert!(
        answer.json["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        answer.text
    );
    assert!(answer.json.get("hint").is_some(), "{}", answer.text);
}

#[test]
fn a_script_runs_end_to_end_through_the_api() {
    let data = tempfile::tempdir().unwrap();
    let repo = fixture_repo();
    let root = format!("repo={}", repo.path().display());
    let token = tenant_with_token(data.path(), "acme", &["--root", &root]);
    let server = TestServer::start(data.path(), &[], &[]);
    let api = server.client(&token);

    let hash = api.upload_script("fanout.js", FANOUT);
    let workflow = api.get(&format!("/v1/workflows/{hash}"));
    assert_eq!(workflow.status, 200, "{}", workflow.text);
    assert_eq!(workflow.json["kind"], "script");
    assert_eq!(workflow.json["name"], "fanout.js");

    // A plan runs nothing and records nothing.
    let plan = api.post(
        "/v1/runs?plan=true",
        &json!({"workflow": hash, "args": {"n": 5}}),
    );
    assert_eq!(plan.status, 200, "{}", plan.text);
    assert_eq!(plan.json["plan"]["agents"], 5);
    assert_eq!(plan.json["plan"]["phases"][0]["name"], "Fan");
    assert_eq!(api.get("/v1/runs").json["runs"], json!([]));

    let id = api.submit(&json!({"workflow": hash, "args": {"n": 5}, "sim_latency_ms": 20}));
    let detail = api.wait(&id);
    assert_eq!(detail["status"], "succeeded", "{detail}");
    assert_eq!(detail["counts"]["agents"], 5);
    assert_eq!(detail["counts"]["done"], 5);
    assert_eq!(detail["phases"][0]["name"], "Fan");
    assert_eq!(detail["phases"][0]["done"], 5);
    assert!(detail["tokens"]["total"].as_u64().unwrap() > 0);

    let result = api.get(&format!("/v1/runs/{id}/result"));
    assert_eq!(result.json["result"], 5, "{}", result.text);
    let agents = api.get(&format!("/v1/runs/{id}/agents"));
    assert_eq!(agents.json["agents"].as_array().unwrap().len(), 5);
    let first = api.get(&format!("/v1/runs/{id}/agents/1"));
    assert_eq!(first.json["prompt"], "fan-out call 0", "{}", first.text);
    assert_eq!(first.json["status"], "ok");
    assert!(first.json["result"].is_string());
    assert_eq!(first.json["options"]["max_tokens"], 256);

    // Events from the start: run_started first, run_finished last, numbered 1, 2, 3 …
    let events = api.events(&id, None, 10_000);
    assert_eq!(events.first().unwrap().1["event"], "run_started");
    assert_eq!(events.last().unwrap().1["event"], "run_finished");
    let ids: Vec<u64> = events.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    let kinds: Vec<&str> = events
        .iter()
        .map(|(_, e)| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "agent_finished").count(), 5);
    // … and resumable with Last-Event-ID.
    let tail = api.events(&id, Some(3), 10_000);
    assert_eq!(tail.first().unwrap().0, 4);
    assert_eq!(tail, events[3..].to_vec());

    // Listing and filtering.
    let listed = api.get("/v1/runs?status=succeeded");
    assert_eq!(listed.json["runs"][0]["id"], id.as_str(), "{}", listed.text);
    assert_eq!(api.get("/v1/runs?status=running").json["runs"], json!([]));

    // `corral runs stop` from another process stops a server's run; the API resumes it, paying
    // only for what did not complete.
    let slow = api.submit(&json!({
        "workflow": hash,
        "args": {"n": 40},
        "limits": {"max_concurrent": 2},
        "sim_latency_ms": 100,
    }));
    wait_until("a few calls of the slow run", || {
        api.get(&format!("/v1/runs/{slow}")).json["counts"]["done"]
            .as_u64()
            .unwrap_or(0)
            >= 4
    });
    corral_ok(data.path(), &["runs", "stop", &slow]);
    let stopped = api.wait(&slow);
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    let done = stopped["counts"]["done"].as_u64().unwrap();
    let resumed = api.post(&format!("/v1/runs/{slow}/resume"), &json!({}));
    assert_eq!(resumed.status, 201, "{}", resumed.text);
    let again = resumed.json["id"].as_str().unwrap().to_string();
    assert_eq!(resumed.json["resumes"], slow.as_str());
    let finished = api.wait(&again);
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_eq!(finished["resumed_from"], slow.as_str());
    let agents = api.get(&format!("/v1/runs/{again}/agents")).json;
    let replayed = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["replayed"] == true)
        .count() as u64;
    assert_eq!(
        replayed, done,
        "every completed call is answered from the journal"
    );

    // A live run streams as it goes, and a named root is the tenant's directory.
    let audit = std::fs::read_to_string(tests::guests::workspace_root().join("workflows/audit.js"))
        .unwrap();
    let id = api.submit(&json!({
        "script": audit,
        "script_name": "audit.js",
        "root": "repo",
        "args": {"glob": "src/*.rs"},
        "sim_latency_ms": 30,
    }));
    let live = api.events(&id, None, 100_000);
    assert_eq!(live.last().unwrap().1["event"], "run_finished", "{live:?}");
    assert_eq!(live.last().unwrap().1["ok"], true, "{live:?}");
    let result = api.get(&format!("/v1/runs/{id}/result"));
    assert_eq!(result.json["result"]["files"], 2, "{}", result.text);

    // `"args": null` reaches the script as null; no args at all as undefined.
    let shape = api.upload_script(
        "shape.js",
        "return args === undefined ? 'undefined' : args === null ? 'null' : 'given'",
    );
    for (request, expected) in [
        (json!({"workflow": shape, "args": null}), "null"),
        (json!({"workflow": shape}), "undefined"),
        (json!({"workflow": shape, "args": 1}), "given"),
    ] {
        let run = api.submit(&request);
        assert_eq!(api.wait(&run)["status"], "succeeded");
        let result = api.get(&format!("/v1/runs/{run}/result"));
        assert_eq!(result.json["result"], expected, "{request}");
    }
}

#[test]
fn another_tenants_things_answer_exactly_like_unknown_ones() {
    let data = tempfile::tempdir().unwrap();
    let acme = tenant_with_token(data.path(), "acme", &[]);
    let globex = tenant_with_token(data.path(), "globex", &[]);
    let server = TestServer::start(data.path(), &[], &[]);
    let (a, b) = (server.client(&acme), server.client(&globex));

    let hash = a.upload_script("fanout.js", FANOUT);
    let id = a.submit(&json!({"workflow": hash, "args": {"n": 2}}));
    assert_eq!(a.wait(&id)["status"], "succeeded");

    let unknown_run = "zzzzzzzzzzzz";
    let unknown_hash = "0".repeat(64);
    let same = |path: &str, method: &str, real: &str, unknown: &str| {
        let send = |api: &Api, target: &str| {
            let path = path.replace("{}", target);
            match method {
                "GET" => api.get(&path),
                _ => api.post(&path, &json!({})),
            }
        };
        let theirs = send(&b, real);
        let nothing = send(&b, unknown);
        assert_eq!(theirs.status, 404, "{path}: {}", theirs.text);
        assert_eq!(
            theirs.text.replace(real, "ID"),
            nothing.text.replace(unknown, "ID"),
            "{path} tells another tenant's {real} from an unknown one"
        );
    };
    same("/v1/workflows/{}", "GET", &hash, &unknown_hash);
    for path in [
        "/v1/runs/{}",
        "/v1/runs/{}/agents",
        "/v1/runs/{}/agents/1",
        "/v1/runs/{}/result",
        "/v1/runs/{}/events",
        "/v1/runs/{}/diff",
    ] {
        same(path, "GET", &id, unknown_run);
    }
    for path in [
        "/v1/runs/{}/stop",
        "/v1/runs/{}/resume",
        "/v1/runs/{}/apply",
    ] {
        same(path, "POST", &id, unknown_run);
    }
    // Nor can it run the other tenant's workflow, list its workflows or runs, or see its usage.
    assert_eq!(b.get("/v1/workflows").json["workflows"], json!([]));
    let listed = a.get("/v1/workflows");
    assert_eq!(
        listed.json["workflows"][0]["hash"],
        hash.as_str(),
        "{}",
        listed.text
    );
    assert_eq!(listed.json["workflows"][0]["kind"], "script");
    let theirs = b.post("/v1/runs", &json!({"workflow": hash}));
    assert_error(&theirs, 404, "not_found");
    assert_eq!(b.get("/v1/runs").json["runs"], json!([]));
    assert_error(&b.get(&format!("/v1/runs?before={id}")), 404, "not_found");
    let usage = b.get("/v1/usage");
    assert_eq!(usage.json["tenant"], "globex");
    assert_eq!(usage.json["quotas"]["tokens_per_day"]["used"], 0);
    assert!(
        a.get("/v1/usage").json["quotas"]["tokens_per_day"]["used"]
            .as_u64()
            .unwrap()
            > 0
    );
    // The owner still sees everything.
    assert_eq!(a.get(&format!("/v1/runs/{id}/agents/1")).status, 200);
}

fn token_id(data: &Path, tenant: &str) -> Vec<String> {
    corral_ok(data, &["tokens", "list"])
        .lines()
        .skip(1)
        .filter(|line| line.split_whitespace().nth(1) == Some(tenant))
        .map(|line| line.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[test]
fn tokens_are_checked_and_read_only_tokens_only_read() {
    let data = tempfile::tempdir().unwrap();
    let token = tenant_with_token(data.path(), "acme", &[]);
    let reader = corral_ok(data.path(), &["tokens", "create", "acme", "--read-only"])
        .trim()
        .to_string();
    let expiring = corral_ok(
        data.path(),
        &["tokens", "create", "acme", "--expires", "1ms"],
    )
    .trim()
    .to_string();
    let revoked = tenant_with_token(data.path(), "initech", &[]);
    let server = TestServer::start(data.path(), &[], &[]);

    for id in token_id(data.path(), "initech") {
        corral_ok(data.path(), &["tokens", "revoke", &id]);
    }
    std::thread::sleep(Duration::from_millis(20));
    for (who, api) in [
        ("no token", Api::new(&server.url, None)),
        ("a wrong token", server.client("crl_000000000000_nope")),
        ("an expired token", server.client(&expiring)),
        ("a revoked token", server.client(&revoked)),
    ] {
        for path in ["/v1/runs", "/v1/usage", "/v1/runs/zzzzzzzzzzzz"] {
            let answer = api.get(path);
            assert_eq!(answer.status, 401, "{who} on {path}: {}", answer.text);
            assert_eq!(answer.json["code"], "unauthorized");
        }
    }
    assert!(
        server.client(&expiring).get("/v1/runs").json["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    drop(server);

    // Tenants and tokens declared in corral.toml (only the token's hash is written there).
    let config = data.path().join("corral.toml");
    let secret = "crl_declared_0123456789abcdef";
    let digest = token_sha256(secret);
    std::fs::write(
        &config,
        format!(
            "[tenants.declared]\ntokens = [{{ sha256 = \"{digest}\", read_only = true }}]\n[tenants.declared.quota]\nruns = 2\n"
        ),
    )
    .unwrap();
    let server = TestServer::start(data.path(), &["--config", config.to_str().unwrap()], &[]);
    let declared = server.client(secret);
    let usage = declared.get("/v1/usage");
    assert_eq!(usage.json["tenant"], "declared", "{}", usage.text);
    assert_eq!(usage.json["quotas"]["runs"]["limit"], 2);
    assert_error(
        &declared.post("/v1/runs", &json!({"script": "return 1"})),
        403,
        "read_only",
    );

    let writer = server.client(&token);
    let hash = writer.upload_script("fanout.js", FANOUT);
    let id = writer.submit(&json!({"workflow": hash, "args": {"n": 1}}));
    writer.wait(&id);
    let read_only = server.client(&reader);
    assert_eq!(read_only.get(&format!("/v1/runs/{id}")).status, 200);
    assert_eq!(read_only.get("/v1/usage").status, 200);
    let refused = [
        read_only.send(
            "PUT",
            "/v1/workflows",
            Some("application/javascript"),
            Some(FANOUT.as_bytes().to_vec()),
        ),
        read_only.post("/v1/runs", &json!({"workflow": hash})),
        read_only.post(&format!("/v1/runs/{id}/stop"), &json!({})),
        read_only.post(&format!("/v1/runs/{id}/resume"), &json!({})),
        read_only.post(&format!("/v1/runs/{id}/apply"), &json!({})),
    ];
    for answer in refused {
        assert_error(&answer, 403, "read_only");
    }
}

#[test]
fn bad_input_gets_a_clear_4xx_and_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let token = tenant_with_token(data.path(), "acme", &[]);
    let server = TestServer::start(data.path(), &["--max-body-bytes", "2MiB"], &[]);
    let api = server.client(&token);
    let hash = api.upload_script("fanout.js", FANOUT);
    let id = api.submit(&json!({"workflow": hash, "args": {"n": 2}}));
    let before = api.wait(&id);

    let raw = |body: &str, kind: &str| {
        api.send(
            "POST",
            "/v1/runs",
            Some(kind),
            Some(body.as_bytes().to_vec()),
        )
    };
    assert_error(&raw("{not json", "application/json"), 400, "invalid_json");
    let unknown = raw(r#"{"workflw": "x"}"#, "application/json");
    assert_error(&unknown, 400, "invalid_json");
    assert!(
        unknown.text.contains("unknown field `workflw`"),
        "{}",
        unknown.text
    );
    assert_error(&raw("{}", "text/plain"), 415, "unsupported_media_type");
    let huge = format!(r#"{{"script": "{}"}}"#, "x".repeat(3 << 20));
    let too_large = raw(&huge, "application/json");
    assert_error(&too_large, 413, "body_too_large");
    assert!(
        too_large.text.contains("2097152 bytes"),
        "{}",
        too_large.text
    );
    assert_error(&raw("{}", "application/json"), 400, "invalid");

    // A component that fails the import check, a script that fails its checks.
    let forbidden = std::fs::read(guest_path("forbidden")).unwrap();
    let refused = api.send(
        "PUT",
        "/v1/workflows",
        Some("application/wasm"),
        Some(forbidden),
    );
    assert_error(&refused, 422, "component_refused");
    assert!(
        refused.text.contains("evil:net/sockets"),
        "{}",
        refused.text
    );
    let broken = api.send(
        "PUT",
        "/v1/workflows?name=broken.js",
        Some("application/javascript"),
        Some(b"const x = 1\nimport fs from 'fs'\n".to_vec()),
    );
    assert_error(&broken, 422, "script_invalid");
    assert!(broken.text.contains("broken.js:2:"), "{}", broken.text);
    let inline = api.post(
        "/v1/runs",
        &json!({"script": "return await agent(", "script_name": "inline.js"}),
    );
    assert_error(&inline, 422, "script_invalid");
    assert!(inline.text.contains("inline.js:1:"), "{}", inline.text);
    let not_wasm = api.send(
        "PUT",
        "/v1/workflows",
        Some("application/wasm"),
        Some(b"hello".to_vec()),
    );
    assert_error(&not_wasm, 422, "component_refused");
    let odd_type = api.send(
        "PUT",
        "/v1/workflows",
        Some("image/png"),
        Some(b"x".to_vec()),
    );
    assert_error(&odd_type, 415, "unsupported_media_type");

    // Unknown root, provider and model, a provider the tenant may not use, absurd limits.
    let submit = |extra: Value| {
        let mut body = json!({"workflow": hash, "args": {"n": 1}});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        api.post("/v1/runs", &body)
    };
    let root = submit(json!({"root": "nope"}));
    assert_error(&root, 400, "invalid");
    assert!(root.text.contains("unknown root 'nope'"), "{}", root.text);
    let provider = submit(json!({"provider": "nope"}));
    assert_error(&provider, 400, "invalid");
    let forbidden_provider = submit(json!({"provider": "anthropic"}));
    assert_error(&forbidden_provider, 400, "invalid");
    assert!(
        forbidden_provider.text.contains("may use: sim"),
        "{}",
        forbidden_provider.text
    );
    for limits in [
        json!({"timeout_ms": 1_000_000_000_000u64}),
        json!({"max_concurrent": 0}),
        json!({"max_memory": 1u64 << 50}),
        json!({"max_concurrent": "many"}),
        json!({"no_such_limit": 1}),
    ] {
        let answer = submit(json!({"limits": limits}));
        assert!(
            answer.status == 400 && answer.json["code"].is_string(),
            "{limits}: {}",
            answer.text
        );
    }
    // A tenant may lower a host-protecting limit, never raise it.
    let raised = submit(json!({"limits": {
        "max_log_bytes": 1u64 << 30,
        "max_cpu_ms": 3_600_000,
        "tools": {"max_tool_time_ms": 86_400_000u64}
    }}));
    assert_error(&raised, 400, "invalid_limits");
    for name in [
        "max_log_bytes (at most 1048576)",
        "max_cpu_ms (at most 60000)",
        "tools.max_tool_time_ms (at most 600000)",
    ] {
        assert!(raised.text.contains(name), "{name}: {}", raised.text);
    }
    let lowered =
        submit(json!({"limits": {"max_log_bytes": 4096, "tools": {"max_tool_time_ms": 1000}}}));
    assert_eq!(lowered.status, 201, "{}", lowered.text);
    // A budget the plan exceeds is refused before anything runs, with the plan.
    let over = submit(json!({"budget_tokens": 10}));
    assert_error(&over, 422, "over_budget");
    assert_eq!(over.json["plan"]["agents"], 1, "{}", over.text);
    assert_error(&api.get("/v1/runs?status=exploded"), 400, "invalid_query");
    assert_error(&api.get("/v1/runs?limt=3"), 400, "invalid_query");
    assert_error(
        &api.get(&format!("/v1/runs/{id}/agents/first")),
        400,
        "invalid",
    );
    assert_error(&api.get("/v1/nothing-here"), 404, "not_found");

    // A root that went missing is refused without quoting the operator's path.
    let gone = tempfile::tempdir().unwrap();
    let gone_path = gone.path().display().to_string();
    let roots = tenant_with_token(
        data.path(),
        "roots",
        &["--root", &format!("gone={gone_path}")],
    );
    drop(gone);
    let roots = server.client(&roots);
    let hash_roots = roots.upload_script("fanout.js", FANOUT);
    let missing = roots.post(
        "/v1/runs",
        &json!({"workflow": hash_roots, "root": "gone", "args": {"n": 1}}),
    );
    assert_error(&missing, 400, "invalid");
    assert!(!missing.text.contains(&gone_path), "{}", missing.text);

    // Nothing already stored was lost.
    let after = api.wait(&id);
    assert_eq!(after, before);
    assert_eq!(api.get(&format!("/v1/runs/{id}/result")).json["result"], 2);
}

/// (queued, started, finished) of each call of run `id`, in ms since the epoch.
fn call_times(api: &Api, id: &str) -> Vec<(i64, i64, i64)> {
    let agents = api.get(&format!("/v1/runs/{id}/agents")).json;
    agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let at = |key: &str| a[key].as_i64().unwrap_or(i64::MAX);
            (at("queued_ms"), at("started_ms"), at("finished_ms"))
        })
        .collect()
}

/// The largest number of calls of `runs` in flight at once, from their recorded times.
fn peak_overlap(api: &Api, runs: &[&str]) -> usize {
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for id in runs {
        for (_, started, finished) in call_times(api, id) {
            edges.push((started, 1));
            edges.push((finished, -1));
        }
    }
    // At equal times, a call that ends frees its slot before the next one takes it.
    edges.sort();
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, delta) in edges {
        now += delta;
        peak = peak.max(now);
    }
    peak as usize
}

#[test]
fn tenant_quotas_are_enforced_on_the_host() {
    let data = tempfile::tempdir().unwrap();
    let token = tenant_with_token(
        data.path(),
        "small",
        &[
            "--runs",
            "1",
            "--queued-runs",
            "1",
            "--agents-per-run",
            "10",
            "--budget-per-run",
            "100000",
        ],
    );
    let pair = tenant_with_token(
        data.path(),
        "pair",
        &["--runs", "2", "--agents-in-flight", "2"],
    );
    let daily = tenant_with_token(data.path(), "daily", &["--tokens-per-day", "6000"]);
    let monthly = tenant_with_token(data.path(), "monthly", &["--tokens-per-month", "6000"]);
    let server = TestServer::start(data.path(), &[], &[]);
    let api = server.client(&token);
    let hash = api.upload_script("fanout.js", FANOUT);

    let over = api.post(
        "/v1/runs",
        &json!({"workflow": hash, "limits": {"max_agents": 11}}),
    );
    assert_error(&over, 429, "quota_exceeded");
    assert_eq!(over.json["quota"], "agents_per_run");
    assert_eq!(
        (over.json["used"].clone(), over.json["limit"].clone()),
        (json!(11), json!(10))
    );
    let over = api.post(
        "/v1/runs",
        &json!({"workflow": hash, "budget_tokens": 100_001}),
    );
    assert_error(&over, 429, "quota_exceeded");
    assert_eq!(over.json["quota"], "budget_per_run");
    // A run may not start more agents than the quota, asked or not.
    let capped = api.submit(&json!({"workflow": hash, "args": {"n": 12}}));
    let detail = api.wait(&capped);
    assert_eq!(detail["counts"]["agents"], 10, "{detail}");

    // One run at a time, one in the queue, the next refused; the queued one starts when the
    // first ends.
    let first = api.submit(&json!({"workflow": hash, "args": {"n": 4}, "sim_latency_ms": 300}));
    // A dry run (a plan, or a budget check) takes a run slot too, and never queues for one.
    for (url, body) in [
        (
            "/v1/runs?plan=true",
            json!({"workflow": hash, "args": {"n": 1}}),
        ),
        (
            "/v1/runs",
            json!({"workflow": hash, "args": {"n": 1}, "budget_tokens": 50_000}),
        ),
    ] {
        let dry = api.post(url, &body);
        assert_error(&dry, 429, "quota_exceeded");
        assert_eq!(dry.json["quota"], "runs", "{}", dry.text);
        assert!(dry.text.contains("needs a free run slot"), "{}", dry.text);
    }
    let second = api.submit(&json!({"workflow": hash, "args": {"n": 1}}));
    assert_eq!(
        api.get(&format!("/v1/runs/{second}")).json["status"],
        "queued"
    );
    let third = api.post("/v1/runs", &json!({"workflow": hash, "args": {"n": 1}}));
    assert_error(&third, 429, "quota_exceeded");
    assert_eq!(third.json["quota"], "queued_runs");
    assert_eq!(
        api.get("/v1/usage").json["quotas"]["queued_runs"]["used"],
        1
    );
    assert_eq!(api.wait(&first)["status"], "succeeded");
    assert_eq!(api.wait(&second)["status"], "succeeded");

    // Agents in flight are counted across all of a tenant's runs.
    let pair = server.client(&pair);
    let hash = pair.upload_script("fanout.js", FANOUT);
    let runs: Vec<String> = (0..2)
        .map(|_| pair.submit(&json!({"workflow": hash, "args": {"n": 6}, "sim_latency_ms": 60})))
        .collect();
    for id in &runs {
        assert_eq!(pair.wait(id)["status"], "succeeded");
    }
    let peak = peak_overlap(&pair, &[&runs[0], &runs[1]]);
    assert!(peak <= 2, "{peak} agents were in flight at once");

    // Tokens per day and per month.
    token_quota_holds(&server.client(&daily), "tokens_per_day");
    token_quota_holds(&server.client(&monthly), "tokens_per_month");
}

/// Racing runs never overshoot a token quota; a call that does not fit fails with the quota's
/// name; once it is used up, new runs are refused up front with when it frees.
fn token_quota_holds(daily: &Api, quota: &str) {
    let hash = daily.upload_script("fanout.js", FANOUT);
    let runs: Vec<String> = (0..3)
        .map(|_| {
            daily.submit(&json!({
                "workflow": hash,
                "args": {"n": 40, "maxTokens": 64},
                "sim_latency_ms": 50,
            }))
        })
        .collect();
    let mut quota_failures = 0;
    for id in &runs {
        daily.wait(id);
        let agents = daily.get(&format!("/v1/runs/{id}/agents")).json;
        quota_failures += agents["agents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| {
                a["error"]
                    .as_str()
                    .is_some_and(|e| e.contains(&format!("{quota} quota")))
            })
            .count();
    }
    assert!(quota_failures > 0, "no call was refused by {quota}");
    let usage = daily.get("/v1/usage").json;
    let used = usage["quotas"][quota]["used"].as_u64().unwrap();
    assert!(used <= 6000 && used > 0, "{usage}");
    let spent: u64 = runs
        .iter()
        .map(|id| {
            daily.get(&format!("/v1/runs/{id}")).json["tokens"]["total"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(spent, used);
    // One call at a time uses up what the racing runs left; then no call fits, and a new run
    // is refused up front.
    let rest = daily.post(
        "/v1/runs",
        &json!({"workflow": hash, "args": {"n": 40, "maxTokens": 64}, "limits": {"max_concurrent": 1}}),
    );
    if rest.status == 201 {
        daily.wait(rest.json["id"].as_str().unwrap());
    }
    let used = daily.get("/v1/usage").json["quotas"][quota]["used"]
        .as_u64()
        .unwrap();
    assert!(used <= 6000, "{used}");
    let refused = daily.post("/v1/runs", &json!({"workflow": hash, "args": {"n": 1}}));
    assert_error(&refused, 429, "quota_exceeded");
    assert_eq!(refused.json["quota"], quota);
    assert!(refused.text.contains("00:00 UTC"), "{}", refused.text);
}

#[test]
fn one_tenants_queue_does_not_starve_another() {
    let data = tempfile::tempdir().unwrap();
    let busy = tenant_with_token(data.path(), "busy", &["--agents-in-flight", "1000"]);
    let quiet = tenant_with_token(data.path(), "quiet", &[]);
    let server = TestServer::start(data.path(), &["--max-agents-in-flight", "4"], &[]);
    let (a, b) = (server.client(&busy), server.client(&quiet));
    let hash_a = a.upload_script("fanout.js", FANOUT);
    let hash_b = b.upload_script("fanout.js", FANOUT);
    let long = a.submit(&json!({
        "workflow": hash_a,
        "args": {"n": 300},
        "limits": {"max_concurrent": 300},
        "sim_latency_ms": 50,
    }));
    wait_until("the busy tenant's queue to fill", || {
        a.get(&format!("/v1/runs/{long}")).json["counts"]["done"]
            .as_u64()
            .unwrap_or(0)
            >= 8
    });
    let short = b.submit(&json!({"workflow": hash_b, "args": {"n": 1}, "sim_latency_ms": 50}));
    assert_eq!(b.wait(&short)["status"], "succeeded");
    let mine = call_times(&b, &short);
    let (queued, started) = (mine[0].0, mine[0].1);
    let theirs = call_times(&a, &long);
    let overtook = theirs
        .iter()
        .filter(|(_, s, _)| *s > queued && *s < started)
        .count();
    // Within one turnover of the 4 slots, not behind the other tenant's hundreds.
    assert!(
        overtook <= 4,
        "{overtook} of the busy tenant's calls started first"
    );
    let waiting = theirs.iter().filter(|(_, s, _)| *s > started).count();
    assert!(
        waiting > 100,
        "the busy tenant's queue had drained ({waiting} left)"
    );
    a.post(&format!("/v1/runs/{long}/stop"), &json!({}));
    assert_eq!(a.wait(&long)["status"], "stopped");
}

#[test]
fn health_metrics_and_the_openapi_document() {
    let data = tempfile::tempdir().unwrap();
    let token = tenant_with_token(data.path(), "acme", &[]);
    let server = TestServer::start(data.path(), &[], &[]);
    let api = server.client(&token);
    let anonymous = Api::new(&server.url, None);
    assert_eq!(anonymous.get("/healthz").status, 200);
    assert_eq!(anonymous.get("/readyz").status, 200);
    let hash = api.upload_script("fanout.js", FANOUT);
    let id = api.submit(&json!({"workflow": hash, "args": {"n": 3}}));
    api.wait(&id);

    let metrics = anonymous.get("/metrics").text;
    for line in [
        "corral_runs{state=\"succeeded\"} 1",
        "corral_slots 64",
        "corral_agents_in_flight{tenant=\"acme\"} 0",
        "corral_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/runs\",status=\"201\"} 1",
    ] {
        assert!(metrics.contains(line), "no `{line}` in:\n{metrics}");
    }
    assert!(metrics.contains("corral_tokens_total{tenant=\"acme\",kind=\"input\"}"));

    // The document names exactly the routes the server has, and each answers.
    let document = anonymous.get("/v1/openapi.json");
    assert_eq!(document.status, 200);
    let paths = document.json["paths"].as_object().expect("paths");
    let documented: HashSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, methods)| {
            methods
                .as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let routes: HashSet<(String, String)> = corral_server::ROUTES
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(documented, routes);
    for (method, path) in &routes {
        let path = path
            .replace("{hash}", &hash)
            .replace("{id}", &id)
            .replace("{n}", "1");
        let answer = match method.as_str() {
            "GET" if path.ends_with("/events") => {
                assert!(!api.events(&id, None, 1).is_empty());
                continue;
            }
            "GET" => api.get(&path),
            "PUT" => api.send(
                "PUT",
                &path,
                Some("application/javascript"),
                Some(FANOUT.into()),
            ),
            _ => api.post(&path, &json!({})),
        };
        assert!(
            answer.status != 405 && answer.json["hint"] != "see /v1/openapi.json for the API",
            "{method} {path}: {}",
            answer.text
        );
    }
}

/// The `fan-out call N` prompts the fake provider received, with how often each came.
fn prompt_counts(fake: &FakeLlm) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for request in fake.received() {
        let body = request.body.to_string();
        let Some(at) = body.find("fan-out call ") else {
            continue;
        };
        let n: u64 = body[at + "fan-out call ".len()..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap();
        *counts.entry(n).or_default() += 1;
    }
    counts
}

/// Prompts whose calls the journal recorded as completed.
fn completed_prompts(data: &Path, id: &str) -> HashSet<u64> {
    use corral_store::RunStore;
    let journal = corral_store::Journal::open(&data.join("journal.db")).unwrap();
    journal
        .run_detail(id)
        .unwrap()
        .calls
        .iter()
        .filter(|call| call.status == corral_store::CallStatus::Ok)
        .filter_map(|call| call.label.as_deref()?.strip_prefix("call ")?.parse().ok())
        .collect()
}

fn restart_without_paying_twice(kill: bool) {
    let fake = FakeLlm::start(Protocol::Anthropic, Some("test-key"));
    fake.set_latency(Duration::from_millis(60));
    let env = [
        ("ANTHROPIC_BASE_URL", fake.url()),
        ("ANTHROPIC_API_KEY", "test-key".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let data = tempfile::tempdir().unwrap();
    let token = tenant_with_token(data.path(), "acme", &["--provider", "anthropic"]);
    let mut server = TestServer::start(data.path(), &["--shutdown-grace", "20s"], &env);
    let api = server.client(&token);
    let hash = api.upload_script("fanout.js", FANOUT);
    let n = 60;
    let id = api.submit(&json!({
        "workflow": hash,
        "args": {"n": n},
        "provider": "anthropic",
        "limits": {"max_concurrent": 6},
    }));
    wait_until("a third of the calls", || {
        api.get(&format!("/v1/runs/{id}")).json["counts"]["done"]
            .as_u64()
            .unwrap_or(0)
            >= n / 3
    });
    if kill {
        server.kill9();
    } else {
        let status = server.terminate();
        assert!(status.success(), "the server exited with {status}");
    }
    let completed = completed_prompts(data.path(), &id);
    assert!(
        completed.len() < n as usize,
        "the run finished before the stop"
    );
    let sent_before = prompt_counts(&fake);
    if !kill {
        // SIGTERM: calls in flight got the grace to finish, so every call sent was journaled.
        let sent: HashSet<u64> = sent_before.keys().copied().collect();
        assert_eq!(
            sent, completed,
            "after SIGTERM, a call was sent but not journaled"
        );
    }

    let server = TestServer::start(data.path(), &[], &env);
    assert!(
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("resumed 1 interrupted run")),
        "{:?}",
        server.log.lock().unwrap()
    );
    let api = server.client(&token);
    let detail = api.wait(&id);
    assert_eq!(detail["status"], "succeeded", "{detail}");
    assert_eq!(api.get(&format!("/v1/runs/{id}/result")).json["result"], n);
    let counts = prompt_counts(&fake);
    for prompt in &completed {
        assert_eq!(counts[prompt], 1, "completed call {prompt} was sent again");
    }
    assert_eq!(counts.len(), n as usize);
    // Only calls in flight at a kill -9 may be sent twice, each at most once more.
    let resent: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(resent.iter().all(|(_, c)| **c == 2), "{resent:?}");
    assert!(resent.len() <= if kill { 6 } else { 0 }, "{resent:?}");
    // The journal's totals count every call once.
    assert_eq!(detail["counts"]["agents"], n);
    // The provider's key is the operator's: no answer carries it.
    for path in [
        format!("/v1/runs/{id}"),
        format!("/v1/runs/{id}/agents"),
        format!("/v1/runs/{id}/agents/1"),
        "/v1/usage".to_string(),
    ] {
        assert!(
            !api.get(&path).text.contains("test-key"),
            "{path} leaks the key"
        );
    }
    let events = api.events(&id, None, 100_000);
    assert!(!format!("{events:?}").contains("test-key"));
}

#[test]
fn sigterm_then_restart_resumes_runs_without_paying_again() {
    restart_without_paying_twice(false);
}

#[test]
fn kill_9_mid_fan_out_then_restart_resumes_without_paying_again() {
    restart_without_paying_twice(true);
}

#[test]
fn the_run_changes_stream_carries_only_the_callers_runs() {
    let data = tempfile::tempdir().unwrap();
    let acme = tenant_with_token(data.path(), "acme", &[]);
    let globex = tenant_with_token(data.path(), "globex", &[]);
    let server = TestServer::start(data.path(), &[], &[]);
    let (a, b) = (server.client(&acme), server.client(&globex));
    let (url, token) = (server.url.clone(), globex.clone());
    // Globex subscribes; then acme runs, then globex: its stream must show only its own run.
    let (subscribed, connected) = std::sync::mpsc::channel();
    let listening = std::thread::spawn(move || {
        Api::new(&url, Some(&token)).stream_connected("/v1/events", None, 2, move || {
            subscribed.send(()).unwrap();
        })
    });
    connected.recv_timeout(Duration::from_secs(60)).unwrap();
    let theirs = a.submit(&json!({"script": FANOUT, "args": {"n": 2}}));
    a.wait(&theirs);
    let own = b.submit(&json!({"script": FANOUT, "args": {"n": 1}}));
    b.wait(&own);
    let seen = listening.join().unwrap();
    let changes: Vec<(&str, &str)> = seen
        .iter()
        .map(|(_, e)| (e["id"].as_str().unwrap(), e["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        changes,
        [(own.as_str(), "running"), (own.as_str(), "succeeded")],
        "{seen:?}"
    );
    assert!(seen.iter().all(|(_, e)| e["event"] == "run_changed"));
    // A missing token is refused like on every /v1 endpoint.
    assert_eq!(Api::new(&server.url, None).get("/v1/events").status, 401);
}

/// Stages `args.files` (`{path: text}`) with `tools.write`, and answers how many it staged.
const WRITE: &str = "export const meta = { name: 'write', description: 'stages files' }
for (const [path, text] of Object.entries(args.files)) tools.write(path, text)
return tools.changes().length
";

/// The SHA-256 (hex) of a token, as `corral.toml` declares it.
fn token_sha256(secret: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Submits WRITE over the tenant's root `repo` with every path writable, and waits for it.
fn staged_run(api: &Api, files: Value) -> String {
    let id = api.submit(&json!({
        "script": WRITE,
        "script_name": "write.js",
        "root": "repo",
        "args": {"files": files},
        "limits": {"allow_write": ["**"]},
    }));
    let detail = api.wait(&id);
    assert_eq!(detail["status"], "succeeded", "{detail}");
    id
}

#[test]
fn a_tenants_run_stages_writes_that_only_a_writer_applies() {
    let data = tempfile::tempdir().unwrap();
    let repo = fixture_repo();
    let root = repo.path();
    let token = tenant_with_token(
        data.path(),
        "acme",
        &["--root", &format!("repo={}", root.display())],
    );
    let reader = corral_ok(data.path(), &["tokens", "create", "acme", "--read-only"])
        .trim()
        .to_string();
    let other = tenant_with_token(data.path(), "globex", &[]);
    let server = TestServer::start(data.path(), &[], &[]);
    let (api, read_only, globex) = (
        server.client(&token),
        server.client(&reader),
        server.client(&other),
    );

    let text = "export const answer = 42\n";
    let id = staged_run(&api, json!({"src/answer.js": text}));
    assert_eq!(api.get(&format!("/v1/runs/{id}/result")).json["result"], 1);
    assert!(!root.join("src/answer.js").exists(), "a run only stages");

    // Anyone of the tenant may review it; nobody else may see it.
    let diff = read_only.get(&format!("/v1/runs/{id}/diff"));
    assert_eq!(diff.status, 200, "{}", diff.text);
    assert!(
        diff.content_type.starts_with("text/x-diff"),
        "{}",
        diff.content_type
    );
    assert!(
        diff.text.contains(
            "--- /dev/null\n+++ b/src/answer.js\n@@ -0,0 +1 @@\n+export const answer = 42\n"
        ),
        "{}",
        diff.text
    );
    assert_error(
        &globex.get(&format!("/v1/runs/{id}/diff")),
        404,
        "not_found",
    );
    assert_error(
        &globex.post(&format!("/v1/runs/{id}/apply"), &json!({})),
        404,
        "not_found",
    );

    // Only a writer applies, only what the run staged, and all of it by default.
    let apply = format!("/v1/runs/{id}/apply");
    assert_error(&read_only.post(&apply, &json!({})), 403, "read_only");
    let unknown = api.post(&apply, &json!({"paths": ["src/other.js"]}));
    assert_error(&unknown, 400, "not_staged");
    assert!(unknown.text.contains("src/answer.js"), "{}", unknown.text);
    assert_error(
        &api.post(&apply, &json!({"path": ["src/answer.js"]})),
        400,
        "invalid_json",
    );
    assert!(!root.join("src/answer.js").exists());
    let applied = api.send("POST", &apply, None, None);
    assert_eq!(applied.status, 200, "{}", applied.text);
    assert_eq!(
        applied.json,
        json!({"applied": ["src/answer.js"], "already": []})
    );
    assert_eq!(
        std::fs::read_to_string(root.join("src/answer.js")).unwrap(),
        text
    );
    // Applying again writes nothing, and the diff is now empty.
    let again = api.post(&apply, &json!({"paths": ["src/answer.js"]}));
    assert_eq!(
        again.json,
        json!({"applied": [], "already": ["src/answer.js"]}),
        "{}",
        again.text
    );
    assert_eq!(api.get(&format!("/v1/runs/{id}/diff")).text, "");

    // The root changed since a run staged a file: nothing of it is applied, the file is named,
    // and the other paths still apply.
    let math = root.join("src/math.rs");
    let id = staged_run(
        &api,
        json!({"src/math.rs": "pub fn add() {}\n", "src/extra.js": "1\n"}),
    );
    std::fs::write(&math, "// changed by hand\n").unwrap();
    let apply = format!("/v1/runs/{id}/apply");
    let conflict = api.post(&apply, &json!({}));
    assert_error(&conflict, 409, "changes_conflict");
    assert!(conflict.text.contains("src/math.rs"), "{}", conflict.text);
    assert_eq!(conflict.json["conflicts"], json!(["src/math.rs"]));
    assert_eq!(
        std::fs::read_to_string(&math).unwrap(),
        "// changed by hand\n"
    );
    assert!(
        !root.join("src/extra.js").exists(),
        "a refused apply writes nothing"
    );
    let rest = api.post(&apply, &json!({"paths": ["src/extra.js"]}));
    assert_eq!(
        rest.json,
        json!({"applied": ["src/extra.js"], "already": []}),
        "{}",
        rest.text
    );

    // A run that staged nothing has nothing to apply; one still running has nothing recorded.
    let plain = api.submit(&json!({"script": "return 1", "root": "repo"}));
    api.wait(&plain);
    let nothing = api.post(&format!("/v1/runs/{plain}/apply"), &json!({}));
    assert_error(&nothing, 400, "invalid");
    assert!(
        nothing.text.contains("staged no changes"),
        "{}",
        nothing.text
    );
    let slow = api.submit(&json!({
        "script": "await agent('think'); tools.write('late.txt', 'x'); return 1",
        "root": "repo",
        "limits": {"allow_write": ["**"]},
        "sim_latency_ms": 60_000,
    }));
    assert_error(
        &api.get(&format!("/v1/runs/{slow}/diff")),
        409,
        "not_finished",
    );
    assert_error(
        &api.post(&format!("/v1/runs/{slow}/apply"), &json!({})),
        409,
        "not_finished",
    );
    api.post(&format!("/v1/runs/{slow}/stop"), &json!({}));
    assert_eq!(api.wait(&slow)["status"], "stopped");
}

#[test]
fn commands_need_the_tenants_commands_setting() {
    let data = tempfile::tempdir().unwrap();
    let repo = fixture_repo();
    let root = format!("repo={}", repo.path().display());
    let plain = tenant_with_token(data.path(), "plain", &["--root", &root]);
    let secret = "crl_builder_0123456789abcdef";
    let config = data.path().join("corral.toml");
    let declare = |commands: &str| {
        std::fs::write(
            &config,
            format!(
                "[tenants.builder]\n{commands}\ntokens = [{{ sha256 = \"{}\" }}]\n[tenants.builder.roots]\nrepo = \"{}\"\n",
                token_sha256(secret),
                repo.path().display()
            ),
        )
        .unwrap();
    };
    declare("commands = [\"sh\"]");
    let config_flag = ["--config", config.to_str().unwrap()];
    let mut server = TestServer::start(data.path(), &config_flag, &[]);
    let script = "const out = tools.run('sh', ['-c', 'echo jailed']); return out.stdout";
    let run = |commands: Value| json!({"script": script, "root": "repo", "limits": {"allow_run": commands}});

    // A tenant without the setting may run no command, nor plan a run that would.
    let api = server.client(&plain);
    for path in ["/v1/runs", "/v1/runs?plan=true"] {
        let refused = api.post(path, &run(json!(["sh"])));
        assert_error(&refused, 400, "command_not_allowed");
        let message = refused.json["message"].as_str().unwrap();
        for part in ["allow_run asks for sh", "`commands`", "[tenants.plain]"] {
            assert!(message.contains(part), "{part}: {message}");
        }
        assert_eq!(refused.json["commands"], json!(["sh"]));
    }
    assert_eq!(api.get("/v1/runs").json["runs"], json!([]));

    // With it, the commands it lists run (in the jail), and only those.
    let builder = server.client(secret);
    let id = builder.submit(&run(json!(["sh"])));
    let detail = builder.wait(&id);
    assert_eq!(detail["status"], "succeeded", "{detail}");
    assert_eq!(
        builder.get(&format!("/v1/runs/{id}/result")).json["result"],
        "jailed\n"
    );
    let more = builder.post("/v1/runs", &run(json!(["sh", "bash"])));
    assert_error(&more, 400, "command_not_allowed");
    assert_eq!(more.json["commands"], json!(["bash"]), "{}", more.text);
    assert!(more.text.contains("allows sh"), "{}", more.text);
    drop(builder);

    // The setting is checked again when a run resumes: taken away, its runs cannot run again.
    let status = server.terminate();
    assert!(status.success(), "the server exited with {status}");
    declare("");
    let server = TestServer::start(data.path(), &config_flag, &[]);
    let builder = server.client(secret);
    let resumed = builder.post(&format!("/v1/runs/{id}/resume"), &json!({}));
    assert_error(&resumed, 400, "command_not_allowed");
    assert!(resumed.text.contains("allows none"), "{}", resumed.text);
}
