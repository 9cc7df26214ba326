//! The dashboard in a real headless Chromium (Debian's, over WebDriver) against a real
//! `corral serve`: sign in, plan a run on the approval card and check its numbers against
//! `?plan=true`, approve, watch a phase bar advance while the run is live, read an agent's
//! transcript, stop a run, see runs appear live, bad input next to its field with nothing typed
//! lost, the page loading nothing from elsewhere, a narrow window, and a second tenant who sees
//! none of the first one's runs. A failing test leaves a screenshot of the page in
//! `target/tmp/dashboard/`.

use std::path::PathBuf;

use serde_json::{Value, json};
use tests::browser::Browser;
use tests::fake_llm::{FakeLlm, Protocol, Reply};
use tests::server::{Api, TestServer, tenant_with_token};
use tests::support::fixture_repo;

/// Two phases: a fan-out of `n` scans, then one judge.
const SCRIPT: &str = "export const meta = { name: 'dash', description: 'scan then judge' }
phase('Scan')
const found = await parallel(Array.from({ length: args.n }, (_, i) => () =>
  agent(`scan file ${i}`, { label: `scan ${i}`, maxTokens: 256 })))
phase('Judge')
await agent(`judge ${found.length} findings`, { label: 'judge', maxTokens: 256 })
return { scanned: found.length }
";

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard")
}

/// The numbers the phase `name` shows, as (done, running, queued, failed).
fn phase_counts(browser: &Browser, name: &str) -> Option<(u64, u64, u64, u64)> {
    let value = browser.execute(
        "const el = document.querySelector(`.phase[data-phase=\"${arguments[0]}\"]`);
         if (!el) return null;
         return ['done', 'running', 'queued', 'failed'].map((k) => Number(el.dataset[k]));",
        json!([name]),
    );
    let all = value.as_array()?;
    let n = |i: usize| all.get(i).and_then(Value::as_u64).unwrap_or(0);
    Some((n(0), n(1), n(2), n(3)))
}

fn sign_in(browser: &Browser, server: &TestServer, token: &str, tenant: &str) {
    browser.goto(&format!("{}/", server.url));
    browser.fill("#token", token);
    browser.click_css("#sign-in");
    browser.wait_text("#tenant", |t| t == tenant);
}

fn run_id_in_url(browser: &Browser) -> Option<String> {
    let url = browser.url();
    let rest = url.split("#/runs/").nth(1)?;
    let id = rest.split('/').next()?;
    (!id.is_empty()).then(|| id.to_string())
}

