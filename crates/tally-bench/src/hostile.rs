//! Hostile clients (issue 11, finding 2): idle, slowloris and slow-body connections held
//! against a tally on loopback while /healthz is probed and credits are spent, each on a
//! fresh connection; the server's memory and descriptors sampled before, during and after.
//!
//! Every slot holds one connection of its kind; when the server ends it (an answer such
//! as 408 or 503, a close, a reset) the slot records its age and opens a new one after
//! `reopen_after`, until the hold ends. Every loop stops at a fixed instant, and every
//! probe has a fixed budget, so a run takes the hold, the time after it and one budget.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until, timeout};

use crate::report::ms;
use crate::workload::{API_KEY, HOT_USER};

/// The kinds of hostile connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Connects and sends nothing.
    Idle,
    /// A valid GET request header, one byte per second, never finished.
    Slowloris,
    /// A webhook POST announcing `body_bytes`, the body trickled at `body_rate`.
    SlowBody,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Idle, Kind::Slowloris, Kind::SlowBody];

    fn name(self) -> &'static str {
        match self {
            Kind::Idle => "idle",
            Kind::Slowloris => "slowloris",
            Kind::SlowBody => "slow body",
        }
    }
}

/// How many connections of each kind, how slow, and for how long.
#[derive(Clone, Debug)]
pub struct Plan {
    pub idle: usize,
    pub slowloris: usize,
    pub slow_bodies: usize,
    /// The Content-Length a slow body announces.
    pub body_bytes: usize,
    /// Bytes per second of each slow body (one write a second).
    pub body_rate: usize,
    /// How long the hostile connections are held.
    pub hold: Duration,
    /// How long probing goes on after they are dropped (memory is read at its end).
    pub after: Duration,
    /// The slots open over this long at the start, not all in the same instant.
    pub ramp: Duration,
    /// The least time between two opens of one slot.
    pub reopen_after: Duration,
    pub connect_timeout: Duration,
    pub healthz_every: Duration,
    pub spends_per_second: u32,
    /// A /healthz slower than this (connect to the last byte) is a failure.
    pub healthz_limit: Duration,
    /// The whole budget of one probe or spend; past it, it is a failure ("timeout").
    pub budget: Duration,
    /// A row of the timeline every this long.
    pub sample_every: Duration,
}

impl Plan {
    /// What the probe of issue 11 did: 1,100 idle, 300 slowloris, 200 slow 1 MiB bodies.
    pub fn probe_of_issue_11(hold: Duration) -> Plan {
        Plan {
            idle: 1100,
            slowloris: 300,
            slow_bodies: 200,
            body_bytes: 1 << 20,
            body_rate: 1024,
            hold,
            after: Duration::from_secs(10),
            ramp: Duration::from_secs(2).min(hold / 4),
            reopen_after: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            healthz_every: Duration::from_millis(200),
            spends_per_second: 20,
            healthz_limit: Duration::from_secs(1),
            budget: Duration::from_secs(5),
            sample_every: Duration::from_secs(5),
        }
    }

    /// A few seconds and tens of connections, for the test suite.
    pub fn smoke() -> Plan {
        Plan {
            idle: 20,
            slowloris: 10,
            slow_bodies: 5,
            hold: Duration::from_secs(3),
            after: Duration::from_secs(1),
            ramp: Duration::from_millis(300),
            sample_every: Duration::from_secs(1),
            budget: Duration::from_secs(2),
            ..Plan::probe_of_issue_11(Duration::from_secs(3))
        }
    }

    pub fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Idle => self.idle,
            Kind::Slowloris => self.slowloris,
            Kind::SlowBody => self.slow_bodies,
        }
    }

    pub fn connections(&self) -> usize {
        self.idle + self.slowloris + self.slow_bodies
    }
}

/// How the server ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ending {
    /// It answered with this status (0: bytes that are not an HTTP status line).
    Answered(u16),
    /// It closed without an answer.
    Closed,
    /// A reset (or another error) on read or write.
    Reset,
}

/// What the run saw, and the report made of it.
pub struct Outcome {
    pub report: String,
    /// Why the run fails its gate; empty when it passes.
    pub failures: Vec<String>,
    /// Connections opened per kind (in `Kind::ALL` order).
    pub opened: [usize; 3],
    pub healthz_probes: usize,
    pub spends: usize,
}

