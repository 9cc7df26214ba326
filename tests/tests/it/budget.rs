//! The token budget as a workflow meets it: requests wait for each other instead of starving
//! each other, a call naming no `maxTokens` gets a lower output ceiling instead of a refusal,
//! spent never passes the total, `plan` warns about contention, and a failed agent's tokens are
//! reported where its run's are.

use serde_json::{Value, json};
use tests::fake_llm::{FakeLlm, Protocol, Reply};
use tests::support::{Run, corral, corral_in, js_runtime, result, sim};

async fn js(source: &str, run: Run) -> corral_host::RunReport {
    run.script("budget.js", source).run(&js_runtime()).await
}

/// Three auditors at once, each with a prompt of about 6 KB and no `maxTokens`: one worst case
/// (6 KB of input bound, 8192 output) fits the budget, three at once do not.
const THREE_AUDITORS: &str = "\
const source = 'let x = 1; // a line of the file under audit\\n'.repeat(140)
const audits = await parallel([1, 2, 3].map((i) => () => agent(`Audit file ${i}:\\n${source}`, { label: `audit ${i}` })))
return { done: audits.filter((a) => typeof a === 'string').length, spent: budget.spent() }";

#[tokio::test]
async fn auditors_whose_worst_cases_starve_each_other_all_finish_by_taking_turns() {
    let run = Run::new(Value::Null)
        .provider(sim(20))
        .limits(|l| l.budget_tokens = Some(20_000));
    let report = js(THREE_AUDITORS, run).await;
    let answer = result(&report);
    assert_eq!(answer["done"], 3, "{answer} {:?}", report.agents);
    assert_eq!(report.agents.failed_total(), 0, "{:?}", report.agents);
    assert!(report.spent_tokens <= 20_000);
    assert!(report.largest_request_tokens > 10_000);
}