#[test]
fn plan_approve_watch_transcript_and_stop_in_a_browser() {
    let data = tempfile::tempdir().unwrap();
    // Four slots: a 40-wide fan-out at 500 ms takes ten turnovers, long enough to watch even on
    // a loaded machine.
    let token = tenant_with_token(data.path(), "acme", &["--agents-in-flight", "4"]);
    let server = TestServer::start(data.path(), &[], &[]);
    let api = server.client(&token);
    let browser = Browser::start("plan-approve", &screenshots(), 1280, 800);
    sign_in(&browser, &server, &token, "acme");

    // The page and everything it loaded came from the server, nothing from elsewhere.
    let origins = browser.execute(
        "return performance.getEntriesByType('resource').map((e) => new URL(e.name).origin)
           .concat([location.origin]);",
        json!([]),
    );
    for origin in origins.as_array().unwrap() {
        assert_eq!(origin.as_str(), Some(server.url.as_str()), "{origins}");
    }

    // The plan card shows what `?plan=true` answers for the same request.
    browser.click_css("#nav-new");
    browser.fill("#new-script", SCRIPT);
    browser.fill("#new-args", r#"{"n": 40}"#);
    browser.fill("#new-sim-latency", "500");
    browser.click_css("#plan-button");
    browser.find("#plan-card");
    let request = json!({"script": SCRIPT, "script_name": "script.js", "args": {"n": 40}, "sim_latency_ms": 500});
    let planned = api.post("/v1/runs?plan=true", &request);
    assert_eq!(planned.status, 200, "{}", planned.text);
    let plan = &planned.json["plan"];
    assert_eq!(plan["agents"], 41);
    browser.wait("the plan card's numbers", || {
        browser.attr("#plan-agents", "data-value").as_deref() == Some("41")
    });
    assert_eq!(
        browser.attr("#plan-tokens", "data-value"),
        Some(plan["tokens"].to_string())
    );
    let cost: f64 = browser
        .attr("#plan-cost", "data-value")
        .and_then(|v| v.parse().ok())
        .expect("a cost");
    assert!((cost - plan["cost"].as_f64().unwrap()).abs() < 1e-9);
    for phase in ["Scan", "Judge"] {
        assert_eq!(
            browser
                .find_all(&format!("#plan-card tr[data-plan-phase=\"{phase}\"]"))
                .len(),
            1,
            "no plan row for {phase}"
        );
    }
    assert!(browser.text("#plan-agents").contains("41"));

    // Approve: the run starts and the Scan bar advances while it is live.
    browser.click_css("#approve");
    browser.wait("the run page", || run_id_in_url(&browser).is_some());
    let id = run_id_in_url(&browser).unwrap();
    browser.wait_text("#run-status", |s| s == "running");
    let mut seen = Vec::new();
    browser.wait("the Scan bar part way", || {
        if let Some((done, ..)) = phase_counts(&browser, "Scan") {
            if seen.last() != Some(&done) {
                seen.push(done);
            }
            return done > 0 && done < 40;
        }
        false
    });
    browser.wait_text("#run-status", |s| s == "succeeded");
    assert_eq!(phase_counts(&browser, "Scan"), Some((40, 0, 0, 0)));
    assert_eq!(phase_counts(&browser, "Judge"), Some((1, 0, 0, 0)));
    assert_eq!(browser.find_all("#agents-table tr[data-agent]").len(), 41);
    assert!(browser.find_all("#timeline rect").len() >= 41);
    assert!(browser.text("#script").contains("phase('Judge')"));
    // Tall enough for the phases, the timeline and the spend chart in one picture.
    browser.resize(1280, 1500);
    let shot = browser.save_screenshot("run-page.png");
    browser.resize(1280, 800);
    if std::env::var_os("CORRAL_UPDATE_SCREENSHOTS").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../engine/server/docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&shot, docs.join("run-page.png")).unwrap();
    }

    // An agent's page: its prompt and the whole transcript, turn by turn.
    browser.click_css("#agents-table tr[data-agent=\"41\"] a");
    browser.wait_text("#agent-prompt", |t| t.contains("judge 40 findings"));
    let agent = api.get(&format!("/v1/runs/{id}/agents/41"));
    let turns = agent.json["transcript"]
        .as_array()
        .map_or(0, Vec::len)
        .max(1);
    browser.wait("the transcript's turns", || {
        browser.find_all("#transcript .turn").len() >= turns
    });

    // Stop: a long run, stopped from its page, shows stopped.
    let long = api.submit(&json!({"script": SCRIPT, "args": {"n": 400}, "sim_latency_ms": 500}));
    browser.goto(&format!("{}/#/runs/{long}", server.url));
    browser.wait_text("#run-status", |s| s == "running");
    browser.click_css("#stop-run");
    browser.wait_text("#run-status", |s| s == "stopped");
    assert_eq!(api.wait(&long)["status"], "stopped");

    // The runs page: both runs, and one submitted meanwhile appears without a reload.
    browser.click_css("#nav-runs");
    for run in [&id, &long] {
        browser.find(&format!("#runs-table tr[data-run-id=\"{run}\"]"));
    }
    let before = browser.url();
    let live = api.submit(&json!({"script": SCRIPT, "args": {"n": 2}}));
    browser.find(&format!(
        "#runs-table tr[data-run-id=\"{live}\"][data-status=\"succeeded\"]"
    ));
    assert_eq!(browser.url(), before);

    // Usage: the tokens spent today, against the quota.
    browser.click_css("#nav-usage");
    browser.find("#usage-table tr[data-quota=\"tokens_per_day\"]");
    let usage = api.get("/v1/usage");
    assert!(
        usage.json["quotas"]["tokens_per_day"]["used"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn bad_input_shows_next_to_its_field_and_nothing_typed_is_lost() {
    let data = tempfile::tempdir().unwrap();
    let token = tenant_with_token(data.path(), "acme", &["--runs", "1", "--queued-runs", "0"]);
    let server = TestServer::start(data.path(), &[], &[]);
    let api = server.client(&token);
    let browser = Browser::start("bad-input", &screenshots(), 1280, 800);
    sign_in(&browser, &server, &token, "acme");
    browser.click_css("#nav-new");

    // Arguments that are not JSON: said next to the field, the script kept.
    browser.fill("#new-script", SCRIPT);
    browser.fill("#new-args", "{n: 3");
    browser.click_css("#plan-button");
    let message = browser.wait_text("#new-args-error", |t| !t.is_empty());
    assert!(message.to_lowercase().contains("json"), "{message}");
    assert_eq!(
        browser.attr("#new-script", "value").as_deref(),
        Some(SCRIPT)
    );

    // A script that fails its checks: the server's file:line:col message next to the script.
    let broken = "export const meta = { name: 'x', description: 'y' }\nconst a = (;\n";
    browser.fill("#new-args", "");
    browser.fill("#new-script", broken);
    browser.click_css("#plan-button");
    let message = browser.wait_text("#new-script-error", |t| !t.is_empty());
    let api_message = api.post("/v1/runs?plan=true", &json!({"script": broken}));
    assert_eq!(api_message.status, 422, "{}", api_message.text);
    let expected = api_message.json["message"].as_str().unwrap();
    assert!(message.contains(expected), "{message} lacks {expected}");
    assert!(message.contains(":2:"), "{message}");
    assert_eq!(
        browser.attr("#new-script", "value").as_deref(),
        Some(broken)
    );

    // Over a quota: one run may run at once and it is running, so the plan (a dry run, which
    // takes a run slot) is refused with 429, and the page says which quota and when it frees.
    let slow = api.submit(&json!({"script": SCRIPT, "args": {"n": 400}, "sim_latency_ms": 500}));
    browser.fill("#new-script", SCRIPT);
    browser.fill("#new-args", r#"{"n": 1}"#);
    browser.click_css("#plan-button");
    let message = browser.wait_text("#new-error", |t| !t.is_empty());
    let refused = api.post(
        "/v1/runs?plan=true",
        &json!({"script": SCRIPT, "args": {"n": 1}}),
    );
    assert_eq!(refused.status, 429, "{}", refused.text);
    let expected = refused.json["message"].as_str().unwrap();
    assert!(message.contains(expected), "{message} lacks {expected}");
    assert!(browser.find_all("#plan-card:not([hidden])").is_empty());
    assert_eq!(
        browser.attr("#new-args", "value").as_deref(),
        Some(r#"{"n": 1}"#)
    );
    assert!(browser.url().contains("#/new"), "{}", browser.url());
    api.post(&format!("/v1/runs/{slow}/stop"), &json!({}));
    api.wait(&slow);

    // A reload keeps what was typed.
    browser.goto(&format!("{}/#/new", server.url));
    browser.wait("the form to come back", || {
        browser.attr("#new-args", "value").as_deref() == Some(r#"{"n": 1}"#)
    });

    // A wrong token is refused with the server's message.
    browser.click_css("#sign-out");
    browser.fill("#token", "not-a-token");
    browser.click_css("#sign-in");
    let refused = browser.wait_text("#signin-error", |t| !t.is_empty());
    assert!(refused.contains("token"), "{refused}");
}

#[test]
fn a_second_tenant_sees_none_of_the_first_tenants_runs() {
    let data = tempfile::tempdir().unwrap();
    let acme = tenant_with_token(data.path(), "acme", &[]);
    let beta = tenant_with_token(data.path(), "beta", &[]);
    let server = TestServer::start(data.path(), &[], &[]);
    let theirs = server.client(&acme);
    let id = theirs.submit(&json!({"script": SCRIPT, "args": {"n": 3}}));
    theirs.wait(&id);
    let mine = Api::new(&server.url, Some(&beta));
    let own = mine.submit(&json!({"script": SCRIPT, "args": {"n": 1}}));
    mine.wait(&own);

    // Narrow: the page still works in a phone-sized window.
    let browser = Browser::start("second-tenant", &screenshots(), 420, 800);
    sign_in(&browser, &server, &beta, "beta");
    browser.find(&format!("#runs-table tr[data-run-id=\"{own}\"]"));
    assert_eq!(browser.find_all("#runs-table tr[data-run-id]").len(), 1);
    // (Chromium keeps a window at least 500 pixels wide.) Wide tables scroll inside the page;
    // the page itself does not.
    let widths = browser.execute(
        "return [document.documentElement.scrollWidth, window.innerWidth];",
        json!([]),
    );
    let (page, window) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
    assert!(window <= 520, "the window is {window}px wide");
    assert!(
        page <= window,
        "the page is {page}px wide in a {window}px window"
    );

    // The first tenant's run page answers like an unknown run.
    browser.goto(&format!("{}/#/runs/{id}", server.url));
    browser.wait_text("main", |t| t.contains("no run with id"));
    assert!(browser.find_all("#agents-table tr[data-agent]").is_empty());
    assert!(!browser.text("main").contains("scan file"));

    // Every control is reachable from the keyboard: Tab reaches the nav links.
    browser.goto(&format!("{}/#/runs", server.url));
    browser.find("#runs-table");
    let mut reached = Vec::new();
    for _ in 0..30 {
        browser.press("\u{E004}");
        let id = browser.execute(
            "return document.activeElement && document.activeElement.id;",
            json!([]),
        );
        if let Some(id) = id.as_str() {
            reached.push(id.to_string());
        }
    }
    for control in ["nav-runs", "nav-new", "nav-usage", "sign-out"] {
        assert!(
            reached.iter().any(|r| r == control),
            "Tab never reached #{control}: {reached:?}"
        );
    }
}

#[test]
fn an_agents_page_shows_every_turn_of_its_transcript() {
    // A real multi-turn conversation: the model reads a file through the host's tool, then
    // answers; the page shows the model's tool call, the file the tool returned, and the answer.
    let fake = FakeLlm::start(Protocol::Anthropic, Some("test-key"));
    fake.script([
        Reply::tool("read", json!({"path": "src/math.rs"})),
        Reply::text("add wraps on overflow"),
    ]);
    let env = [
        ("ANTHROPIC_BASE_URL", fake.url()),
        ("ANTHROPIC_API_KEY", "test-key".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let data = tempfile::tempdir().unwrap();
    let repo = fixture_repo();
    let root = format!("repo={}", repo.path().display());
    let token = tenant_with_token(
        data.path(),
        "acme",
        &["--provider", "anthropic", "--root", &root],
    );
    let server = TestServer::start(data.path(), &[], &env);
    let api = server.client(&token);
    let script = "export const meta = { name: 'ask', description: 'one agent with tools' }
return await agent('What does add do? <b>bold?</b>', { label: 'ask', tools: ['read'], maxTokens: 300 })
";
    let id = api.submit(&json!({"script": script, "root": "repo", "provider": "anthropic"}));
    assert_eq!(api.wait(&id)["status"], "succeeded");

    let browser = Browser::start("transcript", &screenshots(), 1280, 800);
    sign_in(&browser, &server, &token, "acme");
    browser.goto(&format!("{}/#/runs/{id}/agents/1", server.url));
    // Markup in a prompt is text, not markup.
    browser.wait_text("#agent-prompt", |t| t.contains("<b>bold?</b>"));
    assert!(browser.find_all("#agent-prompt b").is_empty());
    browser.wait_text("#agent-result", |t| t.contains("add wraps on overflow"));
    let kinds = browser.execute(
        "return [...document.querySelectorAll('#transcript .turn')].map((t) => t.dataset.kind);",
        json!([]),
    );
    let kinds: Vec<&str> = kinds
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for kind in ["tool_use", "tool_result", "text"] {
        assert!(kinds.contains(&kind), "no {kind} turn in {kinds:?}");
    }
    let transcript = browser.text("#transcript");
    assert!(transcript.contains("src/math.rs"), "{transcript}");
    assert!(
        transcript.contains("pub fn add"),
        "the tool's result is missing: {transcript}"
    );
}
