//! What a server holds, read from /proc for its whole process group (forked children
//! included): proportional memory, threads, and for the held sweep where that memory lies
//! ([`breakdown`]: stacks, other anonymous, files, page tables, kernel stacks). Its CPU:
//! `conformance::server::group_cpu_seconds`. And what the whole machine says that a run
//! reads beside it: /proc/meminfo, TCP's buffer pages and memory-pressure count, softirq time.

use std::fs;
use std::io::{BufRead, BufReader};

// CPU and the group's processes: conformance::server (group_cpu_seconds,
// live_processes_in_group), which the tests use too.
use conformance::server::live_processes_in_group;

/// The first number after `name` on its line of a /proc text file (status, meminfo).
fn field(path: &str, name: &str) -> Option<u64> {
    let s = fs::read_to_string(path).ok()?;
    s.lines().find_map(|l| {
        l.strip_prefix(name)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

fn status_field(pid: i32, name: &str) -> Option<u64> {
    field(&format!("/proc/{pid}/status"), name)
}

/// Proportional set size of one process in KiB: its private pages plus its share of pages
/// shared with others (a forked child's copy-on-write pages are split between parent and
/// children instead of counted once per process, as RSS would).
fn pss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Pss:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .or_else(|| status_field(pid, "VmRSS:"))
        .unwrap_or(0)
}

/// A snapshot of the group's memory and threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub pss_kib: u64,
    pub threads: u64,
    pub processes: u64,
}

pub fn sample(pgid: i32) -> Sample {
    let pids = live_processes_in_group(pgid);
    Sample {
        pss_kib: pids.iter().map(|&p| pss_kib(p)).sum(),
        threads: pids
            .iter()
            .map(|&p| status_field(p, "Threads:").unwrap_or(1))
            .sum(),
        processes: pids.len() as u64,
    }
}

/// Where a process group's memory lies, in KiB: its PSS split by the kind of mapping, and two
/// kinds of kernel memory that PSS does not count. [`Breakdown::stacks_kib`] +
/// [`Breakdown::anon_kib`] + [`Breakdown::file_kib`] is the group's PSS, summed from
/// /proc/PID/smaps instead of smaps_rollup (each mapping's line is rounded down to a KiB, so
/// the sum may fall short of the rollup by under a KiB per mapping that shares pages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Breakdown {
    /// PSS of the mappings that hold a thread's stack: one of the group's threads has its stack
    /// pointer inside, or the kernel names it `[stack]` (the main thread's).
    pub stacks_kib: u64,
    /// PSS of the other mappings with no file behind them (inode 0): `[heap]`, malloc's
    /// arenas, a forked child's copy-on-write copies of its parent's heap, anonymous mmaps.
    pub anon_kib: u64,
    /// PSS of the mappings of a file: the binary, its libraries (and their pages a process
    /// wrote to: smaps gives one PSS per mapping, not per page).
    pub file_kib: u64,
    /// The group's page tables: `VmPTE:` of /proc/PID/status, summed over its processes.
    pub page_tables_kib: u64,
    /// `KernelStack:` of /proc/meminfo — every thread's kernel stack on the *machine*, not only
    /// the group's: a difference of two readings is the group's only on a quiet machine.
    /// `None` when unreadable (the harness out of descriptors), rather than a false 0.
    pub kernel_stack_kib: Option<u64>,
}

/// The stack pointer of a thread from its /proc/PID/task/TID/syscall line: blocked in a
/// syscall it reads `nr arg1 … arg6 sp pc`, blocked outside one `-1 sp pc`; a thread on a CPU
/// reads `running` and has no stack pointer to give.
pub fn syscall_sp(line: &str) -> Option<u64> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let sp = match f.as_slice() {
        ["-1", sp, _pc] => sp,
        [_nr, _, _, _, _, _, _, sp, _pc] => sp,
        _ => return None, // "running", or a format this parser does not know
    };
    u64::from_str_radix(sp.trim_start_matches("0x"), 16).ok()
}

