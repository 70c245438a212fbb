//! The server contract (`docs/contract.md`) as executable cases.
//!
//! Every server crate has a `tests/conformance.rs` of one line, `conformance::suite!("crate");`,
//! which expands to one `#[test]` per case in [`cases`], each run against that crate's own
//! binary with the capabilities declared for it in [`rungs`]. A model with a second mode runs
//! the whole suite again in that mode from another test file:
//! `conformance::suite!("multi_epoll_server", args = ["--processes"], forks = true);`.

pub mod cases;
pub mod client;
pub mod faults;
pub mod hardening;
pub mod rungs;
pub mod server;
pub mod summary;

use rungs::{Caps, Rung};
use server::Server;

/// The server under test: its binary, its rung, and the mode it runs in.
pub struct Target {
    pub bin: &'static str,
    pub rung: &'static Rung,
    /// What the cases may expect: the rung's capabilities, unless the mode changes some.
    pub caps: Caps,
    /// Flags every run of the server gets: its mode (e.g. `--processes`), nothing by default.
    pub mode: &'static [&'static str],
}

impl Target {
    pub fn new(bin: &'static str, krate: &str) -> Target {
        let rung = rungs::rung(krate);
        Target {
            bin,
            rung,
            caps: rung.caps,
            mode: &[],
        }
    }

    /// The same server in another mode: `mode` flags on every run, capabilities adjusted.
    pub fn with_mode(
        mut self,
        mode: &'static [&'static str],
        adjust: impl FnOnce(&mut Caps),
    ) -> Target {
        self.mode = mode;
        adjust(&mut self.caps);
        self
    }

    /// The mode's flags followed by `args`.
    pub fn args<'a>(&self, args: &[&'a str]) -> Vec<&'a str>
    where
        'static: 'a,
    {
        self.mode
            .iter()
            .copied()
            .chain(args.iter().copied())
            .collect()
    }

    /// Starts the server on a free loopback port with `args` added.
    pub fn start(&self, args: &[&str]) -> Server {
        let mut all = vec!["--addr", "127.0.0.1:0"];
        if args.contains(&"--addr") {
            all.clear();
        }
        all.extend(self.args(args));
        Server::start(self.bin, &all)
    }
}

/// `conformance::suite!("simple_server");` — the whole contract, one test per case, against
/// the crate's binary (Cargo sets `CARGO_BIN_EXE_<name>` for integration tests).
#[macro_export]
macro_rules! suite {
    ($krate:literal) => {
        $crate::suite!(@with $crate::Target::new(env!(concat!("CARGO_BIN_EXE_", $krate)), $krate));
    };
    ($krate:literal, args = [$($arg:literal),* $(,)?], forks = $forks:literal) => {
        $crate::suite!(@with $crate::Target::new(env!(concat!("CARGO_BIN_EXE_", $krate)), $krate)
            .with_mode(&[$($arg),*], |caps| caps.forks = $forks));
    };
    (@with $target:expr) => {
        $crate::suite!(@cases $target;
            startup_line_names_address_crate_and_pid,
            version_flag_prints_crate_and_version,
            help_opens_with_the_model_and_lists_the_flags,
            bad_flags_exit_2_with_clap_message,
            busy_port_exits_1_with_one_line,
            ipv6_loopback_works,
            http_get_gets_the_exact_response,
            http_keep_alive_serves_many_requests_on_one_connection,
            http_connection_close_is_honoured,
            http_10_closes_unless_keep_alive,
            http_pipelined_requests_are_answered_in_order,
            http_head_gets_no_body,
            http_body_is_read_and_discarded,
            http_expect_100_continue,
            http_requests_dribbled_one_byte_at_a_time,
            http_malformed_request_gets_400_then_close,
            http_garbage_gets_400_then_close,
            http_head_over_8k_gets_431_without_reset,
            http_chunked_body_is_read_and_discarded,
            http_ambiguous_framing_gets_400_and_unknown_coding_501,
            http_a_dribbled_head_gets_408_within_the_deadline,
            http_too_many_empty_lines_get_400,
            http_endless_slow_heads_do_not_hold_the_workers,
            http_endless_empty_lines_do_not_hold_the_workers,
            http_one_pipelining_client_cannot_starve_another,
            http_close_then_pipelined_bytes_split_anywhere_arrive_whole,
            real_clients_get_every_answer,
            http_other_version_gets_505_then_close,
            http_close_with_unread_bytes_is_not_a_reset,
            echo_round_trips_messages_of_every_size,
            echo_one_byte_writes,
            echo_4mib_while_the_client_writes_before_reading,
            echo_half_close_flushes_then_closes,
            reset_mid_request_leaves_the_server_serving,
            reset_mid_response_leaves_the_server_serving,
            sigpipe_never_kills_the_server,
            idle_connections_are_closed_after_idle_timeout,
            delay_ms_delays_every_request,
            work_flag_keeps_answers_correct,
            concurrency_matches_the_model,
            finished_children_are_reaped,
            sigterm_prints_the_summary_and_exits_0,
            sigint_also_stops_cleanly,
            summary_counts_echoed_bytes,
            errors_are_logged_on_stderr_not_stdout,
            http_half_close_still_gets_its_answer,
            fault_emfile,
            fault_slow_clients,
            fault_never_reading_echo_client,
            fault_never_reading_http_client,
            fault_reset_storm,
            fault_killed_worker,
            fault_sigterm_under_load,
        );
    };
    (@cases $target:expr; $($case:ident),* $(,)?) => {
        fn target() -> $crate::Target {
            $target
        }
        $(
            #[test]
            fn $case() {
                $crate::cases::$case(&target());
            }
        )*
    };
}
