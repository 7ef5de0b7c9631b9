//! The sum tree behind prioritized replay: priorities of `capacity` leaves in an
//! array-based binary tree, with the sum, the smallest non-zero and the largest
//! priority of every subtree, so that proportional sampling, `total()`, `max()`
//! and the minimum (for importance-weight normalization) are all `O(1)` or
//! `O(log capacity)`.
//!
//! Any capacity works: the leaves are padded to the next power of two with
//! zero-priority leaves, which are never returned. Priorities are `f64`, and
//! every inner node is recomputed from its children on update (never adjusted by
//! a difference), so rounding does not accumulate over millions of updates.
//!
//! **Boundary convention.** Leaf `i` owns the half-open interval
//! `[C_i, C_i + p_i)` of the cumulative sum, where `C_i = Σ_{j<i} p_j`: a prefix
//! sum exactly on a boundary belongs to the leaf on its right. With priorities
//! `[1, 2, 3, 4, 0]`, `find(1.0)` is 1 and `find(3.0)` is 2. Zero-priority leaves
//! own empty intervals and are never returned; a prefix at or past the total
//! (rounding in a caller's `uniform(0, total)`) returns the last non-zero leaf,
//! and a negative one the first.

use super::error::ReplayError;
use super::try_vec;

/// One tree node: over its subtree, the sum of priorities, the smallest
/// non-zero priority (`+∞` when all are zero) and the largest.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Node {
    sum: f64,
    min: f64,
    max: f64,
}

const EMPTY: Node = Node {
    sum: 0.0,
    min: f64::INFINITY,
    max: 0.0,
};

impl Node {
    fn leaf(priority: f64) -> Self {
        if priority == 0.0 {
            EMPTY
        } else {
            Self {
                sum: priority,
                min: priority,
                max: priority,
            }
        }
    }

    fn join(left: Self, right: Self) -> Self {
        Self {
            sum: left.sum + right.sum,
            min: left.min.min(right.min),
            max: left.max.max(right.max),
        }
    }
}

/// Priorities over leaves `0..capacity`, all zero when built.
#[derive(Debug, Clone, PartialEq)]
pub struct SumTree {
    capacity: usize,
    /// Leaves in the padded tree: `capacity` rounded up to a power of two.
    width: usize,
    /// `nodes[1]` is the root, node `i`'s children are `2i` and `2i + 1`, leaf
    /// `j` is `nodes[width + j]`; `nodes[0]` is unused.
    nodes: Vec<Node>,
}

impl SumTree {
    /// A tree of `capacity` zero-priority leaves.
    pub fn new(capacity: usize) -> Result<Self, ReplayError> {
        if capacity == 0 {
            return Err(ReplayError::Zero {
                what: "sum tree capacity",
            });
        }
        let too_large = ReplayError::TooLarge {
            what: "sum tree",
            rows: capacity,
            width: 1,
        };
        let width = capacity.checked_next_power_of_two().ok_or(too_large)?;
        Ok(Self {
            capacity,
            width,
            nodes: try_vec("sum tree", width, 2, EMPTY)?,
        })
    }

    /// A tree whose first leaves hold `priorities` (the rest zero), built
    /// bottom-up in `O(capacity)`. Refused when there are more priorities than
    /// leaves or one is negative or not finite.
    pub fn from_priorities(capacity: usize, priorities: &[f64]) -> Result<Self, ReplayError> {
        let mut tree = Self::new(capacity)?;
        if priorities.len() > capacity {
            return Err(ReplayError::LengthMismatch {
                what: "priorities",
                expected: capacity,
                got: priorities.len(),
            });
        }
        for (leaf, &priority) in priorities.iter().enumerate() {
            check_priority(priority)?;
            tree.nodes[tree.width + leaf] = Node::leaf(priority);
        }
        for node in (1..tree.width).rev() {
            tree.nodes[node] = Node::join(tree.nodes[2 * node], tree.nodes[2 * node + 1]);
        }
        Ok(tree)
    }

    /// Number of leaves.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sets leaf `index`'s priority (0 removes it from sampling). Refused, and the
    /// tree unchanged, for an index past the capacity or a negative or
    /// non-finite priority.
    pub fn update(&mut self, index: usize, priority: f64) -> Result<(), ReplayError> {
        if index >= self.capacity {
            return Err(ReplayError::IndexOutOfRange {
                index,
                len: self.capacity,
            });
        }
        check_priority(priority)?;
        let mut node = self.width + index;
        self.nodes[node] = Node::leaf(priority);
        while node > 1 {
            node /= 2;
            self.nodes[node] = Node::join(self.nodes[2 * node], self.nodes[2 * node + 1]);
        }
        Ok(())
    }

