//! Signed workflows: `corral keys generate`, `build --policy --sign`, `sign`, `run
//! --require-signature --trust`, the manifest as an upper bound, the compile cache, and a
//! tenant's trusted keys on the server.

use std::path::Path;

use corral_host::artifact::minisign::{KeyId, SecretKey};
use corral_host::artifact::policy::Policy;
use corral_host::artifact::signed;
use corral_host::artifact::{Script, embed_script};
use corral_host::{Runtime, RuntimeConfig};
use serde_json::{Value, json};
use tests::server::{Api, TestServer};
use tests::support::{Run, corral_in, result};

/// A script that reports what its policy let it do.
const PROBE: &str = r#"
const code = async (f) => { try { await f(); return 'ok' } catch (e) { return e.code } }
return {
  git: await code(() => agent('look', { tools: ['git'] })),
  read: await code(() => agent('look', { tools: ['read'] })),
  glob: await code(() => tools.glob('*')),
  agents: [await code(() => agent('a')), await code(() => agent('b')), await code(() => agent('c'))],
}
"#;

const POLICY: &str = r#"
[grants]
tools = ["read", "grep"]
providers = ["sim"]

[limits]
max_agents = 3
max_cpu = "20s"
"#;

/// A directory with the probe script, the policy and two key pairs (`k`, `other`).
fn workspace() -> (tempfile::TempDir, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("probe.js"), PROBE).unwrap();
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    for key in ["k", "other"] {
        ok(dir.path(), data.path(), &["keys", "generate", "-o", key]);
    }
    (dir, data)
}

fn ok(dir: &Path, data: &Path, args: &[&str]) -> String {
    let said = corral_in(dir, data, &[], args);
    assert_eq!(said.code, Some(0), "corral {args:?}: {}", said.stderr);
    said.stdout
}

/// `corral build probe.js -o OUT --policy policy.toml`, signed with `key` if given.
fn build((dir, data): (&Path, &Path), out: &str, key: Option<&str>) -> String {
    let mut args = vec!["build", "probe.js", "-o", out, "--policy", "policy.toml"];
    if let Some(key) = key {
        args.extend(["--sign", key]);
    }
    ok(dir, data, &args)
}

fn refused(dir: &Path, data: &Path, args: &[&str]) -> String {
    let said = corral_in(dir, data, &[], args);
    assert_eq!(said.code, Some(2), "corral {args:?}: {}", said.stderr);
    said.stderr
}

#[test]
fn unsigned_tampered_and_untrusted_artifacts_are_refused_each_with_its_fix() {
    let (dir, data) = workspace();
    let (d, data) = (dir.path(), data.path());
    build((d, data), "plain.wasm", None);
    build((d, data), "signed.wasm", Some("k"));
    let require = [
        "--no-journal",
        "-q",
        "--require-signature",
        "--trust",
        "k.pub",
    ];
    let run =
        |file: &'static str| -> Vec<&'static str> { [&["run", file][..], &require[..]].concat() };

    let unsigned = refused(d, data, &run("plain.wasm"));
    assert!(
        unsigned.contains("plain.wasm is refused: it is not signed")
            && unsigned.contains("corral sign"),
        "{unsigned}"
    );
    let script = refused(d, data, &run("probe.js"));
    assert!(script.contains("it is not signed"), "{script}");

    let mut bytes = std::fs::read(d.join("signed.wasm")).unwrap();
    let at = bytes.windows(6).position(|w| w == b"'look'").unwrap();
    bytes[at + 1] = b'L';
    std::fs::write(d.join("tampered.wasm"), &bytes).unwrap();
    let tampered = refused(d, data, &run("tampered.wasm"));
    assert!(
        tampered.contains("changed after it was signed") && tampered.contains("sign it again"),
        "{tampered}"
    );

    let untrusted = refused(
        d,
        data,
        &[
            "run",
            "signed.wasm",
            "--no-journal",
            "--require-signature",
            "--trust",
            "other.pub",
        ],
    );
    assert!(
        untrusted.contains("which is not trusted") && untrusted.contains("--trust KEY.pub"),
        "{untrusted}"
    );
    let no_keys = refused(
        d,
        data,
        &["run", "signed.wasm", "--no-journal", "--require-signature"],
    );
    assert!(no_keys.contains("add --trust KEY.pub"), "{no_keys}");

    // The trusted, untouched file runs; inspect shows the manifest, the signer and the verdict.
    let output = ok(d, data, &run("signed.wasm"));
    serde_json::from_str::<Value>(output.trim()).expect("the result is JSON");
    let inspected = ok(d, data, &["inspect", "signed.wasm", "--trust", "k.pub"]);
    let public = std::fs::read_to_string(d.join("k.pub")).unwrap();
    let id = public.lines().next().unwrap().rsplit(' ').next().unwrap();
    for expected in [
        "tools = [\"read\", \"grep\"]",
        "max_agents = 3",
        &format!("signature: key {id}"),
        &format!("verifies: ok (signed by trusted key {id})"),
    ] {
        assert!(inspected.contains(expected), "{expected} in {inspected}");
    }
    let inspected = ok(d, data, &["inspect", "tampered.wasm", "--trust", "k.pub"]);
    assert!(
        inspected.contains("verifies: FAILED: it was changed"),
        "{inspected}"
    );
}

