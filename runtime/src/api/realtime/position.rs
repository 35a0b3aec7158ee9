//! A postgres_changes position: a PostgreSQL snapshot in its text form
//! (`xmin:xmax:xip,...`), meaning "every transaction visible in it has been
//! delivered" (migrations/0025). Positions are set arithmetic on transaction
//! ids, so any node can resume any client's position, and a node's own read
//! cursor is one too. Only transactions that changed a published table
//! matter; the others are in or out of a position without effect.

use std::fmt;

/// Most in-progress transactions a position may list (a snapshot lists the
/// transactions running when it was taken: at most `max_connections`).
const MAX_XIP: usize = 10_000;

/// Longest position text a client may send.
pub const MAX_TEXT: usize = 200_000;

/// A set of transaction ids: all below `xmax` except `xip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    xmax: u64,
    /// Sorted, each below `xmax`.
    xip: Vec<u64>,
}

impl Position {
    /// Parses PostgreSQL's `pg_snapshot` text; `None` for anything else.
    pub fn parse(s: &str) -> Option<Position> {
        if s.len() > MAX_TEXT {
            return None;
        }
        let mut parts = s.trim().splitn(3, ':');
        let xmin: u64 = parts.next()?.parse().ok()?;
        let xmax: u64 = parts.next()?.parse().ok()?;
        let list = parts.next()?;
        let mut xip = Vec::new();
        if !list.is_empty() {
            for x in list.split(',') {
                xip.push(x.parse::<u64>().ok()?);
                if xip.len() > MAX_XIP {
                    return None;
                }
            }
        }
        let sorted = xip.windows(2).all(|w| w[0] < w[1]);
        let in_range = xip.iter().all(|&x| x >= xmin && x < xmax);
        (xmin >= 1 && xmin <= xmax && sorted && in_range).then_some(Position { xmax, xip })
    }

    /// Whether transaction `x` is in the set.
    pub fn contains(&self, x: u64) -> bool {
        x < self.xmax && self.xip.binary_search(&x).is_err()
    }

    /// The set of both: the later snapshot's running transactions that the
    /// other one has not seen finish.
    pub fn union(&self, other: &Position) -> Position {
        let (lo, hi) = if self.xmax <= other.xmax {
            (self, other)
        } else {
            (other, self)
        };
        Position {
            xmax: hi.xmax,
            xip: hi
                .xip
                .iter()
                .copied()
                .filter(|&x| !lo.contains(x))
                .collect(),
        }
    }

    /// The transactions in both.
    pub fn intersect(&self, other: &Position) -> Position {
        let xmax = self.xmax.min(other.xmax);
        let mut xip: Vec<u64> = self
            .xip
            .iter()
            .chain(&other.xip)
            .copied()
            .filter(|&x| x < xmax)
            .collect();
        xip.sort_unstable();
        xip.dedup();
        Position { xmax, xip }
    }

    /// This set plus transaction `x` (which is below `xmax` whenever it comes
    /// with its own commit snapshot: a position that would have to list a
    /// long run of ids is left without it, which can only repeat `x`).
    pub fn with(mut self, x: u64) -> Position {
        if let Ok(i) = self.xip.binary_search(&x) {
            self.xip.remove(i);
        } else if x >= self.xmax && x - self.xmax <= 64 {
            self.xip.extend(self.xmax..x);
            self.xmax = x + 1;
        }
        self
    }

    /// Whether every transaction of `other` is in this set.
    pub fn covers(&self, other: &Position) -> bool {
        if other.xmax > self.xmax {
            // Every id in [self.xmax, other.xmax) must be outside `other`.
            let missing = other.xip.iter().filter(|&&x| x >= self.xmax).count() as u64;
            if missing != other.xmax - self.xmax {
                return false;
            }
        }
        self.xip.iter().all(|&x| !other.contains(x))
    }

    /// The first id not yet assigned when the position was taken.
    pub fn xmax(&self) -> u64 {
        self.xmax
    }

    /// The listed in-progress ids (as text, for a query parameter).
    pub fn xip_text(&self) -> Vec<String> {
        self.xip.iter().map(u64::to_string).collect()
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let xmin = self.xip.first().copied().unwrap_or(self.xmax);
        write!(f, "{xmin}:{}:", self.xmax)?;
        for (i, x) in self.xip.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Position {
        Position::parse(s).unwrap()
    }

    #[test]
    fn set_arithmetic_as_postgres_visibility() {
        let a = p("10:20:12,15");
        assert!(a.contains(9) && a.contains(10) && !a.contains(12) && a.contains(19));
        assert!(!a.contains(20) && !a.contains(15));
        assert_eq!(a.to_string(), "12:20:12,15");
        // Union: the later snapshot, minus what the earlier saw finish.
        let b = p("14:25:15,21");
        assert_eq!(a.union(&b).to_string(), "15:25:15,21");
        assert_eq!(b.union(&a), a.union(&b));
        // Intersection: the earlier bound, either's running ids.
        assert_eq!(a.intersect(&b).to_string(), "12:20:12,15");
        // Adding a transaction the snapshot listed as running.
        assert_eq!(p("15:25:15,21").with(21).to_string(), "15:25:15");
        assert_eq!(p("5:5:").with(7).to_string(), "5:8:5,6");
        assert_eq!(p("5:5:").with(1_000).to_string(), "5:5:", "not a long run");
        // Covering.
        assert!(a.union(&b).covers(&a) && a.union(&b).covers(&b));
        assert!(!a.covers(&b) && b.covers(&p("1:1:")));
        assert!(
            p("10:20:").covers(&p("10:22:20,21")),
            "ids past xmax not in the other"
        );
        assert!(!p("10:20:").covers(&p("10:22:21")));
        assert!(!p("10:20:12").covers(&p("10:20:")));
        // Bad input.
        for bad in [
            "", "x", "1:2", "3:2:", "0:0:", "1:5:5", "1:5:3,2", "1:5:a", "-1:5:",
        ] {
            assert!(Position::parse(bad).is_none(), "{bad}");
        }
    }
}
