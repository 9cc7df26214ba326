//! A provider's usage or spend limit pauses the run instead of failing every agent; `corral runs
//! resume` continues it later and pays nothing twice. Against the fake servers answering the
//! real providers' spend-limit errors.

use serde_json::Value;
use tests::fake_llm::{Failure, FakeLlm, Protocol, Reply};
use tests::support::corral_in;

const WORKFLOW: &str = "\
phase('Scan')
const first = await agent('first item')
const rest = await parallel([2, 3, 4].map((i) => () => agent(`item ${i}`)))
return { first, rest }";

#[test]
fn a_spend_limit_pauses_the_run_and_resume_continues_it_without_paying_twice() {
    for protocol in [Protocol::Anthropic, Protocol::OpenAi] {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeLlm::start(protocol, None);
        // The first call is answered; then the account's limit is reached.
        fake.script([Reply::text("one"), Reply::Fail(Failure::SpendLimit)]);
        let kind = match protocol {
            Protocol::Anthropic => "anthropic",
            Protocol::OpenAi => "openai",
        };
        std::fs::write(
            dir.path().join("corral.toml"),
            format!(
                "default_provider = \"fake\"\n\n[providers.fake]\nkind = \"{kind}\"\n\
                 base_url = \"{}\"\nmodel = \"fake-model\"\napi_key_env = \"FAKE_KEY\"\n",
                fake.url()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("scan.js"), WORKFLOW).unwrap();
        let data = dir.path().join("data");
        let cli = |args: &[&str]| {
            let said = corral_in(dir.path(), &data, &[("FAKE_KEY", "k")], args);
            (said.code, said.stdout, said.stderr)
        };

        let (code, _, stderr) = cli(&["run", "scan.js", "--events", "events.jsonl"]);
        assert_eq!(code, Some(5), "{protocol:?}: {stderr}");
        assert!(
            stderr.contains("error: the run paused: ") && stderr.contains("spend limit"),
            "{protocol:?}: {stderr}"
        );
        let events = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
        let events: Vec<Value> = events
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let id = events
            .iter()
            .find(|e| e["event"] == "run_started")
            .and_then(|e| e["run_id"].as_str())
            .unwrap()
            .to_string();
        assert!(
            stderr.contains(&format!("continue it with `corral runs resume {id}`")),
            "{stderr}"
        );
        // No agent failed: the call that met the limit never ended. (Its siblings in flight
        // may have been answered before the run paused.)
        assert!(
            !events
                .iter()
                .any(|e| e["event"] == "agent_finished" && e["ok"] == false),
            "{events:?}"
        );
        let answered = events
            .iter()
            .filter(|e| e["event"] == "agent_finished" && e["ok"] == true)
            .count();
        assert!((1..4).contains(&answered), "{events:?}");
        let finished = events
            .iter()
            .find(|e| e["event"] == "run_finished")
            .unwrap();
        assert!(
            finished["error"].as_str().unwrap().contains("paused"),
            "{finished}"
        );

        let (_, list, _) = cli(&["runs", "list"]);
        let row = list.lines().find(|l| l.contains(&id)).unwrap();
        assert!(row.contains("paused"), "{list}");
        let (_, show, _) = cli(&["runs", "show", &id]);
        assert!(
            show.contains(" paused ") && show.contains("spend limit"),
            "{show}"
        );
        let sent_before = fake.received().len();

        // The limit is lifted: the resumed run answers the first call from the journal.
        let (code, stdout, stderr) = cli(&["runs", "resume", &id, "-q"]);
        assert_eq!(code, Some(0), "{protocol:?}: {stderr}");
        let result: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(result["first"], "one", "{result}");
        assert_eq!(result["rest"].as_array().unwrap().len(), 3);
        assert!(
            result["rest"]
                .as_array()
                .unwrap()
                .iter()
                .all(Value::is_string),
            "{result}"
        );
        let received = fake.received();
        assert_eq!(
            received.len() - sent_before,
            4 - answered,
            "{protocol:?}: only the unanswered calls are sent again"
        );
        assert!(
            received[sent_before..]
                .iter()
                .all(|r| !r.body.to_string().contains("first item")),
            "the answered call is not paid twice"
        );
    }
}
