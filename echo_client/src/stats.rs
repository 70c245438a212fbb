//! What a run counts, and how counts from threads and processes are merged.
//!
//! Each event-loop thread fills its own [`Tally`] without sharing anything; at the end the
//! tallies are merged — counters added (or their min/max taken, for times), histograms added
//! bucket by bucket, per-connection counts concatenated — so every percentile in the report is
//! computed over *all* messages, never an average of averages. A forked process sends its
//! merged tally to the parent as text (the [wire format](Tally::to_wire)).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use nix::errno::Errno;

/// The kinds of error a run counts, in report order. The JSON keys are part of the stable
/// schema (README.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// connect(2): ECONNREFUSED — nothing listens, or the accept queue overflowed with
    /// tcp_abort_on_overflow.
    Refused,
    /// No connection within `--timeout` (SYNs dropped by a full accept queue, say).
    ConnectTimeout,
    /// EADDRNOTAVAIL: the source address ran out of ephemeral ports (use `--source-ips`).
    NoPorts,
    /// ECONNRESET or EPIPE on an open connection.
    Reset,
    /// The server closed while a reply was owed, or closed an idle connection.
    EarlyEof,
    /// No complete reply within `--timeout` of the send.
    ReadTimeout,
    /// An echoed byte differs from the byte sent, or more came back than was sent.
    Mismatch,
    /// A response outside the contract's HTTP (status line, framing, headers).
    BadHttp,
    /// A well-formed response with a status outside 2xx.
    HttpStatus,
    /// Any other OS error (EMFILE, ENETUNREACH, …).
    Other,
}

impl Failure {
    pub const COUNT: usize = 10;
    pub const ALL: [Failure; Failure::COUNT] = [
        Failure::Refused,
        Failure::ConnectTimeout,
        Failure::NoPorts,
        Failure::Reset,
        Failure::EarlyEof,
        Failure::ReadTimeout,
        Failure::Mismatch,
        Failure::BadHttp,
        Failure::HttpStatus,
        Failure::Other,
    ];

    /// The JSON key (`errors.<key>`).
    pub fn key(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::ConnectTimeout => "connect_timeout",
            Failure::NoPorts => "no_ports",
            Failure::Reset => "reset",
            Failure::EarlyEof => "early_eof",
            Failure::ReadTimeout => "read_timeout",
            Failure::Mismatch => "mismatch",
            Failure::BadHttp => "bad_http",
            Failure::HttpStatus => "http_status",
            Failure::Other => "other",
        }
    }

    /// Words for the human report.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::ConnectTimeout => "connect timeout",
            Failure::NoPorts => "out of ports",
            Failure::Reset => "reset",
            Failure::EarlyEof => "early EOF",
            Failure::ReadTimeout => "read timeout",
            Failure::Mismatch => "MISMATCH",
            Failure::BadHttp => "BAD HTTP",
            Failure::HttpStatus => "non-2xx",
            Failure::Other => "other",
        }
    }

    /// A wrong byte: the server is broken, not just slow or overloaded. `--allow-errors`
    /// never excuses these.
    pub fn is_verification(self) -> bool {
        matches!(self, Failure::Mismatch | Failure::BadHttp)
    }

    /// The kind of a failed connect(2).
    pub fn of_connect(e: Errno) -> Failure {
        match e {
            Errno::ECONNREFUSED => Failure::Refused,
            Errno::ETIMEDOUT => Failure::ConnectTimeout,
            Errno::EADDRNOTAVAIL | Errno::EADDRINUSE => Failure::NoPorts,
            Errno::ECONNRESET => Failure::Reset,
            _ => Failure::Other,
        }
    }

    /// The kind of a failed send(2)/recv(2) on an open connection.
    pub fn of_io(e: Errno) -> Failure {
        match e {
            Errno::ECONNRESET | Errno::EPIPE | Errno::ECONNABORTED => Failure::Reset,
            Errno::ETIMEDOUT => Failure::ReadTimeout,
            _ => Failure::Other,
        }
    }
}

/// How two threads' values of one counter combine.
#[derive(Clone, Copy)]
enum Merge {
    Sum,
    Max,
}

