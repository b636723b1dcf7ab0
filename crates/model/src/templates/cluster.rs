//! Agglomerative clustering on a cosine-similarity matrix, and the figures that judge a
//! clustering (mean silhouette, cohesion, medoid).
//!
//! These are pure functions on plain numbers, kept apart from CLIP so that they are tested on
//! matrices whose right clustering is known. Every choice between equals goes to the lower index,
//! so a given matrix always gives the same clusters.

use std::collections::BTreeMap;

/// A symmetric matrix of cosine similarities between `n` items: what the clustering reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Similarity {
    n: usize,
    values: Vec<f64>,
}

impl Similarity {
    /// The similarities of L2-normalised feature rows (their dot products), computed in `f64` so
    /// that the clustering's sums do not depend on rounding order.
    pub fn of_unit_rows(rows: &[Vec<f32>]) -> Self {
        let n = rows.len();
        let mut values = vec![0.0; n * n];
        for i in 0..n {
            for j in i..n {
                let dot: f64 = rows[i]
                    .iter()
                    .zip(&rows[j])
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum();
                values[i * n + j] = dot;
                values[j * n + i] = dot;
            }
        }
        Self { n, values }
    }

    /// A matrix given row by row (constructed cases, callers with their own similarities).
    ///
    /// # Panics
    /// If the rows do not form a square matrix.
    pub fn from_rows(rows: &[Vec<f64>]) -> Self {
        let n = rows.len();
        assert!(
            rows.iter().all(|r| r.len() == n),
            "a similarity matrix is square"
        );
        Self {
            n,
            values: rows.concat(),
        }
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The similarity of items `i` and `j`.
    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.values[i * self.n + j]
    }

    /// The mean similarity of `i` to the members of `group` other than itself (`None` when
    /// there are none).
    fn mean_to(&self, i: usize, group: &[usize]) -> Option<f64> {
        let others: Vec<f64> = group
            .iter()
            .filter(|&&j| j != i)
            .map(|&j| self.get(i, j))
            .collect();
        (!others.is_empty()).then(|| others.iter().sum::<f64>() / others.len() as f64)
    }
}

/// The merges of average-linkage agglomerative clustering, from `n` single items to one cluster.
///
/// At each step the two clusters with the highest mean pairwise similarity merge (ties: the pair
/// that comes first in item order). A cluster is named by its first (lowest) item, and each merge
/// is `(kept, absorbed)` with `kept < absorbed`. The mean similarities of a merged cluster are
/// updated exactly (Lance–Williams for average linkage), so the whole order costs `O(n³)`.
pub fn merge_order(sim: &Similarity) -> Vec<(usize, usize)> {
    let n = sim.len();
    let mut link = sim.values.clone();
    let mut size = vec![1usize; n];
    let mut alive: Vec<usize> = (0..n).collect();
    let mut merges = Vec::with_capacity(n.saturating_sub(1));
    while alive.len() > 1 {
        let (a, b) = closest_pair(&link, n, &alive);
        let (wa, wb) = (size[a] as f64, size[b] as f64);
        for &c in alive.iter().filter(|&&c| c != a && c != b) {
            let merged = (wa * link[a * n + c] + wb * link[b * n + c]) / (wa + wb);
            link[a * n + c] = merged;
            link[c * n + a] = merged;
        }
        size[a] += size[b];
        alive.retain(|&c| c != b);
        merges.push((a, b));
    }
    merges
}

/// The pair of live clusters (in ascending order of their names) with the highest link; the
/// first such pair in scanning order on ties (a `NaN` link never wins).
fn closest_pair(link: &[f64], n: usize, alive: &[usize]) -> (usize, usize) {
    let mut best = (alive[0], alive[1], f64::NEG_INFINITY);
    for (x, &a) in alive.iter().enumerate() {
        for &b in &alive[x + 1..] {
            let value = link[a * n + b];
            if value > best.2 {
                best = (a, b, value);
            }
        }
    }
    (best.0, best.1)
}