    /// Leaf `index`'s priority, `None` past the capacity.
    pub fn get(&self, index: usize) -> Option<f64> {
        (index < self.capacity).then(|| self.nodes[self.width + index].sum)
    }

    /// The priorities of leaves `0..capacity`, in order.
    pub fn priorities(&self) -> impl Iterator<Item = f64> + '_ {
        self.nodes[self.width..self.width + self.capacity]
            .iter()
            .map(|node| node.sum)
    }

    /// Sum of all priorities.
    pub fn total(&self) -> f64 {
        self.nodes[1].sum
    }

    /// The largest priority (0 when all are zero).
    pub fn max(&self) -> f64 {
        self.nodes[1].max
    }

    /// The smallest non-zero priority, `None` when all are zero: the least
    /// likely leaf that can be sampled, which sets the largest importance weight.
    pub fn min_nonzero(&self) -> Option<f64> {
        let min = self.nodes[1].min;
        min.is_finite().then_some(min)
    }

    /// The leaf whose interval `[C_i, C_i + p_i)` holds `prefix_sum` (see the
    /// module's boundary convention). Never a zero-priority leaf: values past the
    /// total give the last non-zero leaf, negative values the first. Refused when
    /// all priorities are zero or `prefix_sum` is NaN or infinite.
    pub fn find(&self, prefix_sum: f64) -> Result<usize, ReplayError> {
        if !prefix_sum.is_finite() {
            return Err(ReplayError::NonFinite { what: "prefix sum" });
        }
        if self.total() <= 0.0 {
            return Err(ReplayError::Empty);
        }
        // Invariant: the current node's sum is positive. Go left when the value
        // falls inside the left child's sum; otherwise right, unless the right
        // subtree is all zeros (the value is at or past the total by rounding),
        // in which case stay left and keep clamping towards its last leaf.
        let mut value = prefix_sum.max(0.0);
        let mut node = 1;
        while node < self.width {
            let left = 2 * node;
            let left_sum = self.nodes[left].sum;
            if value < left_sum {
                node = left;
            } else if self.nodes[left + 1].sum > 0.0 {
                value -= left_sum;
                node = left + 1;
            } else {
                node = left;
            }
        }
        Ok(node - self.width)
    }
}

