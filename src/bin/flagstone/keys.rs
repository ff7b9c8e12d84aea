//! `flagstone keygen`, `sign` and `verify`: the Ed25519 keys and detached
//! signatures of signed configs (formats in `flagstone::signing`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use flagstone::signing::{PublicKey, SigningKey};
use serde_json::json;

use crate::out::outln;
use crate::{print_json, read};

/// Make a key pair: NAME.key (private, PKCS#8 PEM) and NAME.pub (public, base64).
#[derive(clap::Args)]
pub(crate) struct Keygen {
    /// The files' name, without extension.
    #[arg(long)]
    out: PathBuf,
}

/// Sign a config: writes FILE.sig (a detached signature, base64).
#[derive(clap::Args)]
pub(crate) struct Sign {
    /// The config file.
    file: PathBuf,
    /// The private key (NAME.key).
    #[arg(long)]
    key: PathBuf,
}

/// Check a config's signature: exit 0 valid, 1 not.
#[derive(clap::Args)]
pub(crate) struct Verify {
    /// The config file.
    file: PathBuf,
    /// The public key (NAME.pub, or a PEM from openssl).
    #[arg(long)]
    public_key: PathBuf,
    /// The signature file (default: FILE.sig).
    #[arg(long)]
    signature: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

fn with_extension(base: &Path, extension: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(extension);
    PathBuf::from(name)
}

/// Reads a private key file.
pub(crate) fn signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = String::from_utf8(read(path)?)
        .with_context(|| format!("{}: a private key is PEM text", path.display()))?;
    SigningKey::from_pem(&text).with_context(|| format!("{}", path.display()))
}

/// Writes a file that must not exist yet, readable by its owner only when
/// `private`.
fn create(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file =
        options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

pub(crate) fn keygen(args: &Keygen) -> anyhow::Result<ExitCode> {
    let (private, public) = (with_extension(&args.out, ".key"), with_extension(&args.out, ".pub"));
    for path in [&private, &public] {
        if path.exists() {
            bail!("{} exists: keygen never overwrites a key", path.display());
        }
    }
    let key = SigningKey::generate()?;
    create(&private, &key.to_pem(), true)?;
    create(&public, &format!("{}\n", key.public_key().to_base64()), false)?;
    outln!("wrote {} (private: keep it secret) and {}", private.display(), public.display());
    outln!("public key: {}", key.public_key().to_base64());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn sign(args: &Sign) -> anyhow::Result<ExitCode> {
    let document = read(&args.file)?;
    let key = signing_key(&args.key)?;
    let path = with_extension(&args.file, ".sig");
    let signature = key.sign(&document);
    std::fs::write(&path, format!("{signature}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    outln!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn verify(args: &Verify) -> anyhow::Result<ExitCode> {
    let document = read(&args.file)?;
    let public = String::from_utf8(read(&args.public_key)?)
        .with_context(|| format!("{}: a public key is text", args.public_key.display()))?;
    let public =
        PublicKey::parse(&public).with_context(|| format!("{}", args.public_key.display()))?;
    let sig_path = args.signature.clone().unwrap_or_else(|| with_extension(&args.file, ".sig"));
    let signature = read(&sig_path)?;
    let verdict = public.verify(&document, &signature);
    if args.json {
        print_json(&json!({
            "file": args.file.to_string_lossy(), "valid": verdict.is_ok(),
            "reason": verdict.as_ref().err().map(ToString::to_string),
        }))?;
    } else {
        match &verdict {
            Ok(()) => outln!("valid: {} is signed by {}", args.file.display(), public.to_base64()),
            Err(e) => outln!("invalid: {}: {e}", args.file.display()),
        }
    }
    Ok(ExitCode::from(u8::from(verdict.is_err())))
}