/// The `k` clusters left after the first `n - k` merges of [`merge_order`], each a list of items
/// in ascending order, the clusters ordered by their first item.
///
/// # Panics
/// If `k` is 0 or more than `n`, or `merges` are not `n - 1` merges of `n` items.
pub fn partition(n: usize, merges: &[(usize, usize)], k: usize) -> Vec<Vec<usize>> {
    assert!((1..=n).contains(&k), "k = {k} clusters of {n} items");
    assert_eq!(merges.len(), n - 1, "the merges of {n} items");
    let mut owner: Vec<usize> = (0..n).collect();
    for &(kept, absorbed) in &merges[..n - k] {
        for o in owner.iter_mut().filter(|o| **o == absorbed) {
            *o = kept;
        }
    }
    let mut clusters: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (item, &o) in owner.iter().enumerate() {
        clusters.entry(o).or_default().push(item);
    }
    clusters.into_values().collect()
}

/// The mean silhouette of a clustering, with distance `1 − similarity`: for each item,
/// `(b − a) / max(a, b)` where `a` is its mean distance to the rest of its cluster and `b` its
/// mean distance to the nearest other cluster; an item alone in its cluster scores 0 (the usual
/// convention). `None` with fewer than two clusters, where it is undefined.
pub fn silhouette(sim: &Similarity, clusters: &[Vec<usize>]) -> Option<f64> {
    if clusters.len() < 2 {
        return None;
    }
    let mut total = 0.0;
    let mut items = 0usize;
    for (own, cluster) in clusters.iter().enumerate() {
        for &i in cluster {
            total += item_silhouette(sim, clusters, own, i);
            items += 1;
        }
    }
    Some(total / items as f64)
}

/// The silhouette of item `i` of cluster `own`.
fn item_silhouette(sim: &Similarity, clusters: &[Vec<usize>], own: usize, i: usize) -> f64 {
    let Some(within) = sim.mean_to(i, &clusters[own]) else {
        return 0.0;
    };
    let a = (1.0 - within).max(0.0);
    let b = clusters
        .iter()
        .enumerate()
        .filter(|&(g, _)| g != own)
        .filter_map(|(_, other)| sim.mean_to(i, other))
        .map(|s| (1.0 - s).max(0.0))
        .fold(f64::INFINITY, f64::min);
    let scale = a.max(b);
    if scale > 0.0 { (b - a) / scale } else { 0.0 }
}

/// The member of `cluster` with the highest mean similarity to the others (the first such in the
/// cluster's order): the template that best stands for its group.
///
/// # Panics
/// If `cluster` is empty.
pub fn medoid(sim: &Similarity, cluster: &[usize]) -> usize {
    let mut best = (cluster[0], f64::NEG_INFINITY);
    for &i in cluster {
        let score = sim.mean_to(i, cluster).unwrap_or(0.0);
        if score > best.1 {
            best = (i, score);
        }
    }
    best.0
}

/// The mean similarity over the distinct pairs of a cluster: how alike its members are. `None`
/// for a cluster of one.
pub fn cohesion(sim: &Similarity, cluster: &[usize]) -> Option<f64> {
    let mut sum = 0.0;
    let mut pairs = 0usize;
    for (x, &i) in cluster.iter().enumerate() {
        for &j in &cluster[x + 1..] {
            sum += sim.get(i, j);
            pairs += 1;
        }
    }
    (pairs > 0).then(|| sum / pairs as f64)
}

/// The mean silhouette of every cut of `merges` into `2..=max_k` clusters (at most `n − 1`, where
/// the silhouette is defined), in ascending order of `k`.
pub fn silhouettes(sim: &Similarity, merges: &[(usize, usize)], max_k: usize) -> Vec<(usize, f64)> {
    let n = sim.len();
    (2..=max_k.min(n.saturating_sub(1)))
        .filter_map(|k| silhouette(sim, &partition(n, merges, k)).map(|s| (k, s)))
        .collect()
}

