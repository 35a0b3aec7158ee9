//! A postgres_changes position: a PostgreSQL snapshot in its text form
//! (`xmin:xmax:xip,...`), meaning "every transaction visible in it has been
//! delivered" (migrations/0025). Positions are set arithmetic on transaction
//! ids, so any node can resume any client's position, and a node's own read
//! cursor is one too. Only transactions that changed a published table
//! matter; the others are in or out of a position without effect.

use std::fmt;

/// Most in-progress transactions a client's position may list (a snapshot
/// lists the transactions running when it was taken; a position after a
/// REPEATABLE READ writer can also list the ids assigned while it ran).
const MAX_XIP: usize = 20_000;

/// Longest position text a client may send.
pub const MAX_TEXT: usize = 250_000;

/// Longest run of ids [`Position::with`] adds to reach a transaction past
/// `xmax`.
const MAX_RUN: u64 = 1_000_000;

/// A set of transaction ids: all below `xmax` except `xip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    xmax: u64,
    /// Sorted, each below `xmax`.
    xip: Vec<u64>,
}

impl Position {
    /// Parses a client's position (PostgreSQL's `pg_snapshot` text, within
    /// [`MAX_TEXT`]); `None` for anything else.
    pub fn parse(s: &str) -> Option<Position> {
        if s.len() > MAX_TEXT {
            return None;
        }
        Position::parse_with(s, MAX_XIP)
    }

    /// Parses a snapshot the database produced (no size limit).
    pub fn parse_trusted(s: &str) -> Option<Position> {
        Position::parse_with(s, usize::MAX)
    }

    fn parse_with(s: &str, max_xip: usize) -> Option<Position> {
        let mut parts = s.trim().splitn(3, ':');
        let xmin: u64 = parts.next()?.parse().ok()?;
        let xmax: u64 = parts.next()?.parse().ok()?;
        let list = parts.next()?;
        let mut xip = Vec::new();
        if !list.is_empty() {
            for x in list.split(',') {
                xip.push(x.parse::<u64>().ok()?);
                if xip.len() > max_xip {
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

    /// This set plus transaction `x`. A transaction at or past `xmax` (a
    /// REPEATABLE READ writer's snapshot can predate its own id) moves `xmax`
    /// past it, listing the ids in between as not in the set; past a run of
    /// [`MAX_RUN`] ids it is left out instead (which can only repeat it).
    /// For a read cursor and the positions sent to clients.
    pub fn with(mut self, x: u64) -> Position {
        if let Ok(i) = self.xip.binary_search(&x) {
            self.xip.remove(i);
        } else if x >= self.xmax && x - self.xmax <= MAX_RUN {
            self.xip.extend(self.xmax..x);
            self.xmax = x + 1;
        }
        self
    }

    /// This set plus transaction `x`, over-approximated past a run of
    /// [`MAX_RUN`] ids (the run counts as in the set). For the pruned mark,
    /// which must contain every pruned transaction.
    pub fn with_covering(self, x: u64) -> Position {
        if x >= self.xmax && x - self.xmax > MAX_RUN {
            return Position {
                xmax: x + 1,
                xip: self.xip,
            };
        }
        self.with(x)
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

/// Where a client resumes: a position, and possibly the part of the next
/// transaction it already had (`<position>@<xid>:<change id>`: the changes of
/// transaction `xid` up to that id), which is what an event in the middle of
/// a transaction carries: a client that drops off inside a large transaction
/// gets the rest of it, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// Every transaction in it was delivered.
    pub position: Position,
    /// Transaction id and last change id delivered of a transaction outside
    /// `position`.
    pub partial: Option<(u64, i64)>,
}

impl Resume {
    /// Parses a client's `postgres_changes_options.position`.
    pub fn parse(s: &str) -> Option<Resume> {
        let (pos, partial) = match s.split_once('@') {
            None => (s, None),
            Some((pos, part)) => {
                let (x, id) = part.split_once(':')?;
                (pos, Some((x.parse().ok()?, id.parse().ok()?)))
            }
        };
        let position = Position::parse(pos)?;
        // A transaction the position already holds has nothing left.
        let partial = partial.filter(|(x, _)| !position.contains(*x));
        Some(Resume { position, partial })
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
        assert_eq!(p("5:5:").with(9).to_string(), "5:10:5,6,7,8");
        assert_eq!(
            p("5:5:").with(5 + MAX_RUN + 1).to_string(),
            "5:5:",
            "not a long run"
        );
        let far = p("5:5:").with_covering(5 + MAX_RUN + 1);
        assert!(
            far.contains(5 + MAX_RUN + 1) && far.contains(7),
            "the mark over-approximates"
        );
        // A resume point inside a transaction.
        let r = Resume::parse("10:20:12,15@15:7").unwrap();
        assert_eq!((r.position, r.partial), (p("10:20:12,15"), Some((15, 7))));
        assert_eq!(
            Resume::parse("10:20:12@11:7").unwrap().partial,
            None,
            "already held"
        );
        assert!(Resume::parse("10:20:@x:1").is_none() && Resume::parse("10:20:@1").is_none());
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