/// Defines [`Counts`] once, with each field's merge rule: the struct, the merge, and the wire
/// names all come from this one list, so they cannot drift apart.
macro_rules! counts {
    ($($(#[doc = $doc:literal])* $name:ident: $merge:ident,)*) => {
        /// The plain counters of a run. Times are nanoseconds on the run's clock
        /// ([`crate::clock`]).
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct Counts {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl Counts {
            fn merge(&mut self, o: &Counts) {
                $(self.$name = match Merge::$merge {
                    Merge::Sum => self.$name + o.$name,
                    Merge::Max => self.$name.max(o.$name),
                };)*
            }

            fn write_wire(&self, out: &mut String) {
                $(let _ = writeln!(out, "count {} {}", stringify!($name), self.$name);)*
            }

            fn field(&mut self, name: &str) -> Option<&mut u64> {
                match name {
                    $(stringify!($name) => Some(&mut self.$name),)*
                    _ => None,
                }
            }
        }
    };
}

counts! {
    /// connect(2) calls, reconnects included.
    connects_attempted: Sum,
    /// Connections established, reconnects included.
    connects_ok: Sum,
    /// Messages (HTTP: requests) completed and verified.
    messages: Sum,
    bytes_sent: Sum,
    bytes_received: Sum,
    /// Connections established when the transfer phase was released (all held at once).
    established_at_start: Sum,
    /// Connections still established when the hold ended (`--hold` only).
    held_after_hold: Sum,
    /// The most connections each thread had established at once, summed over threads.
    peak_established: Sum,
    /// Connections with a message sent and its reply incomplete when a `-d` run ended: not
    /// errors.
    in_flight_at_end: Sum,
    /// Connections that completed nothing, never failed, and were still waiting (for a reply,
    /// or for their connect) when the run ended: starved by the server, not errors.
    starved: Sum,
    /// When the last initial connection was established or given up.
    connect_done_ns: Max,
    /// When the transfer phase began: the common "go" plus `--hold`.
    transfer_start_ns: Max,
    /// When the last message completed, or the phase's end.
    transfer_done_ns: Max,
    /// The errno of a failed connect, for the one-line "cannot connect" message.
    connect_errno: Max,
}

/// Everything one thread — or, merged, one process or the whole run — counted.
#[derive(Clone, Debug)]
pub struct Tally {
    pub n: Counts,
    pub errors: [u64; Failure::COUNT],
    /// Message latency, ns.
    pub latency: Histogram<u64>,
    /// `--mix` only: `latency` split by kind of request. `None` without `--mix`, so a run
    /// without it allocates no histograms it would never fill (two per thread, each as big as
    /// `latency`).
    pub mix: Option<MixLatency>,
    /// Connect latency (SYN sent → established), ns.
    pub connect_latency: Histogram<u64>,
    /// Messages completed per connection slot (reconnects included), for fairness.
    pub per_conn: Vec<u64>,
}

/// `--mix`: the latency of each kind of request, ns. Together they hold what `latency` holds.
#[derive(Clone, Debug)]
pub struct MixLatency {
    /// The cheap requests (`GET /`).
    pub cheap: Histogram<u64>,
    /// The expensive requests (`GET PATH`).
    pub expensive: Histogram<u64>,
}

impl Default for MixLatency {
    fn default() -> Self {
        MixLatency {
            cheap: histogram(),
            expensive: histogram(),
        }
    }
}

/// The longest latency tracked: an hour. Longer ones are recorded as an hour.
const MAX_TRACKED_NS: u64 = 3_600_000_000_000;

fn histogram() -> Histogram<u64> {
    // 3 significant digits: a percentile is exact to 0.1%, which is finer than any
    // difference this course measures; one histogram is ~270 KB.
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, 3)
        .expect("constant bounds 1..1h with 3 digits are valid") // constants, checked by tests
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            n: Counts::default(),
            errors: [0; Failure::COUNT],
            latency: histogram(),
            mix: None,
            connect_latency: histogram(),
            per_conn: Vec::new(),
        }
    }
}

impl Tally {
    /// An empty tally, with the `--mix` histograms only when `mix` is set (`--mix` given).
    pub fn new(mix: bool) -> Tally {
        Tally {
            mix: mix.then(MixLatency::default),
            ..Tally::default()
        }
    }

    pub fn error(&mut self, f: Failure) {
        self.errors[f as usize] += 1;
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    pub fn errors_of(&self, f: Failure) -> u64 {
        self.errors[f as usize]
    }

    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &Tally) {
        self.n.merge(&o.n);
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
        // Same bounds on both sides, so add() cannot fail; saturate rather than lose a run
        // to an impossible error.
        let mut added = self.latency.add(&o.latency).is_ok()
            && self.connect_latency.add(&o.connect_latency).is_ok();
        if let Some(om) = &o.mix {
            // The run-wide tally starts without them; the first `--mix` tally brings them.
            let m = self.mix.get_or_insert_with(MixLatency::default);
            added &= m.cheap.add(&om.cheap).is_ok() && m.expensive.add(&om.expensive).is_ok();
        }
        if !added {
            unreachable!("histograms with equal bounds always add");
        }
        self.per_conn.extend_from_slice(&o.per_conn);
    }