/// The `k` of the highest score (the smallest such `k` on ties); `None` for no scores.
pub fn best_k(scores: &[(usize, f64)]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for &(k, score) in scores {
        if best.is_none_or(|(_, b)| score > b) {
            best = Some((k, score));
        }
    }
    best.map(|(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `labels.len()` items whose similarity is `within` inside a label and `between` across,
    /// with a small deterministic variation so that no two links tie.
    fn blocks(labels: &[usize], within: f64, between: f64) -> Similarity {
        let n = labels.len();
        let rows: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| match (i == j, labels[i] == labels[j]) {
                        (true, _) => 1.0,
                        (false, same) => {
                            let base = if same { within } else { between };
                            base + 0.01 * (((i * 7 + j * 7) % 5) as f64) / 5.0
                        }
                    })
                    .collect()
            })
            .collect();
        Similarity::from_rows(&rows)
    }

    /// A symmetric matrix of pseudo-random similarities in [-0.5, 1).
    fn scattered(n: usize, seed: u64) -> Similarity {
        let mut state = seed;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 11) as f64 / (1u64 << 53) as f64 * 1.5 - 0.5
        };
        let mut rows = vec![vec![1.0; n]; n];
        let pairs: Vec<(usize, usize)> = (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .collect();
        for (i, j) in pairs {
            let v = next();
            rows[i][j] = v;
            rows[j][i] = v;
        }
        Similarity::from_rows(&rows)
    }

    /// Average linkage by its definition: every step recomputes the mean similarity of every
    /// pair of clusters from their members.
    fn brute_force_merges(sim: &Similarity) -> Vec<(usize, usize)> {
        let mut clusters: Vec<Vec<usize>> = (0..sim.len()).map(|i| vec![i]).collect();
        let mut merges = Vec::new();
        while clusters.len() > 1 {
            let mut best = (0, 1, f64::NEG_INFINITY);
            for a in 0..clusters.len() {
                for b in a + 1..clusters.len() {
                    let pairs = clusters[a]
                        .iter()
                        .flat_map(|&i| clusters[b].iter().map(move |&j| (i, j)));
                    let total: f64 = pairs.map(|(i, j)| sim.get(i, j)).sum();
                    let mean = total / (clusters[a].len() * clusters[b].len()) as f64;
                    if mean > best.2 {
                        best = (a, b, mean);
                    }
                }
            }
            let absorbed = clusters.remove(best.1);
            merges.push((clusters[best.0][0], absorbed[0]));
            clusters[best.0].extend(absorbed);
            clusters[best.0].sort_unstable();
        }
        merges
    }

    #[test]
    fn interleaved_blocks_are_recovered_and_auto_finds_their_number() {
        let labels = [0, 1, 2, 0, 2, 1, 2, 0, 2];
        let sim = blocks(&labels, 0.9, 0.2);
        let merges = merge_order(&sim);
        assert_eq!(
            partition(9, &merges, 3),
            vec![vec![0, 3, 7], vec![1, 5], vec![2, 4, 6, 8]]
        );
        let scores = silhouettes(&sim, &merges, 20);
        assert_eq!(
            scores.iter().map(|s| s.0).collect::<Vec<_>>(),
            (2..=8).collect::<Vec<_>>()
        );
        assert_eq!(best_k(&scores), Some(3), "{scores:?}");
    }

    #[test]
    fn the_exact_update_agrees_with_average_linkage_by_definition() {
        for seed in 1..6 {
            let sim = scattered(12, seed);
            assert_eq!(merge_order(&sim), brute_force_merges(&sim), "seed {seed}");
        }
    }

    #[test]
    fn average_linkage_is_not_single_linkage() {
        // A chain 0-1-2-3 of strong neighbours against a tight pair {4, 5} that is only
        // moderately similar: single linkage would join the chain first (its neighbours are
        // closer than 4-5), average linkage weighs the chain's far ends.
        let mut rows = vec![vec![0.0; 6]; 6];
        for (i, row) in rows.iter_mut().enumerate() {
            row[i] = 1.0;
        }
        let mut set = |i: usize, j: usize, v: f64| {
            rows[i][j] = v;
            rows[j][i] = v;
        };
        set(0, 1, 0.95);
        set(1, 2, 0.95);
        set(2, 3, 0.95);
        set(0, 2, 0.3);
        set(1, 3, 0.3);
        set(0, 3, 0.0);
        set(4, 5, 0.8);
        let sim = Similarity::from_rows(&rows);
        let merges = merge_order(&sim);
        // {0,1} (0.95), then {2,3} (0.95), then 4-5 (0.8) before the two halves of the chain
        // (mean 0.3·2/4 + 0.95/4 + 0 = 0.3875).
        assert_eq!(&merges[..3], &[(0, 1), (2, 3), (4, 5)]);
        assert_eq!(
            partition(6, &merges, 3),
            vec![vec![0, 1], vec![2, 3], vec![4, 5]]
        );
    }

    #[test]
    fn ties_go_to_the_first_items() {
        let rows: Vec<Vec<f64>> = (0..4)
            .map(|i| (0..4).map(|j| if i == j { 1.0 } else { 0.5 }).collect())
            .collect();
        let sim = Similarity::from_rows(&rows);
        let merges = merge_order(&sim);
        assert_eq!(merges, vec![(0, 1), (0, 2), (0, 3)]);
        assert_eq!(partition(4, &merges, 2), vec![vec![0, 1, 2], vec![3]]);
        assert_eq!(medoid(&sim, &[1, 2, 3]), 1);
        assert_eq!(best_k(&[(2, 0.5), (3, 0.5), (4, 0.1)]), Some(2));
        assert_eq!(best_k(&[]), None);
    }

    #[test]
    fn silhouette_medoid_and_cohesion_have_their_textbook_values() {
        // Two pairs: within distance 0.2, across distance 1: every item (1 - 0.2) / 1 = 0.8.
        let rows = vec![
            vec![1.0, 0.8, 0.0, 0.0],
            vec![0.8, 1.0, 0.0, 0.0],
            vec![0.0, 0.0, 1.0, 0.8],
            vec![0.0, 0.0, 0.8, 1.0],
        ];
        let sim = Similarity::from_rows(&rows);
        let s = silhouette(&sim, &[vec![0, 1], vec![2, 3]]).unwrap();
        assert!((s - 0.8).abs() < 1e-12, "{s}");
        // Splitting a pair: its two singletons score 0; items 0 and 1 have a = 1 - 0.8 against
        // b = 1 (item 2 or 3 alone).
        let split = silhouette(&sim, &[vec![0, 1], vec![2], vec![3]]).unwrap();
        assert!((split - 0.4).abs() < 1e-12, "{split}");
        assert!(silhouette(&sim, &[vec![0, 1, 2, 3]]).is_none());
        // A star: 2 is close to both 0 and 1, which are far from each other.
        let star = Similarity::from_rows(&[
            vec![1.0, 0.5, 0.9],
            vec![0.5, 1.0, 0.9],
            vec![0.9, 0.9, 1.0],
        ]);
        assert_eq!(medoid(&star, &[0, 1, 2]), 2);
        let c = cohesion(&star, &[0, 1, 2]).unwrap();
        assert!((c - (0.5 + 0.9 + 0.9) / 3.0).abs() < 1e-12, "{c}");
        assert_eq!(cohesion(&star, &[1]), None);
    }

    #[test]
    fn unit_rows_give_their_cosines() {
        let sim = Similarity::of_unit_rows(&[vec![1.0, 0.0], vec![0.6, 0.8], vec![0.0, 1.0]]);
        assert_eq!(sim.len(), 3);
        assert!((sim.get(0, 1) - 0.6).abs() < 1e-7);
        assert!((sim.get(2, 1) - 0.8).abs() < 1e-7);
        assert!(sim.get(0, 2).abs() < 1e-12);
    }
}
