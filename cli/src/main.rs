//! The `cachelet` command line.

mod new;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use cachelet::{Args, Cache, PolicySource, Settings};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "cachelet",
    version,
    about = "A cache host whose policies are WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a policy component: the operations it declares, its imports, size, compile time.
    /// Exits non-zero when the policy cannot be loaded (a declaration its SDK refuses
    /// included); warns, naming the op, where the declared params do not let the host check
    /// the op's placeholders.
    Check {
        /// The component (.wasm).
        policy: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask a policy for the rule of one call and print it as JSON.
    Call {
        /// The component (.wasm).
        policy: PathBuf,
        /// Read or write.
        kind: Kind,
        /// The operation.
        op: String,
        /// Arguments, `name=value` (integers, floats, true/false, null and JSON are typed;
        /// `name:=value` forces text).
        args: Vec<String>,
        /// Call the guest's own read/write even where the host renders the rule natively.
        #[arg(long)]
        guest: bool,
    },
    /// Scaffold a policy project: the WIT, the language's guest helper, one read and one
    /// write, a build script. Then run the build script it prints and `cachelet check`.
    New {
        /// The language of the policy.
        #[arg(long, value_enum)]
        lang: new::Lang,
        /// The policy's name (lowercase letters, digits, `-`, `_`); also the folder's.
        name: String,
        /// Where to create the project (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Read,
    Write,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A memory cache with default settings that holds just this policy.
async fn cache_with(policy: &PathBuf) -> Result<Cache> {
    Cache::builder()
        .settings(Settings::default())
        .policy(PolicySource::file(policy))
        .build()
        .await
        .with_context(|| format!("{} is not a usable policy", policy.display()))
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::New { lang, name, dir } => {
            let (_, next) = new::scaffold(lang, &name, dir)?;
            print!("{next}");
            Ok(())
        }
        Command::Check { policy, json } => {
            let cache = cache_with(&policy).await?;
            let report = cache.policies().pop().context("no policy loaded")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                for w in &report.warnings {
                    eprintln!("warning: {w}");
                }
                return Ok(());
            }
            println!(
                "{}: policy {} {} (world {})",
                policy.display(),
                report.name,
                report.version,
                cachelet::WORLD
            );
            println!(
                "  size {} bytes, {} in {:.1} ms",
                report.size,
                if report.precompiled {
                    "loaded precompiled"
                } else {
                    "compiled"
                },
                report.compile_time.as_secs_f64() * 1e3
            );
            println!(
                "  calls: {}",
                if report.synchronous {
                    "synchronous (no import waits)"
                } else {
                    "on a fiber (it imports `store`, which awaits the backend)"
                }
            );
            println!("  imports:");
            for i in &report.imports {
                println!("    {i}");
            }
            println!("  operations ({}):", report.ops.len());
            for op in &report.ops {
                println!(
                    "    {:<5} {:<28} {}{}",
                    format!("{:?}", op.kind).to_lowercase(),
                    op.name,
                    if op.native {
                        "rule rendered by the host"
                    } else {
                        "rule computed by the guest per call"
                    },
                    op.route
                        .as_ref()
                        .map(|r| format!(", route {r}"))
                        .unwrap_or_default()
                );
            }
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            Ok(())
        }
        Command::Call {
            policy,
            kind,
            op,
            args,
            guest,
        } => {
            let cache = cache_with(&policy).await?;
            let args: Args = args
                .iter()
                .map(|a| cachelet::parse_arg(a))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .collect();
            let json = match kind {
                Kind::Read => serde_json::to_value(cache.read_rule(&op, &args, guest).await?)?,
                Kind::Write => {
                    serde_json::to_value(cache.write_rule(&op, &args, None, guest).await?)?
                }
            };
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(())
        }
    }
}