    /// The text a forked process sends its parent: one `kind name values…` line per item.
    /// Histograms go as `value:count` pairs of their recorded buckets, so the parent rebuilds
    /// them exactly (a bucket's highest equivalent value lands in the same bucket).
    pub fn to_wire(&self) -> String {
        let mut out = String::new();
        self.n.write_wire(&mut out);
        for f in Failure::ALL {
            let _ = writeln!(out, "error {} {}", f.key(), self.errors_of(f));
        }
        // The `--mix` lines only with `--mix`: their presence is what tells the parent.
        let mix = self.mix.as_ref();
        let mix_lines = mix.map(|m| [("cheap", &m.cheap), ("expensive", &m.expensive)]);
        for (name, h) in std::iter::once(("latency", &self.latency))
            .chain(mix_lines.into_iter().flatten())
            .chain(std::iter::once(("connect", &self.connect_latency)))
        {
            out.push_str("hist ");
            out.push_str(name);
            for v in h.iter_recorded() {
                let _ = write!(out, " {}:{}", v.value_iterated_to(), v.count_at_value());
            }
            out.push('\n');
        }
        out.push_str("per_conn");
        for c in &self.per_conn {
            let _ = write!(out, " {c}");
        }
        out.push_str("\nend\n");
        out
    }

    /// Parses [`to_wire`](Tally::to_wire)'s text. Any surprise is an error: a truncated report
    /// must never pass for a small one.
    pub fn from_wire(text: &str) -> Result<Tally, String> {
        let mut t = Tally::default();
        let mut ended = false;
        for line in text.lines() {
            let mut words = line.split(' ');
            let kind = words.next().unwrap_or_default();
            let bad = || format!("bad report line {line:?}");
            let num = |w: Option<&str>| w.and_then(|w| w.parse::<u64>().ok()).ok_or_else(bad);
            match kind {
                "count" => {
                    let name = words.next().unwrap_or_default();
                    let v = num(words.next())?;
                    *t.n.field(name).ok_or_else(bad)? = v;
                }
                "error" => {
                    let key = words.next().unwrap_or_default();
                    let f = Failure::ALL
                        .into_iter()
                        .find(|f| f.key() == key)
                        .ok_or_else(bad)?;
                    t.errors[f as usize] = num(words.next())?;
                }
                "hist" => {
                    let h = match words.next() {
                        Some("latency") => &mut t.latency,
                        Some("cheap") => &mut t.mix.get_or_insert_with(MixLatency::default).cheap,
                        Some("expensive") => {
                            &mut t.mix.get_or_insert_with(MixLatency::default).expensive
                        }
                        Some("connect") => &mut t.connect_latency,
                        _ => return Err(bad()),
                    };
                    for pair in words {
                        let (v, c) = pair.split_once(':').ok_or_else(bad)?;
                        let (v, c) = (num(Some(v))?, num(Some(c))?);
                        h.record_n(v, c).map_err(|_| bad())?;
                    }
                }
                "per_conn" => {
                    for w in words {
                        t.per_conn.push(num(Some(w))?);
                    }
                }
                "end" => ended = true,
                _ => return Err(bad()),
            }
        }
        if !ended {
            return Err("the report ended early".into());
        }
        Ok(t)
    }
}

/// Record `ns` in `h`, clamping to the tracked range.
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.max(1));
}

/// How evenly the work was spread over the connections.
#[derive(Clone, Debug, PartialEq)]
pub struct Fairness {
    pub connections: u64,
    pub min: u64,
    pub median: u64,
    pub max: u64,
    /// Connections that completed nothing, for whatever reason.
    pub completed_none: u64,
    /// Jain's index, (Σx)² / (n·Σx²): 1 when all connections did the same work, 1/n when one
    /// did it all; 1 for a run where nothing completed.
    pub jain: f64,
}

