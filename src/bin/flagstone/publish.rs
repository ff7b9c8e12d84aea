//! `flagstone publish`: put a config where the fleet's updaters read it,
//! signed, with a compare-and-swap so that of two publishers one wins.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use flagstone::publish::{self, Target};
use serde_json::json;

use crate::out::outln;
use crate::{keys, print_json, read};

/// Publish a config to etcd or to a directory, signed if asked.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The config file.
    file: PathBuf,
    #[command(flatten)]
    target: TargetArgs,
    /// Sign with this private key (PKCS#8 PEM, from `flagstone keygen`).
    #[arg(long, value_name = "PRIVATE_KEY_FILE")]
    sign: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Where configs are published: an etcd key, or a directory (for
/// `publish` and `rollout`).
#[derive(clap::Args)]
pub(crate) struct TargetArgs {
    /// etcd client URLs, comma-separated (with --key).
    #[arg(long, value_delimiter = ',', requires = "key", conflicts_with = "to")]
    etcd: Vec<String>,
    /// The etcd key of the document; its signature goes to KEY.sig.
    #[arg(long, requires = "etcd")]
    pub(crate) key: Option<String>,
    /// A directory that file sources (or a static web server) read.
    #[arg(long, required_unless_present = "etcd")]
    to: Option<PathBuf>,
    /// etcd user, for a cluster with auth enabled (with --password).
    #[arg(long, requires = "password")]
    user: Option<String>,
    /// etcd password.
    #[arg(long, requires = "user")]
    password: Option<String>,
}

impl TargetArgs {
    /// The target the arguments name.
    pub(crate) fn target(&self) -> anyhow::Result<Box<dyn Target>> {
        Ok(match (&self.key, &self.to) {
            (Some(key), _) => {
                let mut etcd = publish::Etcd::new(self.etcd.clone(), key.clone());
                if let (Some(user), Some(password)) = (&self.user, &self.password) {
                    etcd = etcd.credentials(user.clone(), password.clone());
                }
                Box::new(etcd)
            }
            (None, Some(dir)) => Box::new(publish::Directory::new(dir)),
            (None, None) => bail!("say where: --etcd URL --key KEY, or --to DIR"),
        })
    }
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let document = read(&args.file)?;
    let signature = match &args.sign {
        Some(path) => Some(keys::signing_key(path)?.sign(&document)),
        None => None,
    };
    let mut target = args.target.target()?;
    let receipt = publish::publish(target.as_mut(), &document, signature.as_deref())
        .with_context(|| format!("{} not published", args.file.display()))?;
    if args.json {
        print_json(&json!({
            "version": receipt.version, "position": receipt.position,
            "target": target.describe(), "signed": signature.is_some(),
        }))?;
    } else {
        let at = if args.target.key.is_some() { "revision" } else { "sequence" };
        outln!(
            "published version {} to {} at {at} {}{}",
            receipt.version,
            target.describe(),
            receipt.position,
            if signature.is_some() { ", signed" } else { ", unsigned" }
        );
    }
    Ok(ExitCode::SUCCESS)
}