/// What the slots, the probes and the sampler share.
struct Shared {
    addr: SocketAddr,
    plan: Plan,
    end: Instant,
    /// Connects under way (the server's accept queue may be full).
    connecting: AtomicUsize,
    open: [AtomicUsize; 3],
    opened: [AtomicUsize; 3],
    /// Probes answered so far, ok and failed, per `Probe` (for the timeline).
    probes_ok: [AtomicUsize; 2],
    probes_failed: [AtomicUsize; 2],
    /// Connect failures per kind, by error.
    connect_failed: Mutex<BTreeMap<(usize, String), usize>>,
    /// (kind, how, age) of each connection the server ended.
    ended: Mutex<Vec<(Kind, Ending, Duration)>>,
    /// (kind, age) of each connection still held when the hold ended.
    held_to_end: Mutex<Vec<(Kind, Duration)>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    Healthz,
    Spend,
}

/// One /healthz probe or spend.
#[derive(Clone, Debug)]
struct Sent {
    probe: Probe,
    /// Sent after the hostile connections were dropped.
    after: bool,
    latency: Duration,
    answer: Result<u16, String>,
}

impl Sent {
    fn ok(&self, plan: &Plan) -> bool {
        self.answer == Ok(200) && (self.probe == Probe::Spend || self.latency <= plan.healthz_limit)
    }

    fn label(&self, plan: &Plan) -> String {
        match &self.answer {
            Ok(200) if !self.ok(plan) => format!("200 after > {} ms", plan.healthz_limit.as_millis()),
            Ok(status) => status.to_string(),
            Err(e) => e.clone(),
        }
    }
}

/// One row of the timeline.
struct Sample {
    at: Duration,
    connecting: usize,
    open: [usize; 3],
    /// /healthz probes answered (ok, failed) since the row before.
    healthz: (usize, usize),
    /// Descriptors and VmRSS (KiB) of the server, when it is a process of its own.
    fds: Option<usize>,
    rss_kib: Option<u64>,
}

/// Holds the plan's connections against `addr` (a loopback address) while probing,
/// and reports. `pid` is the server's process, for memory and descriptors.
pub async fn attack(addr: SocketAddr, plan: &Plan, pid: Option<u32>) -> anyhow::Result<Outcome> {
    anyhow::ensure!(addr.ip().is_loopback(), "hostile clients only target loopback, not {addr}");
    let start = Instant::now();
    let end = start + plan.hold;
    let stop = end + plan.after;
    let before = pid.map(|p| (crate::server::memory(p), fds(p)));
    let shared = Arc::new(Shared {
        addr,
        plan: plan.clone(),
        end,
        open: Default::default(),
        opened: Default::default(),
        connecting: AtomicUsize::new(0),
        probes_ok: Default::default(),
        probes_failed: Default::default(),
        connect_failed: Mutex::default(),
        ended: Mutex::default(),
        held_to_end: Mutex::default(),
    });

    // The kinds interleaved over the ramp, so that a server which accepts only so many
    // gets some of each.
    let mut tasks = JoinSet::new();
    for kind in Kind::ALL {
        let n = plan.count(kind);
        for j in 0..n {
            let first = start + plan.ramp.mul_f64(j as f64 / n as f64);
            tasks.spawn(slot(shared.clone(), kind, first));
        }
    }
    let probes = tokio::spawn(probe_loop(shared.clone(), Probe::Healthz, plan.healthz_every, stop));
    let spend_every = Duration::from_secs(1) / plan.spends_per_second.max(1);
    let spends = tokio::spawn(probe_loop(shared.clone(), Probe::Spend, spend_every, stop));
    let sampler = tokio::spawn(sample(shared.clone(), pid, start, stop));

    while tasks.join_next().await.is_some() {}
    let mut sent = probes.await?;
    sent.extend(spends.await?);
    let (timeline, peak) = sampler.await?;
    let after = pid.map(|p| (crate::server::memory(p), fds(p)));

    let opened = Kind::ALL.map(|k| shared.opened[k as usize].load(Ordering::Relaxed));
    let mut failures = Vec::new();
    for (probe, name) in [(Probe::Healthz, "/healthz probes"), (Probe::Spend, "spends")] {
        let these: Vec<&Sent> = sent.iter().filter(|s| s.probe == probe).collect();
        let bad: Vec<&&Sent> = these.iter().filter(|s| !s.ok(plan)).collect();
        if let Some(first) = bad.first() {
            failures.push(format!("{} of {} {name} failed (first: {})", bad.len(), these.len(), first.label(plan)));
        }
    }
    let mut report = String::new();
    write_report(&mut report, plan, &shared, &timeline, &sent, before, peak, after)?;
    Ok(Outcome {
        report,
        failures,
        opened,
        healthz_probes: sent.iter().filter(|s| s.probe == Probe::Healthz).count(),
        spends: sent.iter().filter(|s| s.probe == Probe::Spend).count(),
    })
}

