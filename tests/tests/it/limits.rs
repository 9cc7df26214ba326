//! Every limit a guest can trigger, hit on purpose: each ends only its own run, with an error
//! that names the limit and its flag, while the process keeps serving other runs.

use std::time::Duration;

use corral_host::{LimitExceeded, RunError};
use serde_json::json;
use tests::support::{Run, result, sim, workflow};

#[tokio::test]
async fn an_endless_loop_hits_the_cpu_limit() {
    let report = Run::new(json!({"mode": "spin"}))
        .limits(|l| l.max_cpu = Duration::from_millis(300))
        .run(&workflow("probe"))
        .await;
    assert_eq!(
        report.outcome,
        Err(RunError::Limit(LimitExceeded::Cpu(Duration::from_millis(
            300
        ))))
    );
    assert!(
        report
            .outcome
            .unwrap_err()
            .to_string()
            .contains("--max-cpu")
    );
}

#[tokio::test]
async fn time_spent_waiting_for_agents_is_not_cpu_time() {
    // Ten sequential 60 ms agents take far longer than the 150 ms CPU limit, yet the guest itself
    // computes for a few milliseconds only.
    let report = Run::new(json!({"mode": "fanout", "n": 10}))
        .provider(sim(60))
        .limits(|l| {
            l.max_cpu = Duration::from_millis(150);
            l.max_concurrent = 1;
        })
        .run(&workflow("probe"))
        .await;
    assert_eq!(result(&report)["ok"], 10);
    assert!(report.guest_cpu < Duration::from_millis(150));
    assert!(report.wall > Duration::from_millis(150));
}

#[tokio::test]
async fn a_memory_bomb_hits_the_memory_limit() {
    let report = Run::new(json!({"mode": "membomb"}))
        .limits(|l| l.max_memory = 32 << 20)
        .run(&workflow("probe"))
        .await;
    let Err(RunError::Limit(LimitExceeded::Memory { limit, requested })) = report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(limit, 32 << 20);
    assert!(requested > limit);
}

#[tokio::test]
async fn a_slow_run_hits_the_wall_clock_timeout() {
    let report = Run::new(json!({"mode": "fanout", "n": 3}))
        .provider(sim(10_000))
        .limits(|l| l.timeout = Duration::from_millis(200))
        .run(&workflow("probe"))
        .await;
    assert_eq!(
        report.outcome,
        Err(RunError::Limit(LimitExceeded::Timeout(
            Duration::from_millis(200)
        )))
    );
}

#[tokio::test]
async fn a_chatty_guest_hits_the_log_limit() {
    let report = Run::new(json!({"mode": "stdout", "bytes": 100_000}))
        .limits(|l| l.max_log_bytes = 10_000)
        .run(&workflow("probe"))
        .await;
    assert_eq!(
        report.outcome,
        Err(RunError::Limit(LimitExceeded::Log(10_000)))
    );
}

#[tokio::test]
async fn an_oversized_host_batch_hits_the_batch_limit() {
    let report = Run::new(json!({"mode": "host-parallel", "n": 50}))
        .limits(|l| l.max_batch = 40)
        .run(&workflow("probe"))
        .await;
    assert_eq!(
        report.outcome,
        Err(RunError::Limit(LimitExceeded::Batch {
            what: "parallel",
            size: 50,
            limit: 40
        }))
    );
}

#[tokio::test]
async fn a_fan_out_over_4096_is_refused_by_the_sdk() {
    let report = Run::new(json!({"mode": "fanout", "n": 4097}))
        .run(&workflow("probe"))
        .await;
    let Err(RunError::Workflow(message)) = report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert!(message.contains("4096"), "{message}");
    assert_eq!(report.agents.started, 0);
}

#[tokio::test]
async fn an_oversized_prompt_is_refused() {
    let report = Run::new(json!({"mode": "agent", "prompt": "x".repeat(5000)}))
        .limits(|l| l.max_prompt_bytes = 4096)
        .run(&workflow("probe"))
        .await;
    let outcome = result(&report);
    assert_eq!(outcome["error"], "invalid-input");
    assert!(
        outcome["message"]
            .as_str()
            .unwrap()
            .contains("--max-prompt-bytes"),
        "{outcome}"
    );
}

#[tokio::test]
async fn a_slow_agent_hits_its_own_timeout() {
    let report = Run::new(json!({"mode": "agent", "timeout_ms": 50}))
        .provider(sim(5_000))
        .run(&workflow("probe"))
        .await;
    assert_eq!(result(&report)["error"], "timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_runs_end_alone_while_the_process_serves_others() {
    let probe = workflow("probe");
    let spin = Run::new(json!({"mode": "spin"}))
        .limits(|l| l.max_cpu = Duration::from_millis(500))
        .run(&probe);
    let bomb = Run::new(json!({"mode": "membomb"}))
        .limits(|l| l.max_memory = 64 << 20)
        .run(&probe);
    let panics = Run::new(json!({"mode": "panic"})).run(&probe);
    let good = Run::new(json!({"mode": "fanout", "n": 200}))
        .provider(sim(2))
        .run(&probe);
    let (spin, bomb, panics, good) = tokio::join!(spin, bomb, panics, good);
    assert!(
        matches!(spin.outcome, Err(RunError::Limit(LimitExceeded::Cpu(_)))),
        "{:?}",
        spin.outcome
    );
    assert!(
        matches!(
            bomb.outcome,
            Err(RunError::Limit(LimitExceeded::Memory { .. }))
        ),
        "{:?}",
        bomb.outcome
    );
    assert!(
        matches!(panics.outcome, Err(RunError::Crashed(_))),
        "{:?}",
        panics.outcome
    );
    assert_eq!(result(&good)["ok"], 200);
    // And the same runtime keeps working afterwards.
    assert_eq!(
        result(&Run::new(json!({"mode": "echo"})).run(&probe).await)["mode"],
        "echo"
    );
}

#[tokio::test]
async fn host_resources_a_guest_holds_are_limited() {
    use corral_host::limits::MAX_HOST_RESOURCES;
    // Within the limit: held and released.
    let report = Run::new(json!({"mode": "resources", "n": 100}))
        .run(&workflow("probe"))
        .await;
    assert_eq!(result(&report)["held"], 100);
    // One past it ends the run, naming the limit, instead of growing the host's table.
    let report = Run::new(json!({"mode": "resources", "n": MAX_HOST_RESOURCES + 1}))
        .run(&workflow("probe"))
        .await;
    match &report.outcome {
        Err(RunError::Limit(LimitExceeded::HostResources(n))) => {
            assert_eq!(*n, MAX_HOST_RESOURCES);
        }
        other => panic!("expected the host resource limit, got {other:?}"),
    }
    let message = report.outcome.unwrap_err().to_string();
    assert!(
        message.contains("host resource limit exceeded"),
        "{message}"
    );
}
