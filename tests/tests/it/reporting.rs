//! What `corral run` reports while and after it runs: failed agent calls collapsed by kind, and
//! costs that are unknown said to be unknown rather than shown as `$0.0000`.

use std::path::Path;
use std::process::Output;

use tests::fake_llm::{FakeLlm, Protocol};
use tests::support::corral;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The number after `prefix` in `line`.
fn number_after(line: &str, prefix: &str) -> u64 {
    let at = line
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix:?} in {line:?}"))
        + prefix.len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no number after {prefix:?} in {line:?}"))
}

fn write_script(dir: &Path, name: &str, source: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, source).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn hundreds_of_failed_agents_are_reported_as_a_few_lines_per_kind() {
    let dir = tempfile::tempdir().unwrap();
    // Three calls time out; then a fan-out of 300 runs out of its small budget.
    let script = write_script(
        dir.path(),
        "fan.js",
        "phase('Slow')\n\
         await parallel([0, 1, 2].map((i) => () => agent(`slow ${i}`, { timeoutMs: 1 })))\n\
         phase('Fan')\n\
         const answers = await parallel(Array.from({ length: 300 }, (_, i) => () => agent(`item ${i}`)))\n\
         return answers.filter((a) => a !== null).length\n",
    );
    let output = corral()
        .args(["run", "--no-journal", "--force", "--budget-tokens", "3000"])
        .args([
            "--max-output-tokens",
            "64",
            "--sim-latency",
            "20ms",
            &script,
        ])
        .output()
        .unwrap();
    let stderr = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");

    let progress = |kind: &str| -> Vec<&str> {
        stderr
            .lines()
            // The workflow's own log lines (`parallel failed for item …`) are not progress.
            .filter(|l| l.starts_with("   ") && l.contains(&format!("failed: {kind}")))
            .collect()
    };
    let budget = progress("budget-exhausted");
    assert!(
        budget[0].contains("failed: budget-exhausted (the first;"),
        "{stderr}"
    );
    let first = number_after(budget[0], "agent #");
    let failed = number_after(budget.last().unwrap(), "   ");
    assert!(
        failed >= 100,
        "only {failed} calls ran out of budget:\n{stderr}"
    );
    // The first in full, the counts at 10 and at 100, and the count at the end.
    let mut expected = vec![
        "10 agents failed: budget-exhausted".to_string(),
        "100 agents failed: budget-exhausted".to_string(),
    ];
    if failed > 100 {
        expected.push(format!("{failed} agents failed: budget-exhausted"));
    }
    let counts: Vec<String> = budget[1..]
        .iter()
        .map(|line| line.trim().to_string())
        .collect();
    assert_eq!(counts.len(), expected.len(), "{stderr}");
    for (line, expected) in counts.iter().zip(expected) {
        // Each count names the first failure and what it said.
        let prefix = format!(
            "{expected} (first #{first}: token budget exhausted: this request may need up to "
        );
        assert!(
            line.starts_with(&prefix),
            "{line:?} is not {prefix:?}…\n{stderr}"
        );
    }
    assert!(
        budget[0].ends_with("remain (raise --budget-tokens, or lower maxTokens)"),
        "{stderr}"
    );

    // Another kind stays apart from it, counted at the next phase.
    let timeouts = progress("timeout");
    assert_eq!(timeouts.len(), 2, "{stderr}");
    assert!(
        timeouts[0].contains("failed: timeout (the first;"),
        "{stderr}"
    );
    let first_timeout = number_after(timeouts[0], "agent #");
    assert!(
        timeouts[1].starts_with(&format!(
            "   3 agents failed: timeout (first #{first_timeout}: "
        )),
        "{stderr}"
    );
    let fan = stderr.lines().position(|l| l == "== Fan").unwrap();
    assert_eq!(stderr.lines().nth(fan - 1), Some(timeouts[1]), "{stderr}");

    // The summary lists the failures by kind, most first, with the first call of each.
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("corral: failed: "))
        .unwrap_or_else(|| panic!("no failure summary:\n{stderr}"));
    assert_eq!(
        summary,
        format!(
            "corral: failed: {failed} budget-exhausted (first #{first}), 3 timeout (first #{first_timeout})"
        ),
        "{stderr}"
    );
    // The simulated provider buys nothing: no unknown cost there.
    assert!(!stderr.contains("no price"), "{stderr}");
}

#[test]
fn a_model_without_a_price_is_named_once_and_its_cost_is_not_shown_as_zero() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeLlm::start(Protocol::OpenAi, None);
    let script = write_script(
        dir.path(),
        "few.js",
        "phase('Ask')\n\
         const answers = await parallel([0, 1, 2, 3].map((i) => () => agent(`question ${i}`)))\n\
         return answers.length\n",
    );
    let provider = format!(
        "default_provider = \"local\"\n\n[providers.local]\nkind = \"openai\"\nbase_url = \"{}\"\nmodel = \"local-model\"\n",
        fake.url()
    );
    let run = |config: &str| {
        let path = dir.path().join("corral.toml");
        std::fs::write(&path, config).unwrap();
        let output = corral()
            .env_remove("OPENAI_API_KEY")
            .args([
                "run",
                "--no-journal",
                "--config",
                path.to_str().unwrap(),
                &script,
            ])
            .output()
            .unwrap();
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(0), "{text}");
        text
    };

    let unpriced = run(&provider);
    let notes: Vec<&str> = unpriced
        .lines()
        .filter(|l| l.contains("no price"))
        .collect();
    assert_eq!(
        notes,
        [
            "corral: local-model has no price in corral.toml, so its cost is not counted: add [prices.\"local-model\"] with input and output (dollars per million tokens)"
        ],
        "{unpriced}"
    );
    assert!(!unpriced.contains("$0.0000"), "{unpriced}");
    let phase = unpriced
        .lines()
        .find(|l| l.starts_with("Ask "))
        .unwrap_or_else(|| panic!("no phase line:\n{unpriced}"));
    assert!(phase.contains(" cache-w        —  "), "{phase}");
    assert!(
        unpriced
            .lines()
            .any(|l| l.starts_with("corral: 4 agents") && l.contains(", cost unknown, ")),
        "{unpriced}"
    );

    // With a price, the same run is priced and says nothing about prices.
    let priced = run(&format!(
        "{provider}\n[prices.\"local-model\"]\ninput = 1.0\noutput = 2.0\n"
    ));
    assert!(!priced.contains("no price"), "{priced}");
    assert!(!priced.contains("cost unknown"), "{priced}");
    let phase = priced
        .lines()
        .find(|l| l.starts_with("Ask "))
        .unwrap_or_else(|| panic!("no phase line:\n{priced}"));
    assert!(phase.contains(" cache-w  $0.0"), "{phase}");
}