/// One slot: opens a connection of its kind, holds it, and opens another when the server
/// ends it, until the hold ends.
async fn slot(shared: Arc<Shared>, kind: Kind, first: Instant) {
    let plan = &shared.plan;
    let mut next = first;
    while next < shared.end {
        sleep_until(next).await;
        next = Instant::now() + plan.reopen_after;
        shared.connecting.fetch_add(1, Ordering::Relaxed);
        let connected = tokio::select! {
            c = timeout(plan.connect_timeout, TcpStream::connect(shared.addr)) => Some(c),
            _ = sleep_until(shared.end) => None,
        };
        shared.connecting.fetch_sub(1, Ordering::Relaxed);
        let Some(connected) = connected else { return };
        let mut stream = match connected {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                count_connect_failure(&shared, kind, format!("{:?}", e.kind()));
                continue;
            }
            Err(_) => {
                count_connect_failure(&shared, kind, "timeout".to_owned());
                continue;
            }
        };
        let opened = Instant::now();
        shared.opened[kind as usize].fetch_add(1, Ordering::Relaxed);
        shared.open[kind as usize].fetch_add(1, Ordering::Relaxed);
        let ending = tokio::select! {
            ending = hold(kind, &mut stream, plan) => Some(ending),
            _ = sleep_until(shared.end) => None,
        };
        shared.open[kind as usize].fetch_sub(1, Ordering::Relaxed);
        let age = opened.elapsed();
        match ending {
            Some(ending) => shared.ended.lock().expect("not poisoned").push((kind, ending, age)),
            None => shared.held_to_end.lock().expect("not poisoned").push((kind, age)),
        }
    }
}

fn count_connect_failure(shared: &Shared, kind: Kind, why: String) {
    *shared.connect_failed.lock().expect("not poisoned").entry((kind as usize, why)).or_default() += 1;
}

/// Holds one connection until the server ends it.
async fn hold(kind: Kind, stream: &mut TcpStream, plan: &Plan) -> Ending {
    let host = stream.peer_addr().map_or_else(|_| "127.0.0.1".to_owned(), |a| a.to_string());
    let (mut rd, mut wr) = stream.split();
    let mut buf = [0u8; 1024];
    let mut writes: Box<dyn Iterator<Item = Vec<u8>> + Send> = match kind {
        Kind::Idle => return ending(rd.read(&mut buf).await, &buf, &mut rd).await,
        Kind::Slowloris => Box::new(slowloris_header(&host).map(|b| vec![b])),
        Kind::SlowBody => Box::new(slow_body(&host, plan.body_bytes, plan.body_rate)),
    };
    let mut tick = interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            read = rd.read(&mut buf) => return ending(read, &buf, &mut rd).await,
            _ = tick.tick() => {
                // A body sent whole waits for its answer.
                let Some(bytes) = writes.next() else { continue };
                if let Err(e) = wr.write_all(&bytes).await {
                    return match timeout(Duration::from_millis(200), rd.read(&mut buf)).await {
                        Ok(read) => ending(read, &buf, &mut rd).await,
                        Err(_) if is_reset(&e) => Ending::Reset,
                        Err(_) => Ending::Closed,
                    };
                }
            }
        }
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe)
}

