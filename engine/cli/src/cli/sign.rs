//! `corral keys generate`, `corral sign`, and the signing parts of `build`, `run` and `inspect`:
//! policy manifests and minisign signatures embedded in a component.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use corral_host::Workflow;
use corral_host::artifact::minisign::{KeyId, PublicKey, SecretKey};
use corral_host::artifact::policy::Policy;
use corral_host::artifact::signed::{self, SignatureError};

use super::run::file_name;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Write a new ed25519 key pair in minisign's format: KEY (secret, unencrypted) and KEY.pub.
    Generate {
        /// Where to write the secret key (the public key goes to the same path plus .pub).
        #[arg(long, short)]
        output: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args)]
pub struct SignArgs {
    /// The component to sign (any .wasm, built scripts included).
    component: PathBuf,
    /// The policy manifest to embed (default: keep the one it has, if any).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The secret key (from `corral keys generate`, or an unencrypted minisign key).
    #[arg(long)]
    key: PathBuf,
    /// Where to write the signed component (default: in place).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// How `corral run` and `corral plan` check signatures.
#[derive(Args, Clone, Debug, Default)]
pub struct TrustArgs {
    /// Refuse a workflow that is not signed by a key given with --trust.
    #[arg(long)]
    pub require_signature: bool,
    /// A public key (KEY.pub) whose signatures are trusted; repeatable. A signed workflow is
    /// checked against them even without --require-signature.
    #[arg(long = "trust", value_name = "KEY.pub")]
    pub trust: Vec<PathBuf>,
}

pub fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    let KeysCommand::Generate { output, force } = command;
    let public_path = public_path(&output);
    for path in [&output, &public_path] {
        if path.exists() && !force {
            bail!(
                "{} exists: pass --force to overwrite it, or choose another -o",
                path.display()
            );
        }
    }
    let key = SecretKey::generate()?;
    write_private(&output, &key.to_file())?;
    std::fs::write(&public_path, key.public().to_file())
        .with_context(|| format!("cannot write {}", public_path.display()))?;
    eprintln!(
        "wrote {} (secret, unencrypted: keep it private) and {} (key id {})",
        output.display(),
        public_path.display(),
        key.id()
    );
    Ok(ExitCode::SUCCESS)
}

fn public_path(secret: &Path) -> PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads and checks a `policy.toml`.
pub fn read_policy(path: &Path) -> anyhow::Result<Policy> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Policy::from_toml(&path.display().to_string(), &text)?)
}

/// Reads a secret key file.
pub fn read_secret_key(path: &Path) -> anyhow::Result<SecretKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    SecretKey::parse(&text)
        .with_context(|| format!("cannot use {} as a signing key", path.display()))
}

/// `component` with `policy` embedded (when given) and signed with `key` (when given).
pub fn seal(
    component: &[u8],
    policy: Option<&Path>,
    key: Option<&Path>,
) -> anyhow::Result<Vec<u8>> {
    let mut bytes = component.to_vec();
    if let Some(path) = policy {
        bytes = signed::embed_policy(&bytes, &read_policy(path)?)?;
    }
    if let Some(path) = key {
        bytes = signed::sign(&bytes, &read_secret_key(path)?)?;
    }
    Ok(bytes)
}

pub fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("cannot read {}", args.component.display()))?;
    let key = read_secret_key(&args.key)?;
    let signed = seal(&bytes, args.policy.as_deref(), Some(&args.key))?;
    let output = args.output.as_ref().unwrap_or(&args.component);
    std::fs::write(output, &signed)
        .with_context(|| format!("cannot write {}", output.display()))?;
    let policy = match signed::embedded_policy(&signed)? {
        Some(_) => "with its policy manifest",
        None => "without a policy manifest (pass --policy policy.toml to embed one)",
    };
    eprintln!(
        "signed {} {policy} with key {} ({} bytes)",
        output.display(),
        key.id(),
        signed.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads trusted public keys.
pub fn read_trusted(paths: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --trust {}", path.display()))?;
            PublicKey::parse(&text)
                .with_context(|| format!("cannot use --trust {}", path.display()))
        })
        .collect()
}

/// Refuses the workflow at `path` as `--require-signature` and `--trust` say: an unsigned one
/// when a signature is required, a tampered one, or one signed by a key not trusted. Checked on
/// the file's bytes before anything compiles them.
pub fn check(args: &TrustArgs, path: &Path) -> anyhow::Result<()> {
    if !args.require_signature && args.trust.is_empty() {
        return Ok(());
    }
    if args.require_signature && args.trust.is_empty() {
        bail!("--require-signature needs the keys to trust: add --trust KEY.pub");
    }
    let trusted = read_trusted(&args.trust)?;
    let name = file_name(path);
    let seal = if path.extension().is_some_and(|ext| ext == "wasm") {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        signed::seal(&bytes).with_context(|| format!("{name} is refused"))?
    } else {
        None
    };
    match signed::check_signature(seal.as_ref(), &trusted) {
        Ok(_) => Ok(()),
        Err(SignatureError::Unsigned) if !args.require_signature => Ok(()),
        Err(error @ SignatureError::Unsigned) => bail!(
            "{name} is refused: {error}, and --require-signature runs only signed workflows; sign it with `corral sign WORKFLOW.wasm --policy policy.toml --key KEY` (or build it with `corral build --policy policy.toml --sign KEY`)"
        ),
        Err(error @ SignatureError::Tampered(_)) => bail!(
            "{name} is refused: {error}; do not run it: rebuild and sign it again, or get the file as its signer published it"
        ),
        Err(error @ SignatureError::Untrusted { .. }) => bail!(
            "{name} is refused: {error}; if you trust its signer, add their public key with --trust KEY.pub"
        ),
    }
}

/// Lines `corral inspect` shows about a component's manifest and signature.
pub fn describe(workflow: &Workflow, trusted: &[PublicKey]) -> Vec<String> {
    let mut lines = Vec::new();
    match workflow.policy() {
        Some(policy) => {
            lines.push("policy:".to_string());
            lines.extend(policy.to_toml().lines().map(|line| format!("  {line}")));
        }
        None => lines.push("policy:   none (the run's flags alone bound it)".to_string()),
    }
    let Some(seal) = workflow.seal() else {
        lines.push("signature: none".to_string());
        return lines;
    };
    let signer: KeyId = seal.signature.id;
    lines.push(format!(
        "signature: key {signer}, over the first {} bytes",
        seal.signed_len
    ));
    lines.push(format!(
        "trusted comment: {}",
        seal.signature.trusted_comment
    ));
    let verdict = if trusted.is_empty() {
        "not checked (pass --trust KEY.pub)".to_string()
    } else {
        match workflow.verify(trusted) {
            Ok(id) => format!("ok (signed by trusted key {id})"),
            Err(error) => format!("FAILED: {error}"),
        }
    };
    lines.push(format!("verifies: {verdict}"));
    lines
}

/// Writes a component's signature as a `.minisig` file (for `minisign -V`).
pub fn export_signature(workflow: &Workflow, path: &Path) -> anyhow::Result<()> {
    let seal = workflow.seal().with_context(|| {
        format!(
            "{} is not signed: there is no signature to write",
            workflow.name()
        )
    })?;
    std::fs::write(path, seal.signature.to_file())
        .with_context(|| format!("cannot write {}", path.display()))
}