#[tokio::test]
async fn with_a_budget_below_the_default_ceiling_agents_still_run_until_it_is_spent() {
    // 5000 tokens cannot hold the default 8192 output tokens: the ceiling is lowered instead.
    let run = Run::new(Value::Null).limits(|l| l.budget_tokens = Some(5_000));
    let report = js(
        "const out = []\n\
         for (let i = 0; i < 100; i++) {\n\
           try { await agent('summarise item ' + i); out.push('ok') } catch (e) { out.push(e.code); break }\n\
         }\n\
         return { ok: out.filter((x) => x === 'ok').length, last: out[out.length - 1] }",
        run,
    )
    .await;
    let answer = result(&report);
    assert!(answer["ok"].as_u64().unwrap() >= 5, "{answer}");
    assert_eq!(answer["last"], "budget-exhausted", "{answer}");
    assert!(report.spent_tokens <= 5_000);
    // It ran until what was left could not hold a prompt and the lowest ceiling of 1024.
    assert!(
        report.spent_tokens > 5_000 - 1_024 - 300,
        "{}",
        report.spent_tokens
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_wide_fan_out_under_a_tight_budget_ends_within_it() {
    let run = Run::new(Value::Null)
        .provider(sim(1))
        .limits(|l| l.budget_tokens = Some(60_000));
    let report = js(
        "const out = await parallel(Array.from({ length: 1000 }, (_, i) => () =>\n\
           agent('classify ticket ' + i).then(() => 'ok', (e) => e.code)))\n\
         const count = (kind) => out.filter((x) => x === kind).length\n\
         return { ok: count('ok'), budget: count('budget-exhausted'), spent: budget.spent() }",
        run,
    )
    .await;
    let answer = result(&report);
    let ok = answer["ok"].as_u64().unwrap();
    assert!(ok >= 50, "{answer}");
    assert_eq!(ok + answer["budget"].as_u64().unwrap(), 1000, "{answer}");
    assert!(report.spent_tokens <= 60_000, "{}", report.spent_tokens);
    assert_eq!(report.agents.started, 1000);
}

#[test]
fn plan_warns_when_the_cap_times_the_largest_request_exceeds_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("auditors.js");
    std::fs::write(&script, THREE_AUDITORS).unwrap();
    let plan = |budget: &str| {
        corral()
            .args(["plan", script.to_str().unwrap(), "--budget-tokens", budget])
            .output()
            .unwrap()
    };
    let tight = plan("20000");
    let stderr = String::from_utf8_lossy(&tight.stderr);
    assert!(tight.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: 3 agents at once ×")
            && stderr.contains("is more than the budget of 20000")
            && stderr.contains("about 1 at a time; lower --max-concurrent to 1 or maxTokens"),
        "{stderr}"
    );
    let roomy = plan("1000000");
    let stderr = String::from_utf8_lossy(&roomy.stderr);
    assert!(!stderr.contains("warning"), "{stderr}");
    // The run itself completes under the tight budget.
    let run = corral()
        .args(["run", script.to_str().unwrap(), "--no-journal", "-q"])
        .args(["--budget-tokens", "20000"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("\"done\":3"), "{stdout}");
}

#[test]
fn a_failed_agents_tokens_are_in_its_record_its_phase_and_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeLlm::start(Protocol::OpenAi, None);
    // Two answers that never match the schema: with two attempts, the call fails, billed twice.
    fake.script([
        Reply::submit(json!({"real": "yes"})),
        Reply::submit(json!({"real": "no"})),
    ]);
    std::fs::write(
        dir.path().join("corral.toml"),
        format!(
            "default_provider = \"local\"\n\n[agents]\nschema_attempts = 2\n\n\
             [providers.local]\nkind = \"openai\"\nbase_url = \"{}\"\nmodel = \"local-model\"\n",
            fake.url()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("verify.js"),
        "phase('Verify')\n\
         const schema = { type: 'object', properties: { real: { type: 'boolean' } }, required: ['real'] }\n\
         try { await agent('is it real?', { schema }) } catch (e) { return e.code }\n\
         return 'matched'",
    )
    .unwrap();
    let data = dir.path().join("data");
    let cli = |args: &[&str]| {
        let said = corral_in(dir.path(), &data, &[], args);
        (said.code, said.stdout, said.stderr)
    };
    let (code, stdout, stderr) = cli(&["run", "verify.js", "--events", "events.jsonl"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), "\"schema-mismatch\"", "{stderr}");
    assert_eq!(
        fake.received().len(),
        2,
        "the corral.toml attempts were used"
    );
    let billed_input: u64 = fake
        .received()
        .iter()
        .map(|r| r.usage["prompt_tokens"].as_u64().unwrap())
        .sum();
    let billed_output: u64 = fake
        .received()
        .iter()
        .map(|r| r.usage["completion_tokens"].as_u64().unwrap())
        .sum();
    let billed = billed_input + billed_output;
    assert!(billed_input > 0 && billed_output > 0);

    let events = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    let finished: Vec<Value> = events
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|event| event["event"] == "agent_finished")
        .collect();
    assert_eq!(finished.len(), 1, "{events}");
    let usage = &finished[0]["usage"];
    let total: u64 = [
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
    ]
    .iter()
    .map(|field| usage[field].as_u64().unwrap_or(0))
    .sum();
    assert_eq!(total, billed, "{events}");

    let id = events
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|event| event["event"] == "run_started")
        .and_then(|event| event["run_id"].as_str().map(str::to_string))
        .expect("the run id is in the events");
    let (_, agent, _) = cli(&["runs", "show", &id, "--agent", "1"]);
    assert!(agent.contains("schema-mismatch"), "{agent}");
    assert!(!agent.contains("tokens:  0 in, 0 out"), "{agent}");
    let (_, run, _) = cli(&["runs", "show", &id]);
    let verify = run
        .lines()
        .find(|line| line.contains("Verify"))
        .unwrap_or_else(|| panic!("{run}"));
    assert!(
        verify.contains(&format!(" {billed_input} tok in "))
            && verify.contains(&format!(" {billed_output} out ")),
        "{run}"
    );
    assert!(
        run.contains(&format!("total: 1 agents, {billed} tokens, —")),
        "{run}"
    );
    // The failed call's tokens were paid for at a model without a price: said, not shown as $0.
    assert!(
        run.contains("(local-model has no price in corral.toml"),
        "{run}"
    );
    assert!(!run.contains("$0.0000"), "{run}");
}
