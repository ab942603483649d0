//! Node key files: 32 bytes of Ed25519 seed, hex-encoded, readable only by the owner.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use ganglion_types::NodeKey;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a new key file (refuses to overwrite one) and print its did:key.
    New {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the did:key of a key file.
    Show {
        #[arg(long)]
        key: PathBuf,
        /// Print its pay address instead: the Ethereum address of the secp256k1 key derived
        /// from it, which signs vouchers and holds tokens on chain.
        #[arg(long)]
        pay_address: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::New { out } => {
            let key = NodeKey::generate();
            write(&out, &key)?;
            println!("{}", key.id());
        }
        KeysCommand::Show { key, pay_address } => {
            let key = load(&key)?;
            if pay_address {
                println!("{}", crate::pay::pay_key(&key)?.address());
            } else {
                println!("{}", key.id());
            }
        }
    }
    Ok(())
}

/// Writes a key file; never overwrites an existing one.
pub fn write(path: &Path, key: &NodeKey) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| {
        format!(
            "cannot create key file {} (it must not exist yet)",
            path.display()
        )
    })?;
    let hex: String = key.seed().iter().map(|b| format!("{b:02x}")).collect();
    writeln!(file, "{hex}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Reads a key file written by [`write`].
pub fn load(path: &Path) -> anyhow::Result<NodeKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    let hex = text.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "{} is not a Ganglion key file: expected 64 hex digits",
            path.display()
        );
    }
    let mut seed = [0u8; 32];
    for (i, byte) in seed.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(NodeKey::from_seed(seed))
}

/// The key at `path`, or a fresh one if none is given.
pub fn load_or_generate(path: Option<&Path>) -> anyhow::Result<NodeKey> {
    path.map_or_else(|| Ok(NodeKey::generate()), load)
}
