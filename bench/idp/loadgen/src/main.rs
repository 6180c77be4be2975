//! `broker-bench`: the load generator of `bench/idp/run`. Each load subcommand measures
//! one endpoint (or the INSERT reference), prints its figures and appends them to the
//! results file; `table` prints the side-by-side comparison. See docs/benchmarks.md.

mod broker;
mod cpu;
mod http;
mod stats;

use anyhow::{bail, Context};
use broker_store::cache::Redis;
use clap::{Args, Parser, Subcommand};
use http::{Load, Requests, Target};
use stats::{Measure, PhaseResult};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "broker-bench", about = "Load generator of the identity provider benchmark (bench/idp)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct LoadArgs {
    /// Label of the measure in the results file (broker.token, node.token, …).
    #[arg(long)]
    label: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Client threads (one single-threaded runtime each).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of unmeasured load first.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// JSON-lines file the figures are appended to.
    #[arg(long)]
    results: Option<PathBuf>,
}

impl LoadArgs {
    fn load(&self, seconds: f64) -> Load {
        Load { connections: self.connections, threads: self.threads, duration: Duration::from_secs_f64(seconds), expect: 200 }
    }

    /// Runs the measured phase `f`, prints its figures (with the CPU time each process
    /// spent per request) and appends them to the results file.
    fn measure(&self, f: impl FnOnce() -> anyhow::Result<Measure>) -> anyhow::Result<PhaseResult> {
        let before = cpu::Snapshot::take();
        let m = f()?;
        let cpu = cpu::Snapshot::take().per_request(&before, m.ok());
        let r = self.report(&m)?;
        if !cpu.is_empty() {
            println!("  {:<18} cpu per request: {cpu}", "");
        }
        Ok(r)
    }

    fn report(&self, m: &Measure) -> anyhow::Result<PhaseResult> {
        let r = m.result(&self.label);
        r.print();
        if let Some(e) = &m.first_error {
            eprintln!("  first error of {}: {e}", self.label);
        }
        if let Some(file) = &self.results {
            r.append(file)?;
        }
        Ok(r)
    }
}

#[derive(Args)]
struct BrokerArgs {
    /// The broker's base URL (its issuer).
    #[arg(long)]
    url: String,
    /// The file `seed` wrote.
    #[arg(long)]
    seeded: PathBuf,
    #[arg(long, env = "REDIS_URL")]
    redis: String,
    /// The broker's cache prefix (AC_CACHE_PREFIX).
    #[arg(long, default_value = "ac:")]
    prefix: String,
}

