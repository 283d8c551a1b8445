//! Bounded class counts. Labels and predictions are strings a client can choose, so per-class
//! counts and confusion matrices keep at most [`TOP_CLASSES`] classes by count and group the rest
//! as one [`OTHER`] class: a flood of distinct labels costs bounded memory and output.
//!
//! While counting, up to ten times that many classes are held exactly; when more arrive the
//! counts are compacted to the top [`TOP_CLASSES`] (the rest move to [`OTHER`]), so counts are
//! exact whenever a read sees at most that many distinct classes, totals are always exact, and a
//! class frequent enough to stay among the top between compactions keeps its count.

use std::collections::{BTreeMap, HashMap};

/// Classes kept by name; the rest are [`OTHER`].
pub const TOP_CLASSES: usize = 100;

/// The class standing for every class beyond the top [`TOP_CLASSES`].
pub const OTHER: &str = "__other__";

/// Distinct classes held before a compaction.
const HELD_CLASSES: usize = 10 * TOP_CLASSES;

/// Distinct (row, column) cells held before a compaction.
const HELD_CELLS: usize = 2 * (TOP_CLASSES + 1) * (TOP_CLASSES + 1);

/// The `k` keys of `counts` with the highest counts (ties by name).
fn top_keys(counts: &HashMap<String, u64>, k: usize) -> std::collections::HashSet<String> {
    let mut v: Vec<(&String, &u64)> = counts.iter().filter(|(c, _)| c.as_str() != OTHER).collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    v.into_iter().take(k).map(|(c, _)| c.clone()).collect()
}

/// Counts per class, at most [`TOP_CLASSES`] of them plus [`OTHER`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassCounts {
    counts: HashMap<String, u64>,
    other: u64,
}

impl ClassCounts {
    pub fn add(&mut self, class: &str, n: u64) {
        if class == OTHER {
            self.other += n;
        } else if let Some(c) = self.counts.get_mut(class) {
            *c += n;
        } else {
            self.counts.insert(class.to_string(), n);
            if self.counts.len() > HELD_CLASSES {
                self.compact();
            }
        }
    }

    fn compact(&mut self) {
        let keep = top_keys(&self.counts, TOP_CLASSES);
        let other = &mut self.other;
        self.counts.retain(|c, n| {
            let k = keep.contains(c);
            if !k {
                *other += *n;
            }
            k
        });
    }

    /// The top [`TOP_CLASSES`] classes and [`OTHER`] (when it counted anything).
    pub fn into_map(mut self) -> BTreeMap<String, u64> {
        self.compact();
        let mut out: BTreeMap<String, u64> = self.counts.into_iter().collect();
        if self.other > 0 {
            out.insert(OTHER.to_string(), self.other);
        }
        out
    }
}

/// Counts per (row class, column class), e.g. (true label, prediction): classes beyond the top
/// [`TOP_CLASSES`] by their count on either axis are [`OTHER`] on both axes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassPairs {
    cells: HashMap<(String, String), u64>,
}

impl ClassPairs {
    pub fn add(&mut self, row: &str, col: &str, n: u64) {
        if let Some(c) = self.cells.get_mut(&(row.to_string(), col.to_string())) {
            *c += n;
            return;
        }
        self.cells.insert((row.to_string(), col.to_string()), n);
        if self.cells.len() > HELD_CELLS {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let mut marginal: HashMap<String, u64> = HashMap::new();
        for ((r, c), n) in &self.cells {
            *marginal.entry(r.clone()).or_default() += n;
            if r != c {
                *marginal.entry(c.clone()).or_default() += n;
            }
        }
        if marginal.len() <= TOP_CLASSES {
            return;
        }
        let keep = top_keys(&marginal, TOP_CLASSES);
        let name = |s: String| if keep.contains(&s) { s } else { OTHER.to_string() };
        let mut cells = HashMap::new();
        for ((r, c), n) in self.cells.drain() {
            *cells.entry((name(r), name(c))).or_default() += n;
        }
        self.cells = cells;
    }

    /// Rows counted.
    pub fn total(&self) -> u64 {
        self.cells.values().sum()
    }

    /// The cells, with at most [`TOP_CLASSES`] classes plus [`OTHER`] on each axis.
    pub fn to_map(&self) -> BTreeMap<(String, String), u64> {
        let mut c = self.clone();
        c.compact();
        c.cells.into_iter().collect()
    }

    /// Adds every cell of `other`.
    pub fn merge(&mut self, other: &ClassPairs) {
        for ((r, c), n) in &other.cells {
            self.add(r, c, *n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_distinct_labels_keeps_the_top_classes_and_one_other() {
        let mut c = ClassCounts::default();
        // three real classes, frequent throughout, among 100,000 distinct one-off labels
        for i in 0..100_000u64 {
            c.add(&format!("junk-{i}"), 1);
            if i % 10 == 0 {
                c.add(["a", "b", "c"][(i / 10 % 3) as usize], 1);
            }
        }
        let m = c.into_map();
        assert_eq!(m.len(), TOP_CLASSES + 1);
        assert_eq!(m.values().sum::<u64>(), 110_000);
        for k in ["a", "b", "c"] {
            assert!(m[k] >= 3_333, "{k}: {}", m[k]);
        }
        assert!(m[OTHER] >= 100_000 - TOP_CLASSES as u64);

        // a handful of classes: exact, no OTHER
        let mut c = ClassCounts::default();
        c.add("x", 2);
        c.add("y", 1);
        assert_eq!(c.into_map(), BTreeMap::from([("x".into(), 2), ("y".into(), 1)]));
    }

    #[test]
    fn a_confusion_matrix_of_100000_labels_is_bounded() {
        let mut p = ClassPairs::default();
        for i in 0..100_000u64 {
            p.add(&format!("t{i}"), &format!("p{i}"), 1);
            if i % 4 == 0 {
                p.add("cat", "cat", 1);
                p.add("dog", "cat", 1);
            }
            assert!(p.cells.len() <= HELD_CELLS + 1);
        }
        let m = p.to_map();
        let rows: std::collections::BTreeSet<&String> = m.keys().map(|(r, _)| r).collect();
        let cols: std::collections::BTreeSet<&String> = m.keys().map(|(_, c)| c).collect();
        assert!(rows.len() <= TOP_CLASSES + 1 && cols.len() <= TOP_CLASSES + 1, "{} x {}", rows.len(), cols.len());
        assert_eq!(m.values().sum::<u64>(), 150_000);
        assert_eq!(m[&("cat".to_string(), "cat".to_string())], 25_000);
        assert_eq!(m[&("dog".to_string(), "cat".to_string())], 25_000);
        assert!(m[&(OTHER.to_string(), OTHER.to_string())] > 0);
    }
}
