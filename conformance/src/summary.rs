//! Reading a server's shutdown summary (`docs/contract.md` §6) in tests: `label: value` lines.

/// The value of the line `label: value`. Panics, printing the whole summary, if there is none.
pub fn value<'a>(summary: &'a str, label: &str) -> &'a str {
    summary
        .lines()
        .find_map(|l| l.strip_prefix(label)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {label:?} line in the summary:\n{summary}"))
}

/// The whole numbers of the line `label: …`, in order (`peak 12, live 3` → `[12, 3]`;
/// `64 KiB` → `[64]`).
pub fn counts(summary: &str, label: &str) -> Vec<u64> {
    value(summary, label)
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// The numbers of the line `label: …`, decimals included, in order: the words that parse
/// (`p50 0.5 p99 1.25` → `[0.5, 1.25]`).
pub fn numbers(summary: &str, label: &str) -> Vec<f64> {
    value(summary, label)
        .split([' ', ','])
        .filter_map(|w| w.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_values_counts_and_numbers() {
        let s = "requests served: 7\nconnection threads: peak 12, live 3, stack 64 KiB\nqueue wait ms: p50 0.5 p99 1.25\n";
        assert_eq!(value(s, "requests served"), "7");
        assert_eq!(counts(s, "connection threads"), [12, 3, 64]);
        assert_eq!(numbers(s, "queue wait ms"), [0.5, 1.25]);
    }

    #[test]
    #[should_panic(expected = "no \"missing\" line")]
    fn a_missing_line_fails_the_test() {
        value("a: 1\n", "missing");
    }
}