#[test]
fn a_manifest_narrower_than_the_flags_wins() {
    let (dir, data) = workspace();
    let (d, data) = (dir.path(), data.path());
    build((d, data), "signed.wasm", Some("k"));
    // The probe's answer for a file, run with flags that grant everything.
    let probe = |file: &str| -> Value {
        let args = [
            "run",
            file,
            "--no-journal",
            "-q",
            "--root",
            ".",
            "--max-agents",
            "100",
        ];
        serde_json::from_str(ok(d, data, &args).trim()).unwrap()
    };
    let outcome = probe("signed.wasm");
    assert_eq!(
        outcome,
        json!({
            "git": "denied",
            "read": "ok",
            "glob": "denied",
            // One agent ran above; the manifest's max_agents = 3 beats --max-agents 100.
            "agents": ["ok", "ok", "agent-limit"],
        })
    );
    // Without the manifest the same flags grant it all.
    ok(d, data, &["build", "probe.js", "-o", "open.wasm"]);
    let open = probe("open.wasm");
    assert_eq!(open["git"], "ok");
    assert_eq!(open["agents"], json!(["ok", "ok", "ok"]));

    // A provider the manifest does not grant is refused before the run starts.
    let said = corral_in(
        d,
        data,
        &[],
        &["run", "signed.wasm", "--no-journal", "--provider", "openai"],
    );
    assert_eq!(said.code, Some(2), "{}", said.stderr);
    assert!(
        said.stderr
            .contains("provider 'openai' is not granted by the workflow's policy manifest"),
        "{}",
        said.stderr
    );
    std::fs::write(
        d.join("models.toml"),
        "[grants]\nproviders = [\"sim\"]\nmodels = [\"haiku\"]\n",
    )
    .unwrap();
    ok(
        d,
        data,
        &["sign", "open.wasm", "--policy", "models.toml", "--key", "k"],
    );
    let said = corral_in(d, data, &[], &["plan", "open.wasm", "--model", "opus"]);
    assert_eq!(said.code, Some(2), "{}", said.stderr);
    assert!(
        said.stderr.contains("model 'opus'") && said.stderr.contains("grants.models"),
        "{}",
        said.stderr
    );

    // Unknown manifest fields are errors naming the field.
    std::fs::write(d.join("bad.toml"), "[limits]\nmax_agentz = 2\n").unwrap();
    let error = refused_any(
        d,
        data,
        &["sign", "open.wasm", "--policy", "bad.toml", "--key", "k"],
    );
    assert!(error.contains("unknown field `max_agentz`"), "{error}");
}

fn refused_any(dir: &Path, data: &Path, args: &[&str]) -> String {
    let said = corral_in(dir, data, &[], args);
    assert_ne!(said.code, Some(0), "corral {args:?} succeeded");
    said.stderr
}

#[test]
fn signing_is_deterministic() {
    let (dir, data) = workspace();
    let (d, data) = (dir.path(), data.path());
    let signed = |out: &str| {
        build((d, data), out, Some("k"));
        std::fs::read(d.join(out)).unwrap()
    };
    let first = signed("one.wasm");
    assert_eq!(
        first,
        signed("two.wasm"),
        "the same inputs give the same bytes"
    );
    // Building then signing gives the same bytes as building signed; so does signing again.
    ok(d, data, &["build", "probe.js", "-o", "later.wasm"]);
    ok(
        d,
        data,
        &[
            "sign",
            "later.wasm",
            "--policy",
            "policy.toml",
            "--key",
            "k",
        ],
    );
    assert_eq!(std::fs::read(d.join("later.wasm")).unwrap(), first);
    ok(
        d,
        data,
        &["sign", "later.wasm", "--key", "k", "-o", "again.wasm"],
    );
    assert_eq!(std::fs::read(d.join("again.wasm")).unwrap(), first);
    // Another key signs the same bytes differently.
    ok(
        d,
        data,
        &["sign", "later.wasm", "--key", "other", "-o", "other.wasm"],
    );
    assert_ne!(std::fs::read(d.join("other.wasm")).unwrap(), first);
}

