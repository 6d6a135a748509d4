//! `cachelet policy ...`: the fleet's policies, through the cache named by the environment.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cachelet::Cache;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Command {
    /// Publish a component: every host of the cache that follows pushes
    /// (CACHELET_POLICY_FLEET=on) serves it within a second. It is checked here first.
    Push {
        /// The component (.wasm).
        policy: PathBuf,
        /// Sign it with this secret key file (from `cachelet policy keygen`).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Its signature file (from `cachelet policy sign`), instead of --key.
        #[arg(long, value_name = "FILE", conflicts_with = "key")]
        signature: Option<PathBuf>,
        /// The limits it asks for, a JSON file as beside a watched policy:
        /// {"deadline_ms": N, "memory_bytes": N}. Each host gives it at most its own maxima.
        #[arg(long, value_name = "FILE")]
        limits: Option<PathBuf>,
    },
    /// Show every pushed policy: hash, name and version, ops, when it was pushed, and which
    /// hosts run it.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Go back to the push before the current one of a policy, on every host.
    Rollback {
        /// The policy's name.
        name: String,
    },
    /// Stop serving a pushed policy on every host.
    Remove {
        /// The policy's name.
        name: String,
    },
    /// Sign a component with a secret key: writes POLICY.sig (hex) for `push --signature`.
    Sign {
        /// The component (.wasm).
        policy: PathBuf,
        /// The secret key file (from `cachelet policy keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Make an Ed25519 key pair: FILE (the secret key, readable by you alone) and FILE.pub
    /// (the public key, for CACHELET_POLICY_PUBKEY on the hosts).
    Keygen {
        /// Where to write the secret key.
        file: PathBuf,
    },
}

/// The cache the environment names, which must be shared (Redis): a push to `mem://`
/// reaches no other process. It does not follow pushes itself.
async fn fleet_cache() -> Result<Cache> {
    let settings = cachelet::Settings::from_env()?;
    if matches!(settings.url, cachelet::BackendUrl::Memory) {
        bail!(
            "CACHE_URL names no shared backend (mem://): set it to the Redis the hosts use, \
             with CACHE_PREFIX and CACHE_VERSION as they have them"
        );
    }
    let shown = settings.url.to_string();
    let mut b = Cache::builder().settings(settings).fleet(false);
    if let Some(dir) = crate::compile_cache() {
        b = b.compile_cache(dir);
    }
    b.build()
        .await
        .with_context(|| format!("cannot reach the cache at {shown}"))
}

fn read_secret(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read the key {}", path.display()))
}

fn when(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since the epoch to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

pub async fn run(command: Command) -> Result<()> {
    match command {
        Command::Keygen { file } => {
            let (secret, public) = cachelet::policy_keypair()?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts
                .open(&file)
                .with_context(|| format!("cannot create {} (it must not exist)", file.display()))?;
            std::io::Write::write_all(&mut f, format!("{secret}\n").as_bytes())?;
            let public_file = PathBuf::from(format!("{}.pub", file.display()));
            std::fs::write(&public_file, format!("{public}\n"))?;
            println!(
                "secret key: {} (keep it off the hosts)\npublic key: {} — on every host: \
                 CACHELET_POLICY_PUBKEY={public}",
                file.display(),
                public_file.display()
            );
            Ok(())
        }
        Command::Sign { policy, key } => {
            let bytes = std::fs::read(&policy)
                .with_context(|| format!("cannot read {}", policy.display()))?;
            let sig = cachelet::sign_policy(&read_secret(&key)?, &bytes)?;
            let out = PathBuf::from(format!("{}.sig", policy.display()));
            std::fs::write(&out, format!("{sig}\n"))?;
            println!("{}", out.display());
            Ok(())
        }
        Command::Push {
            policy,
            key,
            signature,
            limits,
        } => {
            let bytes = std::fs::read(&policy)
                .with_context(|| format!("cannot read {}", policy.display()))?;
            let signature = match (key, signature) {
                (Some(k), _) => Some(cachelet::sign_policy(&read_secret(&k)?, &bytes)?),
                (None, Some(s)) => Some(
                    std::fs::read_to_string(&s)
                        .with_context(|| format!("cannot read {}", s.display()))?
                        .trim()
                        .to_string(),
                ),
                (None, None) => None,
            };
            let mut options = cachelet::PushOptions::default();
            if let Some(s) = signature {
                options = options.signature(s);
            }
            if let Some(file) = limits {
                let json = std::fs::read(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                options = options.limits(
                    cachelet::RequestedLimits::from_json(&json)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?,
                );
            }
            let cache = fleet_cache().await?;
            let push = crate::progress::while_loading(&policy, cache.push_policy(bytes, options))
                .await
                .with_context(|| format!("{} was not pushed", policy.display()))?;
            println!(
                "pushed {} {} ({}, {} ops{}): current for every host of {}:{}",
                push.name,
                push.version,
                &push.hash[..12],
                push.ops.len(),
                if push.signature.is_some() {
                    ", signed"
                } else {
                    ", unsigned"
                },
                cache.settings().prefix,
                cache.settings().version
            );
            Ok(())
        }
        Command::List { json } => {
            let cache = fleet_cache().await?;
            let list = cache.pushed_policies().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            if list.is_empty() {
                println!("no pushed policy");
            }
            for p in &list {
                let c = &p.current;
                println!(
                    "{} {}  {}  pushed {}{}",
                    c.name,
                    c.version,
                    &c.hash[..12],
                    when(c.pushed_at),
                    if c.signature.is_some() {
                        ", signed"
                    } else {
                        ""
                    }
                );
                println!("  ops: {}", c.ops.join(", "));
                if !c.limits.is_empty() {
                    println!("  limits asked: {}", serde_json::to_string(&c.limits)?);
                }
                if p.hosts.is_empty() {
                    println!("  hosts: none reported");
                }
                for (host, hash) in &p.hosts {
                    let state = if *hash == c.hash { "current" } else { "behind" };
                    println!("  host {host}: {} ({state})", &hash[..12.min(hash.len())]);
                }
                for h in p.history.iter().skip(1) {
                    println!(
                        "  earlier: {} {} pushed {}",
                        h.version,
                        &h.hash[..12],
                        when(h.pushed_at)
                    );
                }
            }
            Ok(())
        }
        Command::Rollback { name } => {
            let cache = fleet_cache().await?;
            let p = cache.rollback_policy(&name).await?;
            println!(
                "{name}: back to {} ({}, pushed {})",
                p.version,
                &p.hash[..12],
                when(p.pushed_at)
            );
            Ok(())
        }
        Command::Remove { name } => {
            let cache = fleet_cache().await?;
            cache.remove_policy(&name).await?;
            println!("{name}: removed; its ops are no longer cached on any host");
            Ok(())
        }
    }
}
