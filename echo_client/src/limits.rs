//! The machine's limits, checked before the first connection: a run that cannot fit says so in
//! one line instead of failing 20,000 connections into the test.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use crate::cli::Plan;

/// Descriptors a process needs besides its connections: stdio, epoll instances, the report
/// pipe, and room for the unexpected.
const SPARE_FDS: u64 = 32;

/// Connections per source address above which the kernel's port search becomes the cost of
/// connecting.
const BUSY_SOURCE: u64 = 8_000;

/// Raises RLIMIT_NOFILE's soft limit to the hard limit, then checks that each process's share
/// of the connections fits, and that no source address needs more ephemeral ports than it has.
pub fn prepare(plan: &Plan) -> Result<(), String> {
    let limit = raise_nofile()?;
    let per_process = plan.connections.div_ceil(u64::from(plan.processes));
    let need = per_process + u64::from(plan.threads) + SPARE_FDS;
    if need > limit {
        let room = limit
            .saturating_sub(u64::from(plan.threads) + SPARE_FDS)
            .max(1);
        return Err(format!(
            "{} connections need {need} descriptors per process, but RLIMIT_NOFILE is {limit}: \
             use --processes {} (each process holds at most {room})",
            plan.connections,
            plan.connections.div_ceil(room),
        ));
    }
    let sources = plan.sources.len().max(1) as u64;
    let per_source = plan.connections.div_ceil(sources);
    if per_source > BUSY_SOURCE {
        // Not an error, but worth a line: connect(2) picks an ephemeral port by probing the
        // range (__inet_hash_connect), and each probe of a port this source already uses is a
        // miss, so opening N connections from one address costs O(N²). Measured here: 19,000
        // connects took 12.9 s from one address, 0.56 s spread over ten.
        eprintln!(
            "echo_client: note: {per_source} connections per source address make connect(2)'s \
             port search slow; --source-ips 127.0.0.2-127.0.0.{} spreads them",
            1 + plan.connections.div_ceil(2_000).min(254),
        );
    }
    if let Some(ports) = ephemeral_ports()
        && per_source > ports
    {
        return Err(format!(
            "{} connections from {sources} source address(es) need {per_source} ports each, \
                 but ip_local_port_range has {ports}: use --source-ips with at least {} addresses \
                 (e.g. --source-ips 127.0.0.2-127.0.0.{})",
            plan.connections,
            plan.connections.div_ceil(ports),
            1 + plan.connections.div_ceil(ports),
        ));
    }
    Ok(())
}

/// setrlimit(2): soft = hard for RLIMIT_NOFILE. Returns the new soft limit.
fn raise_nofile() -> Result<u64, String> {
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit(RLIMIT_NOFILE): {e}"))?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .map_err(|e| format!("setrlimit(RLIMIT_NOFILE, {hard}): {e}"))?;
    }
    Ok(hard)
}

/// How many ports /proc/sys/net/ipv4/ip_local_port_range offers, if readable.
fn ephemeral_ports() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.checked_sub(lo)? + 1)
}