/// The stack pointers of every thread of process `pid` that is blocked now, sorted. Reading
/// another process's syscall file needs ptrace rights over it: the harness started the
/// server, so it has them (Yama's scope 1 allows descendants).
fn stack_pointers(pid: i32) -> Vec<u64> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut sps: Vec<u64> = tasks
        .filter_map(|t| {
            let tid = t.ok()?.file_name();
            let line = fs::read_to_string(format!("/proc/{pid}/task/{}/syscall", tid.to_str()?));
            syscall_sp(&line.ok()?)
        })
        .collect();
    sps.sort_unstable();
    sps
}

/// What kind of memory a mapping of /proc/PID/smaps holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Stack,
    Anon,
    File,
}

/// The kind of the mapping an smaps header line describes (`start-end perms offset dev inode
/// [path]`), or `None` if the line is not a header (`Pss:   12 kB`, `VmFlags: rd wr`).
fn mapping_kind(line: &str, sps: &[u64]) -> Option<Kind> {
    let mut f = line.split_whitespace();
    let (start, end) = f.next()?.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    let inode = f.nth(3)?; // after perms, offset, dev
    let path = f.next().unwrap_or("");
    // The first stack pointer at or above `start`, by binary search: linear in the mappings
    // even for a process of 20,000 threads and 40,000 mappings.
    let i = sps.partition_point(|&sp| sp < start);
    Some(
        if sps.get(i).is_some_and(|&sp| sp < end) || path == "[stack]" {
            Kind::Stack
        } else if inode == "0" {
            Kind::Anon
        } else {
            Kind::File
        },
    )
}

/// Splits the `Pss:` lines of one process's smaps by [`Kind`], given the sorted stack pointers
/// of its threads: one pass, one line buffer, however large the file (40,000 mappings of ~25
/// lines each for 20,000 threads).
pub fn split_smaps(mut smaps: impl BufRead, sps: &[u64]) -> Breakdown {
    let mut b = Breakdown::default();
    let mut kind = None;
    let mut line = String::new();
    while matches!(smaps.read_line(&mut line), Ok(n) if n > 0) {
        if let Some(pss) = line.strip_prefix("Pss:") {
            let kib: u64 = pss
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            match kind {
                Some(Kind::Stack) => b.stacks_kib += kib,
                Some(Kind::Anon) => b.anon_kib += kib,
                Some(Kind::File) => b.file_kib += kib,
                None => {}
            }
        } else if let Some(k) = mapping_kind(&line, sps) {
            kind = Some(k);
        }
        line.clear();
    }
    b
}

/// A field of /proc/meminfo in KiB (`Slab:`, `MemAvailable:`, …).
pub fn meminfo_kib(name: &str) -> Option<u64> {
    field("/proc/meminfo", name)
}

/// The [`Breakdown`] of group `pgid` now. Each process's smaps is read once, after its
/// threads' stack pointers (an idle server's threads stay where they are blocked).
pub fn breakdown(pgid: i32) -> Breakdown {
    let mut b = Breakdown {
        kernel_stack_kib: meminfo_kib("KernelStack:"),
        ..Breakdown::default()
    };
    for pid in live_processes_in_group(pgid) {
        let sps = stack_pointers(pid);
        if let Ok(f) = fs::File::open(format!("/proc/{pid}/smaps")) {
            let p = split_smaps(BufReader::with_capacity(1 << 16, f), &sps);
            b.stacks_kib += p.stacks_kib;
            b.anon_kib += p.anon_kib;
            b.file_kib += p.file_kib;
        }
        b.page_tables_kib += status_field(pid, "VmPTE:").unwrap_or(0);
    }
    b
}

/// CPU seconds (user + system) of each thread of process `pid` so far, by thread name
/// (`comm`, what `top -H` shows: lesson 11 names its loops `loop-0`, `loop-1`, …), in thread
/// order. A thread that ends while it is read is left out.
pub fn thread_cpu(pid: i32) -> Vec<(String, f64)> {
    let hz = ticks_per_second();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut tids: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids.into_iter()
        .filter_map(|tid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
            Some((thread_name(&stat)?, stat_cpu_ticks(&stat)? / hz))
        })
        .collect()
}

/// The name in a /proc stat line: between the first `(` and the last `)` (a name may hold
/// either).
fn thread_name(stat: &str) -> Option<String> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    Some(stat.get(open + 1..close)?.to_string())
}

