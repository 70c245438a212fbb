//! The ladder's rungs, written once. The conformance suite reads each server's capabilities
//! from here, the bench harness reads the order and the models, and the root README's lesson
//! index is generated from it (a test fails when the README drifts). Adding a rung is adding
//! one entry.

/// How many connections a server serves at the same time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concurrency {
    /// One at a time: the others wait in the accept queue (lesson 1).
    One,
    /// As many as `--workers`: a fixed pool of blocking threads or processes.
    Workers,
    /// As many as descriptors allow (a process or thread each, or an event loop).
    Unbounded,
}

/// What the conformance suite may expect of a server.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    pub concurrency: Concurrency,
    /// Serves connections in forked child processes.
    pub forks: bool,
    /// Has `--workers N` and prints `accepts per worker`.
    pub workers: bool,
    /// Has `--stack-size BYTES`.
    pub threads: bool,
    /// The highest descriptor number it can watch, if lower than the process limit
    /// (select(2): FD_SETSIZE = 1024).
    pub fd_limit: Option<usize>,
    /// Spins on the CPU by design, even idle (lesson 7): CPU checks don't apply.
    pub busy_loop: bool,
    /// Its workers run requests' work, not connections (lesson 14): the summary counts
    /// `jobs per worker` instead of `accepts per worker`.
    pub job_pool: bool,
}

/// Whether a rung exists yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Done,
    /// Not built yet; the issue that builds it.
    Planned {
        issue: u32,
    },
}

#[derive(Clone, Copy, Debug)]
pub struct Rung {
    /// The lesson number, 1-based, in ladder order.
    pub order: u32,
    /// The crate (and binary) name.
    pub krate: &'static str,
    /// The model, in one line.
    pub model: &'static str,
    pub caps: Caps,
    pub status: Status,
    /// The earlier lessons whose code this one reuses, by order: its crate depends on theirs
    /// (a test checks each Cargo.toml against this list).
    pub builds_on: &'static [u32],
}

const fn caps(concurrency: Concurrency) -> Caps {
    Caps {
        concurrency,
        forks: false,
        workers: false,
        threads: false,
        fd_limit: None,
        busy_loop: false,
        job_pool: false,
    }
}

/// The ladder, in order.
pub const RUNGS: &[Rung] = &[
    Rung {
        order: 1,
        krate: "simple_server",
        model: "iterative: one connection at a time, served to completion",
        caps: caps(Concurrency::One),
        status: Status::Done,
        builds_on: &[],
    },
    Rung {
        order: 2,
        krate: "cgi_process_server",
        model: "a forked process per connection",
        caps: Caps {
            forks: true,
            ..caps(Concurrency::Unbounded)
        },
        status: Status::Done,
        builds_on: &[1],
    },
    Rung {
        order: 3,
        krate: "cgi_thread_server",
        model: "a thread per connection",
        caps: Caps {
            threads: true,
            ..caps(Concurrency::Unbounded)
        },
        status: Status::Done,
        builds_on: &[1],
    },
    Rung {
        order: 4,
        krate: "prefork_server",
        model: "N pre-forked processes blocking in accept on one listener",
        caps: Caps {
            forks: true,
            workers: true,
            ..caps(Concurrency::Workers)
        },
        status: Status::Done,
        builds_on: &[1],
    },
    Rung {
        order: 5,
        krate: "threadpool_accept_main",
        model: "the main thread accepts, a pool of N threads serves",
        caps: Caps {
            workers: true,
            threads: true,
            ..caps(Concurrency::Workers)
        },
        status: Status::Done,
        builds_on: &[1],
    },
    Rung {
        order: 6,
        krate: "threadpool_accept_worker",
        model: "N threads, each blocking in accept on one listener",
        caps: Caps {
            workers: true,
            threads: true,
            ..caps(Concurrency::Workers)
        },
        status: Status::Done,
        builds_on: &[1],
    },
    Rung {
        order: 7,
        krate: "nonblocking_busy_server",
        model: "O_NONBLOCK everywhere, one thread retrying every socket in a busy loop",
        caps: Caps {
            busy_loop: true,
            ..caps(Concurrency::Unbounded)
        },
        status: Status::Done,
        builds_on: &[],
    },
    Rung {
        order: 8,
        krate: "select_server",
        model: "one thread, select(2) readiness loop (FD_SETSIZE 1024)",
        caps: Caps {
            fd_limit: Some(1024),
            ..caps(Concurrency::Unbounded)
        },
        status: Status::Done,
        builds_on: &[7],
    },
    Rung {
        order: 9,
        krate: "poll_server",
        model: "one thread, poll(2) readiness loop",
        caps: caps(Concurrency::Unbounded),
        status: Status::Done,
        builds_on: &[7],
    },
    Rung {
        order: 10,
        krate: "epoll_et_server",
        model: "one thread, edge-triggered epoll(7) loop",
        caps: caps(Concurrency::Unbounded),
        status: Status::Done,
        builds_on: &[7],
    },
    Rung {
        order: 11,
        krate: "multi_epoll_server",
        model: "N epoll loops, reached by SO_REUSEPORT, EPOLLEXCLUSIVE or an acceptor; threads or processes",
        caps: Caps {
            workers: true,
            ..caps(Concurrency::Unbounded)
        },
        status: Status::Done,
        builds_on: &[4, 7, 10],
    },
    Rung {
        order: 12,
        krate: "tokio_server",
        model: "tokio: the production reference",
        caps: caps(Concurrency::Unbounded),
        status: Status::Done,
        builds_on: &[7],
    },
    Rung {
        order: 13,
        krate: "io_uring_server",
        model: "io_uring: completion-based I/O",
        caps: caps(Concurrency::Unbounded),
        status: Status::Done,
        builds_on: &[],
    },
    Rung {
        order: 14,
        krate: "epoll_pool_server",
        model: "one epoll loop for the sockets, a thread pool for the costly work",
        caps: Caps {
            workers: true,
            job_pool: true,
            ..caps(Concurrency::Unbounded)
        },
        status: Status::Done,
        builds_on: &[7, 10],
    },
];

