//! The `cachelet` command line.

mod new;
mod policy;
mod progress;
mod serve;

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
        /// Also check that it would be accepted beside the policies of this directory (no
        /// operation declared twice).
        #[arg(long, value_name = "DIR")]
        with: Option<PathBuf>,
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
        /// Arguments as one JSON object, for structured values
        /// (`--args '{"user_id": 42, "filter": {"active": true}}'`); `name=value` ones are
        /// added to it.
        #[arg(long = "args", value_name = "JSON")]
        json_args: Option<String>,
        /// Call the guest's own read/write even where the host renders the rule natively.
        #[arg(long)]
        guest: bool,
    },
    /// Serve a caching reverse proxy in front of an HTTP service: GETs matching the policies'
    /// read routes are cached (as their rules and the upstream's headers say), writes matching
    /// write routes invalidate; an admin API under /_cachelet/ (CACHELET_ADMIN_TOKEN). The
    /// cache is CACHE_URL's (mem:// by default).
    Serve(serve::ServeArgs),
    /// Publish, list, roll back and remove the policies every host of a cache runs (the
    /// cache named by CACHE_URL, CACHE_PREFIX and CACHE_VERSION); sign components and make
    /// keys for signed pushes.
    #[command(subcommand)]
    Policy(policy::Command),
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
    let cli = Cli::parse();
    // `check` and `call` load a policy into a cache of their own that serves nothing and has
    // no loaders: the cache's warning that recaches have no loader would only mislead there.
    let default = match cli.command {
        Command::Check { .. } | Command::Call { .. } => "warn,cachelet::recache=error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr closed, as `2>&1 | head` leaves it) is
        // dropped: the subscriber's own report of it went to stderr with eprintln!, which
        // panics there, and took the request being served with it.
        .log_internal_errors(false)
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where the CLI keeps compiled components: `CACHELET_COMPILE_CACHE`, else the user's cache
/// directory (`$XDG_CACHE_HOME/cachelet/compiled`, `~/.cache/cachelet/compiled`). Bounded as
/// every compile cache is (the least recently used entries go past 2 GiB).
fn compile_cache() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env(cachelet::COMPILE_CACHE_ENV)
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("cachelet/compiled")))
        .or_else(|| env("HOME").map(|h| h.join(".cache/cachelet/compiled")))
}

/// A memory cache with default settings that holds just this policy (compiled through the
/// CLI's compile cache, with progress shown on a terminal).
async fn cache_with(policy: &PathBuf) -> Result<Cache> {
    let mut b = Cache::builder()
        .settings(Settings::default())
        .policy(PolicySource::file(policy));
    if let Some(dir) = compile_cache() {
        b = b.compile_cache(dir);
    }
    progress::while_loading(policy, b.build())
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
        Command::Policy(command) => policy::run(command).await,
        Command::Serve(args) => serve::run(args, compile_cache()).await,
        Command::Check { policy, json, with } => {
            let cache = cache_with(&policy).await?;
            let report = cache.policies().pop().context("no policy loaded")?;
            let beside = match &with {
                None => None,
                Some(dir) => Some(check_beside(&policy, dir).await?),
            };
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
            match compile_cache() {
                Some(dir) => println!(
                    "  precompiled copy: {} ({})",
                    if report.precompiled {
                        "found, loaded from it"
                    } else {
                        "none before this check; kept now"
                    },
                    dir.display()
                ),
                None => {
                    println!("  precompiled copy: no compile cache (set CACHELET_COMPILE_CACHE)")
                }
            }
            if let (Some(dir), Some(n)) = (&with, beside) {
                println!(
                    "  accepted beside the {n} policies of {}: no operation declared twice",
                    dir.display()
                );
            }
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
            json_args,
            guest,
        } => {
            let cache = cache_with(&policy).await?;
            let mut args_all = match json_args {
                None => Args::new(),
                Some(text) => {
                    let v: serde_json::Value =
                        serde_json::from_str(&text).context("--args is not JSON")?;
                    if !v.is_object() {
                        anyhow::bail!("--args must be a JSON object of named arguments");
                    }
                    cachelet::ToArgs::to_args(&v)?.into_owned()
                }
            };
            for a in &args {
                let (name, value) = cachelet::parse_arg(a)?;
                args_all.set(name, value);
            }
            let args = args_all;
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

/// Whether `policy` would be accepted beside the policies of `dir`: the number of those
/// policies, or the error naming the operation declared twice (or the directory's broken
/// files).
async fn check_beside(policy: &PathBuf, dir: &PathBuf) -> Result<usize> {
    let mut b = Cache::builder()
        .settings(Settings::default())
        .policy_dir(dir);
    if let Some(cc) = compile_cache() {
        b = b.compile_cache(cc);
    }
    let cache = b
        .build()
        .await
        .with_context(|| format!("cannot read the policies of {}", dir.display()))?;
    let status = cache.policy_status();
    for p in &status.policies {
        if let Some(f) = &p.failure {
            eprintln!("warning: {} does not load: {}", p.origin, f.message);
        }
    }
    let n = status
        .policies
        .iter()
        .filter(|p| p.serving.is_some())
        .count();
    cache
        .replace_policies([PolicySource::file(policy)])
        .await
        .with_context(|| {
            format!(
                "{} would not be accepted beside the policies of {}",
                policy.display(),
                dir.display()
            )
        })?;
    Ok(n)
}