/// How the server ended a connection, from the first read that returned.
async fn ending<R: AsyncRead + Unpin>(read: io::Result<usize>, buf: &[u8], rd: &mut R) -> Ending {
    match read {
        Ok(0) => Ending::Closed,
        Ok(n) => {
            let mut answer = buf[..n].to_vec();
            // The status line is almost always in the first read; wait briefly if not.
            let deadline = Instant::now() + Duration::from_millis(200);
            let mut more = [0u8; 256];
            while !answer.contains(&b'\n') && answer.len() < 4096 {
                match tokio::time::timeout_at(deadline, rd.read(&mut more)).await {
                    Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&more[..n]),
                    _ => break,
                }
            }
            Ending::Answered(status(&answer).unwrap_or(0))
        }
        Err(_) => Ending::Reset,
    }
}

/// The status code of an HTTP/1 answer.
fn status(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// A valid GET request header that never ends: one more `X-Pad` line whenever needed.
fn slowloris_header(host: &str) -> impl Iterator<Item = u8> + Send + use<> {
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tally-bench-slowloris\r\n");
    // A line of 30 bytes: at a byte a second, 100 headers (hyper's limit) take 50 minutes.
    let pads = (0u64..).flat_map(|n| format!("X-Pad-{n:05}: padding-padding\r\n").into_bytes());
    head.into_bytes().into_iter().chain(pads)
}

/// A webhook POST's header, then its body in writes of `rate` bytes.
fn slow_body(host: &str, len: usize, rate: usize) -> impl Iterator<Item = Vec<u8>> + Send + use<> {
    let head = format!(
        "POST /api/webhooks/stripe HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Stripe-Signature: t=0,v1=00\r\nContent-Length: {len}\r\n\r\n"
    );
    let rate = rate.max(1);
    let body = move |at: usize| -> Vec<u8> {
        (at..(at + rate).min(len))
            .map(|i| match i {
                0 => b'{',
                _ if i + 1 == len => b'}',
                _ => b' ',
            })
            .collect()
    };
    std::iter::once(head.into_bytes()).chain((0..len).step_by(rate).map(body))
}

/// Sends one probe every `every` until `stop`; returns what each got.
async fn probe_loop(shared: Arc<Shared>, probe: Probe, every: Duration, stop: Instant) -> Vec<Sent> {
    let addr = shared.addr;
    let run = rand::random::<u32>();
    let mut tick = interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut tasks = JoinSet::new();
    let mut sent = Vec::new();
    for i in 0u64.. {
        tick.tick().await;
        let now = Instant::now();
        if now >= stop {
            break;
        }
        let request = match probe {
            Probe::Healthz => healthz_request(addr),
            Probe::Spend => spend_request(addr, &format!("hostile-{run:08x}-{i}")),
        };
        let shared = shared.clone();
        tasks.spawn(async move {
            let (latency, answer) = exchange(addr, &request, shared.plan.budget).await;
            let sent = Sent { probe, after: now >= shared.end, latency, answer };
            let counter = if sent.ok(&shared.plan) { &shared.probes_ok } else { &shared.probes_failed };
            counter[probe as usize].fetch_add(1, Ordering::Relaxed);
            sent
        });
        while let Some(done) = tasks.try_join_next() {
            sent.extend(done.ok());
        }
    }
    while let Some(done) = tasks.join_next().await {
        sent.extend(done.ok());
    }
    sent
}

fn healthz_request(addr: SocketAddr) -> Vec<u8> {
    format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes()
}

fn spend_request(addr: SocketAddr, key: &str) -> Vec<u8> {
    let body = serde_json::json!({ "user_id": HOT_USER, "amount": 1, "idempotency_key": key, "reason": "bench" });
    let body = body.to_string();
    format!(
        "POST /api/credits/spend HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Connects, sends `request` and reads the answer to its end, within `budget`.
async fn exchange(addr: SocketAddr, request: &[u8], budget: Duration) -> (Duration, Result<u16, String>) {
    let started = Instant::now();
    let answer = timeout(budget, async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect {:?}", e.kind()))?;
        let _ = stream.set_nodelay(true);
        stream.write_all(request).await.map_err(|e| format!("write {:?}", e.kind()))?;
        let mut answer = Vec::new();
        (&mut stream).take(64 * 1024).read_to_end(&mut answer).await.map_err(|e| format!("read {:?}", e.kind()))?;
        status(&answer).ok_or_else(|| if answer.is_empty() { "closed".to_owned() } else { "not HTTP".to_owned() })
    })
    .await;
    match answer {
        Ok(answer) => (started.elapsed(), answer),
        Err(_) => (budget, Err(format!("timeout ({} s)", budget.as_secs_f64()))),
    }
}

/// Peak (VmRSS KiB, descriptors) over the run.
type Peak = Option<(u64, usize)>;

/// Samples every 200 ms until `stop`: a timeline row every `sample_every`, and the peaks.
async fn sample(shared: Arc<Shared>, pid: Option<u32>, start: Instant, stop: Instant) -> (Vec<Sample>, Peak) {
    let mut timeline = Vec::new();
    let mut peak: Peak = pid.map(|_| (0, 0));
    let mut tick = interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    // Rows fall a little before each multiple of `sample_every`, so that the last one
    // under attack is not taken in the instant the slots let go at its end.
    let every = shared.plan.sample_every;
    let row_at = |k: u32| if k == 0 { start } else { start + (every * k).saturating_sub(Duration::from_millis(300)) };
    let mut rows = 0;
    let mut healthz_before = (0, 0);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let reading = pid.map(|p| (crate::server::memory(p).0, fds(p)));
        if let (Some((rss, fds)), Some((peak_rss, peak_fds))) = (reading, peak.as_mut()) {
            *peak_rss = (*peak_rss).max(rss);
            *peak_fds = (*peak_fds).max(fds);
        }
        if now >= row_at(rows) || now >= stop {
            let healthz = (
                shared.probes_ok[Probe::Healthz as usize].load(Ordering::Relaxed),
                shared.probes_failed[Probe::Healthz as usize].load(Ordering::Relaxed),
            );
            timeline.push(Sample {
                at: now - start,
                connecting: shared.connecting.load(Ordering::Relaxed),
                open: Kind::ALL.map(|k| shared.open[k as usize].load(Ordering::Relaxed)),
                healthz: (healthz.0 - healthz_before.0, healthz.1 - healthz_before.1),
                fds: reading.map(|r| r.1),
                rss_kib: reading.map(|r| r.0),
            });
            healthz_before = healthz;
            while row_at(rows) <= now {
                rows += 1;
            }
        }
        if now >= stop {
            return (timeline, peak);
        }
    }
}

/// Open descriptors of a process (0 if unreadable).
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

fn mb(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

#[allow(clippy::too_many_arguments)]
fn write_report(
    out: &mut String,
    plan: &Plan,
    shared: &Shared,
    timeline: &[Sample],
    sent: &[Sent],
    before: Option<((u64, u64), usize)>,
    peak: Peak,
    after: Option<((u64, u64), usize)>,
) -> std::fmt::Result {
    writeln!(
        out,
        "Held for {} s: {} idle connections (nothing sent), {} slowloris (a GET header, 1 byte/s, never \
         finished), {} slow bodies (webhook POSTs of Content-Length {}, {} bytes/s). A connection the server \
         ends is opened again after {} s. Meanwhile GET /healthz every {} ms and {} spends/s, each on a fresh \
         connection (budget {} s; /healthz fails past {} ms); then {} s more of probing without the attack.\n",
        plan.hold.as_secs(),
        plan.idle,
        plan.slowloris,
        plan.slow_bodies,
        plan.body_bytes,
        plan.body_rate,
        secs(plan.reopen_after),
        plan.healthz_every.as_millis(),
        plan.spends_per_second,
        secs(plan.budget),
        plan.healthz_limit.as_millis(),
        plan.after.as_secs(),
    )?;

    writeln!(out, "### Connections held over time\n")?;
    writeln!(
        out,
        "Held as the client sees them: connected, and not ended by the server (a connection may wait in the \
         server's accept queue). Connecting: connects under way. /healthz: probes answered since the row before.\n"
    )?;
    writeln!(
        out,
        "| t s | idle | slowloris | slow bodies | connecting | /healthz ok | /healthz failed | server fds | server VmRSS MB |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    let dash = || "–".to_owned();
    for s in timeline {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            secs(s.at),
            s.open[0],
            s.open[1],
            s.open[2],
            s.connecting,
            s.healthz.0,
            s.healthz.1,
            s.fds.map_or_else(dash, |n| n.to_string()),
            s.rss_kib.map_or_else(dash, mb)
        )?;
    }

    writeln!(out, "\n### Connections the server ended\n")?;
    writeln!(
        out,
        "| kind | planned | opened | ended by the server | how (count) | median age s | max age s | held to the end | \
         connect failures |\n|---|---:|---:|---:|---|---:|---:|---:|---|"
    )?;
    let ended = shared.ended.lock().expect("not poisoned");
    let held = shared.held_to_end.lock().expect("not poisoned");
    let failed = shared.connect_failed.lock().expect("not poisoned");
    let mut answered_503 = 0;
    for kind in Kind::ALL {
        let mut ages: Vec<Duration> = ended.iter().filter(|e| e.0 == kind).map(|e| e.2).collect();
        ages.sort();
        let mut how: BTreeMap<Ending, usize> = BTreeMap::new();
        for e in ended.iter().filter(|e| e.0 == kind) {
            *how.entry(e.1).or_default() += 1;
        }
        answered_503 += how.get(&Ending::Answered(503)).copied().unwrap_or(0);
        let how = how
            .iter()
            .map(|(e, n)| match e {
                Ending::Answered(0) => format!("answered, not HTTP: {n}"),
                Ending::Answered(code) => format!("answered {code}: {n}"),
                Ending::Closed => format!("closed: {n}"),
                Ending::Reset => format!("reset: {n}"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut held_ages: Vec<Duration> = held.iter().filter(|h| h.0 == kind).map(|h| h.1).collect();
        held_ages.sort();
        let connects = failed
            .iter()
            .filter(|((k, _), _)| *k == kind as usize)
            .map(|((_, why), n)| format!("{why}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} (longest {} s) | {} |",
            kind.name(),
            plan.count(kind),
            shared.opened[kind as usize].load(Ordering::Relaxed),
            ages.len(),
            if how.is_empty() { dash() } else { how },
            if ages.is_empty() { dash() } else { secs(quantile(&ages, 0.5)) },
            ages.last().map_or_else(dash, |a| secs(*a)),
            held_ages.len(),
            held_ages.last().map_or_else(|| "0.0".to_owned(), |a| secs(*a)),
            if connects.is_empty() { "0".to_owned() } else { connects },
        )?;
    }
    writeln!(out, "\n503 answers to hostile connections: {answered_503}.\n")?;

    writeln!(out, "### /healthz and spends\n")?;
    writeln!(
        out,
        "| probe | while | sent | ok | failed | p50 ms | p99 ms | max ms | answers |\n|---|---|---:|---:|---:|---:|---:|---:|---|"
    )?;
    for (probe, name) in [(Probe::Healthz, "GET /healthz"), (Probe::Spend, "POST /api/credits/spend")] {
        for (after, phase) in [(false, "under attack"), (true, "after it")] {
            let these: Vec<&Sent> = sent.iter().filter(|s| s.probe == probe && s.after == after).collect();
            let mut latencies: Vec<Duration> = these.iter().map(|s| s.latency).collect();
            latencies.sort();
            let ok = these.iter().filter(|s| s.ok(plan)).count();
            let mut answers: BTreeMap<String, usize> = BTreeMap::new();
            for s in &these {
                *answers.entry(s.label(plan)).or_default() += 1;
            }
            let answers = answers.iter().map(|(a, n)| format!("{a}: {n}")).collect::<Vec<_>>().join(", ");
            writeln!(
                out,
                "| {name} | {phase} | {} | {ok} | {} | {} | {} | {} | {} |",
                these.len(),
                these.len() - ok,
                ms(quantile(&latencies, 0.5)),
                ms(quantile(&latencies, 0.99)),
                ms(latencies.last().copied().unwrap_or_default()),
                if answers.is_empty() { dash() } else { answers },
            )?;
        }
    }
    writeln!(
        out,
        "\nLatency runs from the connect to the answer's last byte; a probe past its budget counts at the budget.\n"
    )?;

    if let (Some(((rss0, hwm0), fds0)), Some((peak_rss, peak_fds)), Some(((rss1, hwm1), fds1))) = (before, peak, after)
    {
        writeln!(out, "### Memory and descriptors of `tally serve`\n")?;
        writeln!(out, "| when | VmRSS MB | VmHWM MB | open fds |\n|---|---:|---:|---:|")?;
        writeln!(out, "| before the attack | {} | {} | {fds0} |", mb(rss0), mb(hwm0))?;
        writeln!(
            out,
            "| peak over the run (VmRSS and fds sampled every 200 ms; VmHWM) | {} | {} | {peak_fds} |",
            mb(peak_rss),
            mb(hwm1)
        )?;
        writeln!(out, "| {} s after it | {} | {} | {fds1} |", plan.after.as_secs(), mb(rss1), mb(hwm1))?;
        writeln!(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn status_lines_are_read() {
        assert_eq!(status(b"HTTP/1.1 408 Request Timeout\r\n\r\n"), Some(408));
        assert_eq!(status(b"HTTP/1.0 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(status(b"HTTP/1.1 200"), Some(200));
        assert_eq!(status(b"garbage"), None);
        assert_eq!(status(b""), None);
    }

    #[test]
    fn slowloris_header_is_valid_and_never_ends() {
        let bytes: Vec<u8> = slowloris_header("127.0.0.1:1").take(10_000).collect();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        assert!(!text.contains("\r\n\r\n"));
        assert!(text.lines().skip(3).take(300).all(|l| l.starts_with("X-Pad-") && l.ends_with(": padding-padding")));
    }

    #[test]
    fn slow_body_sends_its_content_length_in_writes_of_the_rate() {
        let writes: Vec<Vec<u8>> = slow_body("h", 2500, 1000).collect();
        let head = String::from_utf8(writes[0].clone()).unwrap();
        assert!(
            head.starts_with("POST /api/webhooks/stripe HTTP/1.1\r\n")
                && head.ends_with("Content-Length: 2500\r\n\r\n")
        );
        assert_eq!(writes[1..].iter().map(Vec::len).collect::<Vec<_>>(), [1000, 1000, 500]);
        assert_eq!(writes[1][0], b'{');
        assert_eq!(*writes[3].last().unwrap(), b'}');
    }

    /// A server that answers /healthz and spends at once and any other connection with a
    /// 408 0.3 s after it was accepted.
    async fn impatient_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_millis(300);
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    let complete = loop {
                        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
                            Ok(_) => return,
                            Err(_) => break false,
                        }
                        let text = String::from_utf8_lossy(&seen);
                        if text.starts_with("GET /healthz")
                            && text.contains("Connection: close")
                            && text.ends_with("\r\n\r\n")
                        {
                            break true;
                        }
                        if text.starts_with("POST /api/credits/spend") && text.ends_with('}') {
                            break true;
                        }
                    };
                    let answer: &[u8] = if complete {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                    } else {
                        b"HTTP/1.1 408 Request Timeout\r\n\r\n"
                    };
                    let _ = stream.write_all(answer).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn slots_record_what_the_server_ended_and_open_again() {
        let addr = impatient_server().await;
        let plan = Plan {
            idle: 3,
            slowloris: 2,
            slow_bodies: 2,
            hold: Duration::from_millis(1600),
            after: Duration::from_millis(300),
            ramp: Duration::from_millis(50),
            reopen_after: Duration::from_millis(1000),
            sample_every: Duration::from_millis(500),
            ..Plan::smoke()
        };
        let outcome = attack(addr, &plan, None).await.unwrap();
        assert!(outcome.failures.is_empty(), "{:?}\n{}", outcome.failures, outcome.report);
        // Each slot is opened at 0 and 1 s, and each connection ended 0.3 s after it opened.
        assert_eq!(outcome.opened, [6, 4, 4], "{}", outcome.report);
        assert!(outcome.report.contains("| idle | 3 | 6 | 6 | answered 408: 6 | 0.3 |"), "{}", outcome.report);
        assert!(outcome.report.contains("| slowloris | 2 | 4 | 4 | answered 408: 4 | 0.3 |"), "{}", outcome.report);
        assert!(outcome.report.contains("| slow body | 2 | 4 | 4 | answered 408: 4 | 0.3 |"), "{}", outcome.report);
        assert!(outcome.healthz_probes >= 5 && outcome.spends >= 20, "{}", outcome.report);
    }
}