/// The rung of a crate. Panics for a crate that is not on the ladder: a server's
/// `tests/conformance.rs` names its own crate, so that is a bug in the test itself.
pub fn rung(krate: &str) -> &'static Rung {
    RUNGS
        .iter()
        .find(|r| r.krate == krate)
        .unwrap_or_else(|| panic!("{krate} is not in conformance/src/rungs.rs: add its entry"))
}

/// The root README's lesson index, as markdown table rows (between the README's markers).
pub fn readme_index() -> String {
    let mut s = String::from("| # | crate | model | builds on | status |\n|---|---|---|---|---|\n");
    for r in RUNGS {
        let status = match r.status {
            Status::Done => "done".to_string(),
            Status::Planned { issue } => format!("planned (issue {issue})"),
        };
        let krate = match r.status {
            Status::Done => format!("[`{0}`]({0}/)", r.krate),
            Status::Planned { .. } => format!("`{}`", r.krate),
        };
        let on = if r.builds_on.is_empty() {
            "–".to_string()
        } else {
            r.builds_on
                .iter()
                .map(|o| format!("{o} (`{}`)", RUNGS[*o as usize - 1].krate))
                .collect::<Vec<_>>()
                .join(", ")
        };
        s += &format!(
            "| {} | {krate} | {} | {on} | {status} |\n",
            r.order, r.model
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_1_to_n_and_crates_unique() {
        for (i, r) in RUNGS.iter().enumerate() {
            assert_eq!(r.order as usize, i + 1, "{}", r.krate);
            assert_eq!(RUNGS.iter().filter(|o| o.krate == r.krate).count(), 1);
        }
    }

    #[test]
    fn a_done_rung_is_a_workspace_crate_and_a_planned_one_is_not() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for r in RUNGS {
            let exists = root.join(r.krate).join("Cargo.toml").exists();
            assert_eq!(
                exists,
                r.status == Status::Done,
                "{}: update its status in rungs.rs",
                r.krate
            );
            if exists {
                let t = root.join(r.krate).join("tests/conformance.rs");
                assert!(t.exists(), "{} must run the conformance suite", r.krate);
            }
        }
    }

    /// "Builds on" is what each crate's Cargo.toml says: a lesson depends on exactly the earlier
    /// lessons it lists, and only on earlier ones.
    #[test]
    fn builds_on_matches_each_crates_dependencies() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for r in RUNGS.iter().filter(|r| r.status == Status::Done) {
            let manifest = std::fs::read_to_string(root.join(r.krate).join("Cargo.toml"))
                .expect("a done rung has a Cargo.toml");
            let deps = manifest
                .split("\n[")
                .find(|sec| sec.starts_with("dependencies]"))
                .unwrap_or_default();
            let mut on: Vec<u32> = RUNGS
                .iter()
                .filter(|o| {
                    deps.lines()
                        .any(|l| l.trim_start().starts_with(&format!("{}.", o.krate)))
                })
                .map(|o| o.order)
                .collect();
            on.sort_unstable();
            assert_eq!(on, r.builds_on, "{}: Cargo.toml vs builds_on", r.krate);
            assert!(
                on.iter().all(|&o| o < r.order),
                "{} builds on a later rung",
                r.krate
            );
        }
    }

    /// The root README's index is generated from RUNGS. After changing RUNGS, run
    /// `UPDATE_README=1 cargo test -p conformance readme` to rewrite it.
    #[test]
    fn readme_index_matches_the_rungs() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(&path).expect("README.md at the workspace root");
        let (begin, end) = ("<!-- rungs:begin -->\n", "<!-- rungs:end -->");
        let start = readme
            .find(begin)
            .expect("README has the rungs:begin marker")
            + begin.len();
        let stop = readme.find(end).expect("README has the rungs:end marker");
        let want = readme_index();
        if std::env::var_os("UPDATE_README").is_some() {
            let new = format!("{}{want}{}", &readme[..start], &readme[stop..]);
            std::fs::write(&path, new).expect("rewrite README.md");
        } else {
            assert_eq!(
                &readme[start..stop],
                want,
                "README's lesson index is stale: UPDATE_README=1 cargo test -p conformance readme"
            );
        }
    }
}
