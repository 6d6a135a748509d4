//! Progress on a terminal while a component loads: a Python or JavaScript component compiles
//! for seconds the first time. Nothing is shown when stderr is not a terminal, nor for a load
//! that ends within a moment.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a load runs before progress is shown.
const QUIET_FOR: Duration = Duration::from_millis(300);

/// Runs `load`, showing on stderr, if it is a terminal, that `policy` compiles and for how
/// long.
pub async fn while_loading<T>(policy: &Path, load: impl Future<Output = T>) -> T {
    if !std::io::stderr().is_terminal() {
        return load.await;
    }
    let size = std::fs::metadata(policy).map(|m| m.len()).unwrap_or(0);
    let t0 = Instant::now();
    let mut load = std::pin::pin!(load);
    let mut shown = false;
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + QUIET_FOR,
        Duration::from_millis(200),
    );
    let spinner = ['|', '/', '-', '\\'];
    let mut n = 0;
    let out = loop {
        tokio::select! {
            out = &mut load => break out,
            _ = tick.tick() => {
                shown = true;
                n += 1;
                eprint!(
                    "\r{} compiling {} ({:.1} MB, kept compiled for next time)... {:.1} s ",
                    spinner[n % spinner.len()],
                    policy.display(),
                    size as f64 / 1e6,
                    t0.elapsed().as_secs_f64()
                );
                let _ = std::io::stderr().flush();
            }
        }
    };
    if shown {
        // Clear the line.
        eprint!("\r\x1b[2K");
        let _ = std::io::stderr().flush();
    }
    out
}