#[tokio::test]
async fn a_signed_artifact_runs_from_the_compile_cache_without_recompiling() {
    let cache = tempfile::tempdir().unwrap();
    let config = || RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let runtime = tests::guests::workspace_root().join("guest-sdk/js-runtime/js_runtime.wasm");
    let built = embed_script(
        &std::fs::read(runtime).unwrap(),
        &Script {
            name: "one.js".into(),
            source: "return { one: 1 }".into(),
        },
    )
    .unwrap();
    let policy = Policy::from_toml("policy.toml", POLICY).unwrap();
    let key = SecretKey::from_seed(KeyId(*b"cachekey"), [3; 32]);
    let signed_bytes = signed::sign(&signed::embed_policy(&built, &policy).unwrap(), &key).unwrap();

    let first = Runtime::new(config()).unwrap();
    let compiled = first.load("signed.wasm", &signed_bytes).unwrap();
    assert!(!compiled.compiled_from_cache(), "the first load compiles");

    // A second process: the same signed file, and the file re-signed with another key and
    // another manifest, both come from the cache — the sections are not code.
    let second = Runtime::new(config()).unwrap();
    let again = second.load("signed.wasm", &signed_bytes).unwrap();
    assert!(
        again.compiled_from_cache(),
        "no Cranelift work the second time"
    );
    let other_key = SecretKey::from_seed(KeyId(*b"otherkey"), [4; 32]);
    let resigned = signed::sign(
        &signed::embed_policy(&built, &Policy::default()).unwrap(),
        &other_key,
    )
    .unwrap();
    let resigned = second.load("resigned.wasm", &resigned).unwrap();
    assert!(
        resigned.compiled_from_cache(),
        "a new signature or manifest does not recompile"
    );
    assert_eq!(again.verify(&[key.public()]), Ok(key.id()));
    let report = Run::new(Value::Null).run_on(&second, &again).await;
    assert_eq!(result(&report), json!({"one": 1}));
}

#[test]
fn a_tenant_with_trusted_keys_takes_only_workflows_they_signed() {
    let (dir, data) = workspace();
    let (d, data_dir) = (dir.path(), data.path());
    ok(d, data_dir, &["build", "probe.js", "-o", "plain.wasm"]);
    build((d, data_dir), "signed.wasm", Some("k"));
    ok(
        d,
        data_dir,
        &["sign", "plain.wasm", "--key", "other", "-o", "other.wasm"],
    );
    let public = std::fs::read_to_string(d.join("k.pub")).unwrap();
    let key_line = public.lines().nth(1).unwrap();
    let secret = "crl_signed_0123456789abcdef";
    let digest: String = {
        use sha2::Digest;
        sha2::Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let config = d.join("corral.toml");
    std::fs::write(
        &config,
        format!("[tenants.acme]\ntokens = [{{ sha256 = \"{digest}\" }}]\ntrusted_keys = [\"{key_line}\"]\n"),
    )
    .unwrap();
    let server = TestServer::start(data_dir, &["--config", config.to_str().unwrap()], &[]);
    let api: Api = server.client(secret);
    let upload = |file: &str| {
        api.send(
            "PUT",
            &format!("/v1/workflows?name={file}"),
            Some("application/wasm"),
            Some(std::fs::read(d.join(file)).unwrap()),
        )
    };
    for (file, problem) in [
        ("plain.wasm", "it is not signed"),
        ("other.wasm", "which is not trusted"),
    ] {
        let answer = upload(file);
        assert_eq!(answer.status, 400, "{file}: {}", answer.text);
        let message = answer.json["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("requires signed workflows") && message.contains(problem),
            "{file}: {message}"
        );
    }
    let script = api.send(
        "PUT",
        "/v1/workflows",
        Some("application/javascript"),
        Some(b"return 1".to_vec()),
    );
    // A script runs on the bundled runtime, which no tenant key signed: its run is refused.
    assert!(script.status < 300, "{}", script.text);
    let hash = script.json["hash"].as_str().unwrap().to_string();
    let answer = api.post("/v1/runs", &json!({"workflow": hash}));
    assert_eq!(answer.status, 400, "{}", answer.text);
    assert!(answer.text.contains("it is not signed"), "{}", answer.text);
    let answer = upload("signed.wasm");
    assert!(answer.status < 300, "{}", answer.text);
    let hash = answer.json["hash"].as_str().unwrap().to_string();
    // The manifest bounds the tenant's run too: max_agents = 3.
    let id = api.submit(&json!({"workflow": hash}));
    let detail = api.wait(&id);
    assert_eq!(detail["status"], "succeeded", "{detail}");
}
