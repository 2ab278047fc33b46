//! `intake-sample-platform`: runs the fake AdSample Ads platform with the demo fixture
//! until SIGINT or SIGTERM. The first line on stdout is `listening on http://ADDR`, for
//! scripts to read; the fixture table follows.

use std::io::Write as _;
use std::net::SocketAddr;

use clap::Parser;
use intake_sample_platform::{Fixture, SamplePlatform};

/// A fake advertising platform (AdSample Ads) on 127.0.0.1 for intake's demo and tests.
#[derive(Debug, Parser)]
#[command(
    name = "intake-sample-platform",
    version,
    after_help = "Example:\n  intake-sample-platform --listen 127.0.0.1:0\n  \
                  curl -H 'authorization: Bearer adsample-token-acme' http://127.0.0.1:PORT/v1/me\n\n\
                  The first stdout line is `listening on http://ADDR`. Stop with Ctrl-C."
)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Requests per second each principal may make on average (0: no limit).
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,
    /// Requests each principal may make at once (the token bucket size).
    #[arg(long, value_name = "N")]
    burst: Option<u32>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut fixture = Fixture::demo();
    if let Some(per_second) = args.rate_limit {
        fixture.rate_limit.per_second = per_second;
    }
    if let Some(burst) = args.burst {
        fixture.rate_limit.burst = burst;
    }
    // Signal handlers first: a script may stop us as soon as it reads the first line.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let shutdown = {
        let _context = runtime.enter();
        Shutdown::install()?
    };
    let platform = SamplePlatform::start_on(args.listen, fixture.clone())?;

    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", platform.base_url())?;
    writeln!(out)?;
    writeln!(out, "{fixture}")?;
    out.flush()?;
    drop(out);

    runtime.block_on(shutdown.wait())?;
    drop(platform);
    Ok(())
}

/// SIGINT (Ctrl-C) and, on Unix, SIGTERM, listened for from [`Shutdown::install`] on.
struct Shutdown {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Installs the handlers; needs a tokio runtime context.
    fn install() -> std::io::Result<Shutdown> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Shutdown {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Shutdown {})
        }
    }

    /// Waits for one of the signals.
    async fn wait(self) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            let Shutdown {
                mut interrupt,
                mut terminate,
            } = self;
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            Ok(())
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await
        }
    }
}