#[derive(Subcommand)]
enum Command {
    /// Prints a free TCP port on 127.0.0.1.
    FreePort,
    /// Waits until GET URL answers 200.
    Wait {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Seeds a migrated broker database (structure, aidant, usager, mandat, client) and
    /// writes what it created as JSON.
    Seed {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[arg(long, default_value = "https://fc.banc-essai.exemple/callback")]
        redirect_uri: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// GET load on one URL (discovery, JWKS).
    Get {
        #[arg(long)]
        url: String,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// POST load on an OAuth token endpoint with the client_credentials grant
    /// (client_secret_post); the access token must be an ES256 JWT.
    ClientCredentials {
        /// The token endpoint's URL.
        #[arg(long)]
        url: String,
        #[arg(long)]
        client_id: String,
        #[arg(long)]
        client_secret: String,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// POST load on node-oidc-provider's /token with the authorization_code grant
    /// (client_secret_post), one fresh code per request, minted by the reference's own
    /// models (`GET <mint-url>?n=N` answers N codes, one a line); the id_token must be an
    /// ES256 JWT.
    AuthorizationCode {
        /// The token endpoint's URL.
        #[arg(long)]
        url: String,
        /// The minting endpoint (`server.js` with `MINT_PORT`: http://127.0.0.1:PORT/mint).
        #[arg(long)]
        mint_url: String,
        #[arg(long)]
        client_id: String,
        #[arg(long)]
        client_secret: String,
        #[arg(long)]
        redirect_uri: String,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// POST load on the broker's /token, one fresh authorization code per request.
    Token {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// GET load on the broker's /userinfo, one fresh access token per request.
    Userinfo {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Plain single-row INSERT transactions, one writer per connection.
    Insert {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Prints the side-by-side table of a results file.
    Table {
        #[arg(long)]
        results: PathBuf,
    },
}

fn split_url(url: &str) -> anyhow::Result<(Target, String)> {
    let parsed = url::Url::parse(url).with_context(|| format!("URL : {url}"))?;
    let base = format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or("127.0.0.1"));
    let base = match parsed.port() {
        Some(p) => format!("{base}:{p}"),
        None => base,
    };
    let path = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    Ok((Target::parse(&base)?, path))
}

fn check(what: &str, (status, body): (u16, String), want: impl Fn(&str) -> bool) -> anyhow::Result<()> {
    if status != 200 || !want(&body) {
        bail!("{what}: unexpected answer (status {status}):\n{}", body.chars().take(800).collect::<String>());
    }
    Ok(())
}

/// Whether `field` of the JSON `body` is a JWS whose protected header says ES256.
fn has_es256_jwt(body: &str, field: &str) -> bool {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(body) else { return false };
    let Some(jwt) = json.get(field).and_then(|t| t.as_str()) else { return false };
    let parts: Vec<&str> = jwt.split('.').collect();
    parts.len() == 3
        && data_encoding::BASE64URL_NOPAD
            .decode(parts[0].as_bytes())
            .ok()
            .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
            .is_some_and(|h| h.get("alg").and_then(|a| a.as_str()) == Some("ES256"))
}

/// `n` authorization codes from the reference's minting endpoint (`GET path?n=N`, one
/// code a line).
fn minted_codes(target: &Target, path: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let (status, body) = http::probe(target, &target.get(&format!("{path}?n={n}"), &[("Connection", "close")]))?;
    if status != 200 {
        bail!("minting {n} codes: status {status}: {}", body.chars().take(400).collect::<String>());
    }
    let codes: Vec<String> = body.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
    if codes.len() != n {
        bail!("minting {n} codes: {} received", codes.len());
    }
    Ok(codes)
}

/// Runs the single-use phase of `/token` or `/userinfo`: a warm-up on a first batch,
/// which also estimates the rate, then a batch sized for the measured seconds, minted
/// just before the measure.
fn single_use(args: &LoadArgs, what: broker::Mint, make: impl Fn(&str) -> Vec<u8>, target: &Target, mint: impl Fn(usize) -> anyhow::Result<Vec<String>>) -> anyhow::Result<()> {
    let pilot = mint(10_000)?;
    let warm = http::run(target, Requests::Each(pilot.iter().map(|c| make(c)).collect()), args.load(args.warmup.max(0.5)))?;
    if warm.errors > 0 {
        bail!("{}: {} errors during the warm-up; first: {}", args.label, warm.errors, warm.first_error.unwrap_or_default());
    }
    let n = ((warm.rps() * args.seconds * 1.5) as usize + 2_000).min(2_000_000);
    let t = Instant::now();
    let items = mint(n)?;
    let requests = Requests::Each(items.iter().map(|c| make(c)).collect());
    let noun = match what {
        broker::Mint::Codes => "codes",
        broker::Mint::AccessTokens => "access tokens",
    };
    println!("  ({} {noun} minted in {:.1} s)", items.len(), t.elapsed().as_secs_f64());
    args.measure(|| http::run(target, requests, args.load(args.seconds)))?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::FreePort => {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", l.local_addr()?.port());
        }
        Command::Wait { url, timeout } => {
            let (target, path) = split_url(&url)?;
            let req = target.get(&path, &[("Connection", "close")]);
            let until = Instant::now() + Duration::from_secs(timeout);
            loop {
                match http::probe(&target, &req) {
                    Ok((200, _)) => break,
                    _ if Instant::now() < until => std::thread::sleep(Duration::from_millis(200)),
                    Ok((status, body)) => bail!("{url}: status {status}\n{body}"),
                    Err(e) => bail!("{url}: {e}"),
                }
            }
        }
        Command::Seed { database_url, redirect_uri, out } => {
            let db = broker::open_db(&database_url, 2)?;
            let seeded = broker::seed(&db, &redirect_uri)?;
            std::fs::write(&out, serde_json::to_string_pretty(&seeded)?)?;
        }
        Command::Get { url, load } => {
            let (target, path) = split_url(&url)?;
            let req = target.get(&path, &[]);
            check(&load.label, http::probe(&target, &req)?, |b| b.starts_with('{'))?;
            if load.warmup > 0.0 {
                http::run(&target, Requests::Repeat(req.clone()), load.load(load.warmup))?;
            }
            load.measure(|| http::run(&target, Requests::Repeat(req), load.load(load.seconds)))?;
        }
        Command::ClientCredentials { url, client_id, client_secret, load } => {
            let (target, path) = split_url(&url)?;
            let req = target.post_form(
                &path,
                &[("grant_type", "client_credentials"), ("client_id", &client_id), ("client_secret", &client_secret)],
            );
            check(&load.label, http::probe(&target, &req)?, |b| has_es256_jwt(b, "access_token"))?;
            if load.warmup > 0.0 {
                http::run(&target, Requests::Repeat(req.clone()), load.load(load.warmup))?;
            }
            load.measure(|| http::run(&target, Requests::Repeat(req), load.load(load.seconds)))?;
        }
        Command::AuthorizationCode { url, mint_url, client_id, client_secret, redirect_uri, load } => {
            let (target, path) = split_url(&url)?;
            let (mint_target, mint_path) = split_url(&mint_url)?;
            let make = |code: &str| {
                target.post_form(
                    &path,
                    &[
                        ("grant_type", "authorization_code"),
                        ("code", code),
                        ("redirect_uri", &redirect_uri),
                        ("client_id", &client_id),
                        ("client_secret", &client_secret),
                    ],
                )
            };
            let mint = |n: usize| minted_codes(&mint_target, &mint_path, n);
            let first = mint(1)?;
            check(&load.label, http::probe(&target, &make(&first[0]))?, |b| has_es256_jwt(b, "id_token") && b.contains("\"access_token\""))?;
            single_use(&load, broker::Mint::Codes, make, &target, mint)?;
        }
        Command::Token { broker: b, load } => {
            let seeded: broker::Seeded = serde_json::from_slice(&std::fs::read(&b.seeded)?)?;
            let cache = Redis::new(&b.redis, &b.prefix)?;
            let target = Target::parse(&b.url)?;
            let make = |code: &str| {
                target.post_form(
                    "/token",
                    &[
                        ("grant_type", "authorization_code"),
                        ("code", code),
                        ("redirect_uri", &seeded.redirect_uri),
                        ("client_id", &seeded.client_id),
                        ("client_secret", &seeded.client_secret),
                    ],
                )
            };
            let first = broker::mint(&cache, &seeded, broker::Mint::Codes, 1)?;
            check(&load.label, http::probe(&target, &make(&first[0]))?, |b| has_es256_jwt(b, "id_token") && b.contains("\"access_token\""))?;
            single_use(&load, broker::Mint::Codes, make, &target, |n| broker::mint(&cache, &seeded, broker::Mint::Codes, n))?;
        }
        Command::Userinfo { broker: b, load } => {
            let seeded: broker::Seeded = serde_json::from_slice(&std::fs::read(&b.seeded)?)?;
            let cache = Redis::new(&b.redis, &b.prefix)?;
            let target = Target::parse(&b.url)?;
            let make = |token: &str| target.get("/userinfo", &[("Authorization", &format!("Bearer {token}"))]);
            let first = broker::mint(&cache, &seeded, broker::Mint::AccessTokens, 1)?;
            check(&load.label, http::probe(&target, &make(&first[0]))?, |b| b.contains(&format!("\"given_name\":\"{}\"", broker::USAGER_GIVEN_NAME)))?;
            single_use(&load, broker::Mint::AccessTokens, make, &target, |n| broker::mint(&cache, &seeded, broker::Mint::AccessTokens, n))?;
        }
        Command::Insert { database_url, load } => {
            let db = broker::open_db(&database_url, load.connections as u32)?;
            broker::insert_rate(&db, load.connections, Duration::from_secs_f64(load.warmup.max(0.5)))?;
            load.measure(|| broker::insert_rate(&db, load.connections, Duration::from_secs_f64(load.seconds)))?;
        }
        Command::Table { results } => {
            let all = stats::read_results(&results)?;
            let met = stats::print_table(&all);
            println!();
            println!("{}", if met { "Every target is met." } else { "Not every target is met." });
        }
    }
    Ok(())
}
