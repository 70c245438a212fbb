//! A cell is the median of its rounds, with the spread beside it: min–max, never a mean or a
//! standard deviation of three numbers. Two rungs are "different" only when their spreads do
//! not overlap ([`Spread::overlaps`]).

/// The median of a cell's rounds and the smallest and largest of them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// How many rounds had a value.
    pub n: usize,
}

impl Spread {
    /// The spread of the finite values among `values`; `None` when there is none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        // An even count takes the mean of the two middle values, as the median's definition
        // says; with three rounds (the full run) it is simply the middle one.
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    /// Whether the two ranges share any value: if they do, the data do not say which is larger.
    pub fn overlaps(&self, other: &Spread) -> bool {
        self.min <= other.max && other.min <= self.max
    }

    /// `fmt(median)`, and ` (fmt(min)–fmt(max))` when there were several rounds; the unit is
    /// written once when both ends share it (`9.0–12 µs`), at each end when not (`841 µs–5.3 ms`).
    pub fn show(&self, fmt: impl Fn(f64) -> String) -> String {
        if self.n < 2 {
            return fmt(self.median);
        }
        let (lo, hi) = (fmt(self.min), fmt(self.max));
        let unit = |s: &str| {
            s.trim_start_matches(|c: char| !c.is_alphabetic() && c != 'µ')
                .to_string()
        };
        let lo = if unit(&lo) == unit(&hi) {
            lo.trim_end_matches(|c: char| !c.is_ascii_digit())
                .to_string()
        } else {
            lo
        };
        format!("{} ({lo}–{hi})", fmt(self.median))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        let s = Spread::of([3.0, 1.0, 2.0]).expect("values");
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Spread::of([4.0, 1.0, 3.0, 2.0]).expect("values");
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 4.0, 4));
        let s = Spread::of([7.0]).expect("a value");
        assert_eq!((s.median, s.min, s.max, s.n), (7.0, 7.0, 7.0, 1));
    }

    #[test]
    fn missing_and_non_finite_values_are_left_out() {
        assert_eq!(Spread::of([]), None);
        assert_eq!(Spread::of([f64::NAN, f64::INFINITY]), None);
        let s = Spread::of([f64::NAN, 5.0, 1.0]).expect("two values");
        assert_eq!((s.median, s.n), (3.0, 2));
    }

    #[test]
    fn overlap_decides_whether_two_cells_differ() {
        let a = Spread::of([10.0, 11.0, 12.0]).expect("a");
        let b = Spread::of([12.0, 13.0, 14.0]).expect("b");
        let c = Spread::of([12.5, 13.0, 14.0]).expect("c");
        assert!(a.overlaps(&b) && b.overlaps(&a), "touching ranges overlap");
        assert!(!a.overlaps(&c) && !c.overlaps(&a));
    }

    #[test]
    fn shows_the_range_only_for_several_rounds() {
        let f = |x: f64| format!("{x:.1} µs");
        assert_eq!(
            Spread::of([9.0, 10.0, 12.0]).expect("v").show(f),
            "10.0 µs (9.0–12.0 µs)"
        );
        assert_eq!(Spread::of([9.0]).expect("v").show(f), "9.0 µs");
        let latency = |x: f64| crate::results::latency(x);
        assert_eq!(
            Spread::of([841.0, 4200.0, 5300.0])
                .expect("v")
                .show(latency),
            "4.2 ms (841 µs–5.3 ms)",
            "different units stay at both ends"
        );
    }
}