/// utime + stime of a /proc stat line, in clock ticks: fields 14 and 15 (proc(5)), the 12th and
/// 13th after the name.
fn stat_cpu_ticks(stat: &str) -> Option<f64> {
    let (_, after) = stat.rsplit_once(')')?;
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
}

// ─── the whole machine: TCP's memory, softirq time ──────────────────────────────────────────

/// USER_HZ: the unit of /proc's CPU times (stat files, /proc/stat).
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// The pages TCP has charged to `tcp_mem` (the `mem` of the `TCP:` line of /proc/net/sockstat:
/// `tcp_memory_allocated`, buffers holding data, system-wide).
pub fn tcp_mem_pages(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "mem")?;
    words.get(at + 1)?.parse().ok()
}

/// A counter of the `TcpExt:` lines of /proc/net/netstat (a line of names, then one of values).
pub fn tcp_ext(netstat: &str, name: &str) -> Option<u64> {
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// A /proc or /sys text file, empty if it cannot be read.
pub fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// How often TCP entered memory pressure since boot (`TCPMemoryPressures`).
pub fn memory_pressures() -> u64 {
    tcp_ext(&read("/proc/net/netstat"), "TCPMemoryPressures").unwrap_or(0)
}

/// `tcp_mem`'s three thresholds, in pages: below the first TCP does not regulate; above the
/// second it is under pressure (buffers are moderated); above the third a socket gets no more
/// than its minimum (tcp(7)).
pub fn tcp_mem_limits() -> Option<[u64; 3]> {
    let v: Vec<u64> = read("/proc/sys/net/ipv4/tcp_mem")
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    v.try_into().ok()
}

/// Seconds all CPUs spent in softirq since boot (/proc/stat, the `cpu` line's seventh field, in
/// USER_HZ ticks). On loopback the receiving half of TCP runs there, mostly in the context of
/// the process that sent (this kernel samples it per tick and charges the tick to that process
/// too: CONFIG_IRQ_TIME_ACCOUNTING is off), so it is a share of the sides' CPU, not an addition.
pub fn softirq_seconds(stat: &str) -> Option<f64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: f64 = line.split_whitespace().nth(7)?.parse().ok()?;
    Some(ticks / ticks_per_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four mappings: a file (the binary), `[heap]`, an anonymous mapping holding a thread's
    /// stack pointer (the thread's stack), and one holding none (a malloc arena).
    const SMAPS: &str = "\
55e57db97000-55e57db99000 r--p 00000000 fe:00 247282                     /usr/bin/server
Size:                  8 kB
Rss:                   8 kB
Pss:                   5 kB
Pss_Dirty:             0 kB
VmFlags: rd mr mw me sd
55e57f000000-55e57f021000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
Rss:                  12 kB
Pss:                  12 kB
VmFlags: rd wr mr mw me ac sd
7f0000000000-7f0000010000 rw-p 00000000 00:00 0
Size:                 64 kB
Rss:                  16 kB
Pss:                  16 kB
VmFlags: rd wr mr mw me ac sd
7f0000011000-7f0000031000 rw-p 00000000 00:00 0 
Size:                128 kB
Rss:                   4 kB
Pss:                   3 kB
VmFlags: rd wr mr mw me ac sd
";

    #[test]
    fn a_mapping_holding_a_stack_pointer_is_a_stack_the_rest_by_inode() {
        let sps = [0x7f000000f5f8, 0x7fffde8c35f8]; // the second is in no mapping of the fixture
        let b = split_smaps(SMAPS.as_bytes(), &sps);
        assert_eq!((b.stacks_kib, b.anon_kib, b.file_kib), (16, 12 + 3, 5));
        // Nothing is left out: the three kinds add up to every Pss: line.
        let total: u64 = SMAPS
            .lines()
            .filter_map(|l| l.strip_prefix("Pss:"))
            .map(|v| v.trim().trim_end_matches(" kB").parse::<u64>().expect("kB"))
            .sum();
        assert_eq!(b.stacks_kib + b.anon_kib + b.file_kib, total);
        // Without a stack pointer the stack is only an anonymous mapping; an sp just past a
        // mapping's end is not in it.
        let none = split_smaps(SMAPS.as_bytes(), &[]);
        assert_eq!((none.stacks_kib, none.anon_kib), (0, 31));
        let past = split_smaps(SMAPS.as_bytes(), &[0x7f0000010000]);
        assert_eq!(past.stacks_kib, 0);
    }

    #[test]
    fn the_main_threads_stack_counts_by_name_too() {
        let main = "7ffd0000-7ffd2000 rw-p 00000000 00:00 0   [stack]\nPss:   8 kB\n";
        assert_eq!(split_smaps(main.as_bytes(), &[]).stacks_kib, 8);
    }

    #[test]
    fn the_stack_pointer_of_a_blocked_thread_and_none_of_a_running_one() {
        let blocked =
            "232 0x3 0x7f0000020000 0x400 0xffffffff 0x0 0x0 0x7f000000f5f8 0x7ff2941462ad\n";
        assert_eq!(syscall_sp(blocked), Some(0x7f000000f5f8));
        assert_eq!(
            syscall_sp("-1 0x7ffd00001000 0x55e57db98000\n"),
            Some(0x7ffd00001000)
        );
        assert_eq!(syscall_sp("running\n"), None);
        assert_eq!(syscall_sp(""), None);
    }

    #[test]
    fn a_live_process_has_stacks_and_a_binary() {
        // This test's own process: its threads' stacks (by stack pointer, or `[stack]`), a binary.
        let me = std::process::id() as i32;
        let sps = stack_pointers(me);
        let f = fs::File::open("/proc/self/smaps").expect("smaps");
        let b = split_smaps(BufReader::new(f), &sps);
        assert!(b.file_kib > 0 && b.stacks_kib > 0, "{b:?}");
    }

    #[test]
    fn a_threads_cpu_is_read_from_its_stat_line() {
        let stat = "4242 (loop-1) R 1 4242 4242 0 -1 4194368 120 0 0 0 731 42 0 0 20 0 3 0 \
                    1000 1000 100 18446744073709551615\n";
        assert_eq!(thread_name(stat).as_deref(), Some("loop-1"));
        assert_eq!(stat_cpu_ticks(stat), Some(773.0));
        // A name with a space and a parenthesis is still one name.
        let odd = "7 (a) b) S 1 7 7 0 -1 0 0 0 0 0 5 6 0 0\n";
        assert_eq!(thread_name(odd).as_deref(), Some("a) b"));
        assert_eq!(stat_cpu_ticks(odd), Some(11.0));
        assert_eq!(stat_cpu_ticks("9 (x) S 1"), None);
        // This test's own threads: the main one at least, by name.
        let me = thread_cpu(std::process::id() as i32);
        assert!(!me.is_empty() && me.iter().all(|(n, s)| !n.is_empty() && *s >= 0.0));
    }

    #[test]
    fn reads_the_kernels_tcp_memory() {
        let sockstat = "sockets: used 11\nTCP: inuse 3 orphan 0 tw 918 alloc 3 mem 262\n\
                        UDP: inuse 0 mem 7\n";
        assert_eq!(tcp_mem_pages(sockstat), Some(262));
        assert_eq!(tcp_mem_pages("sockets: used 1\n"), None);
        let netstat = "TcpExt: SyncookiesSent TCPMemoryPressures TCPMemoryPressuresChrono\n\
                       TcpExt: 0 17 4\nIpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(tcp_ext(netstat, "TCPMemoryPressures"), Some(17));
        assert_eq!(tcp_ext(netstat, "TCPMemoryPressuresChrono"), Some(4));
        assert_eq!(tcp_ext(netstat, "InNoRoutes"), None);
        // This machine's own files parse (the run depends on them).
        assert!(tcp_mem_pages(&read("/proc/net/sockstat")).is_some());
        assert!(tcp_ext(&read("/proc/net/netstat"), "TCPMemoryPressures").is_some());
        assert!(tcp_mem_limits().is_some_and(|[a, b, c]| a <= b && b <= c));
        let stat = "cpu  10 0 20 30 0 0 250 0 0 0\ncpu0 5 0 10 15 0 0 125 0 0 0\n";
        assert_eq!(softirq_seconds(stat), Some(250.0 / ticks_per_second()));
        assert!(softirq_seconds(&read("/proc/stat")).is_some());
    }
}