/// Refuses a negative or non-finite priority.
fn check_priority(priority: f64) -> Result<(), ReplayError> {
    if !priority.is_finite() {
        return Err(ReplayError::NonFinite { what: "priority" });
    }
    if priority < 0.0 {
        return Err(ReplayError::OutOfRange {
            what: "priority",
            value: priority,
            range: "[0, ∞)",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reflex_sim::SimRng;

    fn tree_of(priorities: &[f64]) -> SumTree {
        let mut tree = SumTree::new(priorities.len()).unwrap();
        for (i, &p) in priorities.iter().enumerate() {
            tree.update(i, p).unwrap();
        }
        tree
    }

    /// The leaf a linear scan gives under the same convention.
    fn find_by_scan(priorities: &[f64], value: f64) -> usize {
        let mut cumulative = 0.0;
        let mut last_nonzero = 0;
        for (i, &p) in priorities.iter().enumerate() {
            if p > 0.0 {
                if value < cumulative + p {
                    return i;
                }
                last_nonzero = i;
            }
            cumulative += p;
        }
        last_nonzero
    }

    #[test]
    fn hand_worked_find_and_boundaries() {
        // Capacity 5 (not a power of two), priorities [1, 2, 3, 4, 0]:
        // intervals [0,1) → 0, [1,3) → 1, [3,6) → 2, [6,10) → 3, leaf 4 empty.
        let tree = tree_of(&[1.0, 2.0, 3.0, 4.0, 0.0]);
        assert_eq!(tree.total(), 10.0);
        assert_eq!(tree.max(), 4.0);
        assert_eq!(tree.min_nonzero(), Some(1.0));
        assert_eq!(tree.get(4), Some(0.0));
        assert_eq!(tree.get(5), None);
        for (value, leaf) in [
            (0.0, 0),
            (0.5, 0),
            (0.999, 0),
            (1.0, 1), // boundary: belongs to the right-hand leaf
            (2.999, 1),
            (3.0, 2),
            (5.999, 2),
            (6.0, 3),
            (9.99, 3),
            (10.0, 3), // the total: clamped to the last non-zero leaf, never 4
            (1e12, 3),
            (-1.0, 0),
        ] {
            assert_eq!(tree.find(value), Ok(leaf), "find({value})");
        }
        assert_eq!(
            tree.find(f64::NAN),
            Err(ReplayError::NonFinite { what: "prefix sum" })
        );
        assert!(tree.find(f64::INFINITY).is_err());
    }

    #[test]
    fn zero_priority_leaves_are_never_found() {
        let tree = tree_of(&[0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 2.0]);
        assert_eq!(tree.min_nonzero(), Some(2.0));
        for (value, leaf) in [(0.0, 2), (4.99, 2), (5.0, 6), (6.99, 6), (7.0, 6)] {
            assert_eq!(tree.find(value), Ok(leaf), "find({value})");
        }
    }

    #[test]
    fn updates_change_totals_and_extremes() {
        let mut tree = tree_of(&[1.0, 2.0, 3.0, 4.0, 0.0]);
        tree.update(1, 0.5).unwrap();
        assert_eq!(tree.total(), 8.5);
        assert_eq!(tree.min_nonzero(), Some(0.5));
        assert_eq!(tree.find(1.2), Ok(1));
        assert_eq!(tree.find(1.5), Ok(2));
        tree.update(3, 0.0).unwrap();
        assert_eq!(tree.total(), 4.5);
        assert_eq!(tree.max(), 3.0);
        assert_eq!(tree.find(4.5), Ok(2));
        tree.update(4, 6.0).unwrap();
        assert_eq!(tree.total(), 10.5);
        assert_eq!(tree.max(), 6.0);
        assert_eq!(tree.find(4.5), Ok(4));
        for leaf in 0..5 {
            tree.update(leaf, 0.0).unwrap();
        }
        assert_eq!(tree.total(), 0.0);
        assert_eq!(tree.max(), 0.0);
        assert_eq!(tree.min_nonzero(), None);
        assert_eq!(tree.find(0.0), Err(ReplayError::Empty));
    }

    #[test]
    fn update_refuses_bad_priorities_and_leaves_the_tree_unchanged() {
        let mut tree = tree_of(&[1.0, 2.0, 3.0]);
        let before = tree.clone();
        assert!(matches!(
            tree.update(1, f64::NAN),
            Err(ReplayError::NonFinite { .. })
        ));
        assert!(tree.update(1, f64::INFINITY).is_err());
        assert!(matches!(
            tree.update(1, -1.0),
            Err(ReplayError::OutOfRange { .. })
        ));
        assert_eq!(
            tree.update(3, 1.0),
            Err(ReplayError::IndexOutOfRange { index: 3, len: 3 })
        );
        assert_eq!(tree, before);
        assert!(SumTree::new(0).is_err());
        assert!(SumTree::from_priorities(2, &[1.0, 2.0, 3.0]).is_err());
        assert!(SumTree::from_priorities(3, &[1.0, f64::NAN]).is_err());
    }

    #[test]
    fn find_matches_a_linear_scan_for_every_capacity() {
        let mut rng = SimRng::seed(5);
        for capacity in 1..=17 {
            // Small integers: every cumulative sum is exact, so boundaries are
            // tested exactly.
            let priorities: Vec<f64> = (0..capacity).map(|_| rng.below(4) as f64).collect();
            let tree = tree_of(&priorities);
            assert_eq!(tree.total(), priorities.iter().sum::<f64>());
            assert_eq!(
                SumTree::from_priorities(capacity, &priorities).unwrap(),
                tree
            );
            if tree.total() == 0.0 {
                continue;
            }
            let mut probes: Vec<f64> = (0..=tree.total() as usize + 1).map(|v| v as f64).collect();
            probes.extend((0..50).map(|_| rng.uniform(0.0, tree.total())));
            for value in probes {
                let leaf = tree.find(value).unwrap();
                assert_eq!(
                    leaf,
                    find_by_scan(&priorities, value),
                    "{priorities:?} {value}"
                );
                assert!(priorities[leaf] > 0.0);
            }
        }
    }

    #[test]
    fn sampling_frequencies_are_proportional() {
        let priorities = [1.0, 2.0, 3.0, 4.0, 0.0];
        let tree = tree_of(&priorities);
        let mut rng = SimRng::seed(0);
        let draws = 100_000;
        let mut counts = [0usize; 5];
        for _ in 0..draws {
            counts[tree.find(rng.uniform(0.0, tree.total())).unwrap()] += 1;
        }
        assert_eq!(counts[4], 0);
        for (count, p) in counts.iter().zip(priorities) {
            let frequency = *count as f64 / draws as f64;
            assert!((frequency - p / 10.0).abs() < 0.01, "{counts:?}");
        }
    }

    #[test]
    fn tiny_priorities_beside_huge_ones_stay_reachable() {
        let tree = tree_of(&[1e-300, 1e300, 0.0]);
        assert_eq!(tree.find(0.0), Ok(0));
        assert_eq!(tree.find(1e-301), Ok(0));
        assert_eq!(tree.find(1e-299), Ok(1));
        assert_eq!(tree.find(tree.total()), Ok(1));
        assert_eq!(tree.min_nonzero(), Some(1e-300));
    }
}