impl Fairness {
    pub fn of(per_conn: &[u64]) -> Fairness {
        let mut v = per_conn.to_vec();
        v.sort_unstable();
        let n = v.len() as u64;
        let sum: f64 = v.iter().map(|&x| x as f64).sum();
        let sum_sq: f64 = v.iter().map(|&x| (x as f64) * (x as f64)).sum();
        Fairness {
            connections: n,
            min: v.first().copied().unwrap_or(0),
            // The lower median for an even count: a real connection's count, not a mean.
            median: v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0),
            max: v.last().copied().unwrap_or(0),
            completed_none: v.iter().take_while(|&&x| x == 0).count() as u64,
            jain: if sum_sq > 0.0 {
                sum * sum / (n as f64 * sum_sq)
            } else {
                1.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(k: u64) -> Tally {
        let mut t = Tally::new(true);
        t.n.messages = 10 * k;
        t.n.transfer_done_ns = 100 + k;
        t.error(Failure::Reset);
        for v in [1_000 * k, 2_000, 3_000_000, 3_600_000_000_001] {
            record(&mut t.latency, v);
        }
        record(&mut t.connect_latency, 77);
        let m = t
            .mix
            .as_mut()
            .expect("Tally::new(true) has the --mix histograms");
        record(&mut m.cheap, 500 * k);
        record(&mut m.expensive, 9_000_000 + k);
        record(&mut m.expensive, 9_000_000);
        t.per_conn = vec![k, 0, 3];
        t
    }

    #[test]
    fn wire_round_trip_is_exact() {
        let t = sample(3);
        let back = Tally::from_wire(&t.to_wire()).unwrap();
        assert_eq!(back.n, t.n);
        assert_eq!(back.errors, t.errors);
        assert_eq!(back.latency, t.latency);
        let (mb, mt) = (back.mix.as_ref().unwrap(), t.mix.as_ref().unwrap());
        assert_eq!((&mb.cheap, &mb.expensive), (&mt.cheap, &mt.expensive));
        assert_eq!(back.connect_latency, t.connect_latency);
        assert_eq!(back.per_conn, t.per_conn);
        let wire = t.to_wire();
        assert!(
            Tally::from_wire(&wire[..wire.len() - 4]).is_err(),
            "truncated"
        );
        assert!(Tally::from_wire("count nonsense 1\nend\n").is_err());
    }

    #[test]
    fn merging_adds_counts_and_histograms_and_takes_max_of_times() {
        let mut a = sample(1);
        a.merge(&sample(2));
        assert_eq!(a.n.messages, 30);
        assert_eq!(a.n.transfer_done_ns, 102);
        assert_eq!(a.errors_of(Failure::Reset), 2);
        assert_eq!(a.latency.len(), 8);
        let m = a.mix.as_ref().unwrap();
        assert_eq!((m.cheap.len(), m.expensive.len()), (2, 4));
        assert_eq!(a.per_conn, vec![1, 0, 3, 2, 0, 3]);
        // Percentiles of the merged histogram are those of all values, not averages.
        // Sorted: 1000, 2000, 2000, 2000, 3e6, 3e6, 1 h, 1 h.
        assert_eq!(
            a.latency.value_at_quantile(0.1),
            a.latency.highest_equivalent(1_000)
        );
        assert_eq!(
            a.latency.value_at_quantile(0.5),
            a.latency.highest_equivalent(2_000)
        );
        assert_eq!(
            a.latency.value_at_quantile(0.6),
            a.latency.highest_equivalent(3_000_000)
        );
    }

    /// Without `--mix` no tally carries the two `--mix` histograms: not a thread's, not the
    /// merged one, not one rebuilt from a child's report. With it, the merge starts them.
    #[test]
    fn a_tally_without_mix_allocates_no_mix_histograms() {
        assert!(Tally::default().mix.is_none());
        assert!(Tally::new(false).mix.is_none());
        let mut plain = Tally::new(false);
        record(&mut plain.latency, 1_000);
        let mut all = Tally::default();
        all.merge(&plain);
        all.merge(&plain);
        assert!(all.mix.is_none(), "merging tallies without --mix");
        assert_eq!(all.latency.len(), 2);
        let wire = all.to_wire();
        assert!(
            !wire.contains("hist cheap") && !wire.contains("hist expensive"),
            "{wire}"
        );
        assert!(
            Tally::from_wire(&wire).unwrap().mix.is_none(),
            "from the wire"
        );
        // With --mix: an empty --mix tally (no request completed) still brings them, so the
        // report shows the split even when nothing was counted.
        assert!(Tally::new(true).mix.is_some());
        let mut all = Tally::default();
        all.merge(&Tally::new(true));
        assert!(all.mix.is_some(), "merging a --mix tally");
        let back = Tally::from_wire(&Tally::new(true).to_wire()).unwrap();
        assert!(back.mix.is_some(), "an empty --mix tally from the wire");
    }

    #[test]
    fn fairness_of_a_starved_run() {
        let f = Fairness::of(&[0, 0, 0, 9000, 0]);
        assert_eq!((f.min, f.median, f.max, f.completed_none), (0, 0, 9000, 4));
        assert!((f.jain - 0.2).abs() < 1e-9);
        let even = Fairness::of(&[5, 5, 5, 5]);
        assert_eq!((even.median, even.completed_none), (5, 0));
        assert!((even.jain - 1.0).abs() < 1e-9);
        assert_eq!(Fairness::of(&[]).connections, 0);
    }
}
