//! RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification. Pure: the tree's
//! nodes come from a `Subtrees` source (memory in tests, SQLite in the audit log).
//!
//! Every hash handled here is exactly 32 bytes; a verifier given anything else refuses.

use crate::crypto::sha256;
use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// SHA-256 of the empty string: the root of the empty tree.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("a hash has {0} bytes; every hash must have exactly 32")]
    HashLength(usize),
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("first tree size {size1} is larger than second tree size {size2}")]
    SizeOrder { size1: u64, size2: u64 },
    #[error("a consistency proof from an empty tree proves nothing")]
    EmptyFirstTree,
    #[error("proof has the wrong number of hashes")]
    ProofLength,
    #[error("proof does not lead to the expected root")]
    RootMismatch,
}

fn as_hash(b: &[u8]) -> Result<Hash, ProofError> {
    b.try_into().map_err(|_| ProofError::HashLength(b.len()))
}

/// Verifies that `leaf` is at `index` in the tree of `size` leaves with root `root` (RFC 9162
/// section 2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &[u8],
    proof: &[impl AsRef<[u8]>],
    root: &[u8],
) -> Result<(), ProofError> {
    let leaf = as_hash(leaf)?;
    let root = as_hash(root)?;
    let proof: Vec<Hash> = proof
        .iter()
        .map(|p| as_hash(p.as_ref()))
        .collect::<Result<_, _>>()?;
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf;
    for p in &proof {
        if s == 0 {
            return Err(ProofError::ProofLength);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::ProofLength);
    }
    if r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `size1` leaves with `root1` is a prefix of the tree of `size2`
/// leaves with `root2` (RFC 9162 section 2.1.4.2).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    root1: &[u8],
    root2: &[u8],
    proof: &[impl AsRef<[u8]>],
) -> Result<(), ProofError> {
    let root1 = as_hash(root1)?;
    let root2 = as_hash(root2)?;
    let mut path: Vec<Hash> = proof
        .iter()
        .map(|p| as_hash(p.as_ref()))
        .collect::<Result<_, _>>()?;
    if size1 > size2 {
        return Err(ProofError::SizeOrder { size1, size2 });
    }
    if size1 == size2 {
        if !path.is_empty() {
            return Err(ProofError::ProofLength);
        }
        return if root1 == root2 {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if size1 == 0 {
        return Err(ProofError::EmptyFirstTree);
    }
    if path.is_empty() {
        return Err(ProofError::ProofLength);
    }
    if size1.is_power_of_two() {
        path.insert(0, root1);
    }
    let (mut f, mut s) = (size1 - 1, size2 - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return Err(ProofError::ProofLength);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::ProofLength);
    }
    if fr != root1 || sr != root2 {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// A source of the hashes of complete subtrees: `complete(level, index)` is the root of leaves
/// `index << level .. (index + 1) << level`, all of which exist.
pub trait Subtrees {
    type Error;
    fn complete(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

fn largest_power_of_two_below(n: u64) -> u64 {
    debug_assert!(n > 1);
    1 << (63 - (n - 1).leading_zeros())
}

/// The root of leaves `start .. start + n` (n >= 1), built from complete subtrees.
fn range_hash<S: Subtrees>(s: &S, start: u64, n: u64) -> Result<Hash, S::Error> {
    if n.is_power_of_two() && start.is_multiple_of(n) {
        return s.complete(n.trailing_zeros(), start / n);
    }
    let k = largest_power_of_two_below(n);
    Ok(node_hash(
        &range_hash(s, start, k)?,
        &range_hash(s, start + k, n - k)?,
    ))
}

/// The root of the first `size` leaves.
pub fn root<S: Subtrees>(s: &S, size: u64) -> Result<Hash, S::Error> {
    if size == 0 {
        return Ok(EMPTY_ROOT);
    }
    range_hash(s, 0, size)
}

/// The audit path of leaf `index` in the tree of `size` leaves (RFC 9162 PATH).
pub fn inclusion_proof<S: Subtrees>(s: &S, index: u64, size: u64) -> Result<Vec<Hash>, S::Error> {
    assert!(
        index < size,
        "inclusion proof for leaf {index} of a tree of {size}"
    );
    let mut out = Vec::new();
    path(s, index, 0, size, &mut out)?;
    Ok(out)
}

fn path<S: Subtrees>(
    s: &S,
    m: u64,
    start: u64,
    n: u64,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    if n == 1 {
        return Ok(());
    }
    let k = largest_power_of_two_below(n);
    if m < k {
        path(s, m, start, k, out)?;
        out.push(range_hash(s, start + k, n - k)?);
    } else {
        path(s, m - k, start + k, n - k, out)?;
        out.push(range_hash(s, start, k)?);
    }
    Ok(())
}

/// The consistency proof between the trees of `m` and `n` leaves, 0 < m <= n (RFC 9162 PROOF).
pub fn consistency_proof<S: Subtrees>(s: &S, m: u64, n: u64) -> Result<Vec<Hash>, S::Error> {
    assert!(0 < m && m <= n, "consistency proof from {m} to {n}");
    let mut out = Vec::new();
    if m < n {
        subproof(s, m, 0, n, true, &mut out)?;
    }
    Ok(out)
}

fn subproof<S: Subtrees>(
    s: &S,
    m: u64,
    start: u64,
    n: u64,
    b: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    if m == n {
        if !b {
            out.push(range_hash(s, start, n)?);
        }
        return Ok(());
    }
    let k = largest_power_of_two_below(n);
    if m <= k {
        subproof(s, m, start, k, b, out)?;
        out.push(range_hash(s, start + k, n - k)?);
    } else {
        subproof(s, m - k, start + k, n - k, false, out)?;
        out.push(range_hash(s, start, k)?);
    }
    Ok(())
}

/// The right edge of a growing tree: one complete subtree per set bit of the size. Enough to
/// compute the root and to append, in O(log n) memory, so a verifier can stream a log of any
/// length.
#[derive(Clone, Debug, Default)]
pub struct Frontier {
    size: u64,
    /// (level, hash), levels strictly decreasing.
    nodes: Vec<(u32, Hash)>,
}

impl Frontier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the frontier of a tree of `size` leaves from its stored complete subtrees.
    pub fn load<S: Subtrees>(s: &S, size: u64) -> Result<Self, S::Error> {
        let mut nodes = Vec::new();
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size & (1u64 << level) != 0 {
                nodes.push((level, s.complete(level, start >> level)?));
                start += 1u64 << level;
            }
        }
        Ok(Self { size, nodes })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; returns the complete subtrees this append finished, as
    /// (level, index, hash), leaf first.
    pub fn push(&mut self, leaf: Hash) -> Vec<(u32, u64, Hash)> {
        let mut made = vec![(0, self.size, leaf)];
        let mut cur = (0u32, leaf);
        let mut index = self.size;
        while let Some(&(level, left)) = self.nodes.last() {
            if level != cur.0 {
                break;
            }
            self.nodes.pop();
            index >>= 1;
            cur = (level + 1, node_hash(&left, &cur.1));
            made.push((cur.0, index, cur.1));
        }
        self.nodes.push(cur);
        self.size += 1;
        made
    }

    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return EMPTY_ROOT;
        };
        for (_, h) in it {
            acc = node_hash(h, &acc);
        }
        acc
    }
}

/// Every complete subtree of a list of leaves, in memory: for tests, vectors and small exports.
#[derive(Clone, Debug, Default)]
pub struct MemTree {
    levels: Vec<Vec<Hash>>,
}

impl MemTree {
    pub fn from_leaf_hashes(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let prev = levels.last().unwrap();
            let next = prev
                .chunks_exact(2)
                .map(|p| node_hash(&p[0], &p[1]))
                .collect();
            levels.push(next);
        }
        Self { levels }
    }

    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }
}

impl Subtrees for MemTree {
    type Error = std::convert::Infallible;
    fn complete(&self, level: u32, index: u64) -> Result<Hash, Self::Error> {
        Ok(self.levels[level as usize][index as usize])
    }
}

/// SHA-256 of nothing, exposed for the empty-root check in tests.
pub fn empty_root() -> Hash {
    sha256(b"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(n: u64) -> MemTree {
        MemTree::from_leaf_hashes((0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect())
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(EMPTY_ROOT, empty_root());
    }

    #[test]
    fn proofs_generated_here_verify_for_every_small_tree() {
        for n in 1..=33u64 {
            let t = tree(n);
            let r = root(&t, n).unwrap();
            for i in 0..n {
                let p = inclusion_proof(&t, i, n).unwrap();
                verify_inclusion(i, n, &leaf_hash(&i.to_be_bytes()), &p, &r).unwrap();
                assert!(verify_inclusion(i, n, &leaf_hash(b"other"), &p, &r).is_err());
            }
            for m in 1..=n {
                let p = consistency_proof(&t, m, n).unwrap();
                let r1 = root(&t, m).unwrap();
                verify_consistency(m, n, &r1, &r, &p).unwrap();
                if m < n {
                    assert!(verify_consistency(m, n, &r, &r, &p).is_err());
                }
            }
        }
    }

    #[test]
    fn frontier_matches_full_tree_and_emits_every_node() {
        let mut f = Frontier::new();
        let mut made = std::collections::HashMap::new();
        for n in 1..=70u64 {
            for (level, index, h) in f.push(leaf_hash(&(n - 1).to_be_bytes())) {
                made.insert((level, index), h);
            }
            let t = tree(n);
            assert_eq!(f.root(), root(&t, n).unwrap(), "size {n}");
            struct Stored<'a>(&'a std::collections::HashMap<(u32, u64), Hash>);
            impl Subtrees for Stored<'_> {
                type Error = ();
                fn complete(&self, l: u32, i: u64) -> Result<Hash, ()> {
                    self.0.get(&(l, i)).copied().ok_or(())
                }
            }
            let loaded = Frontier::load(&Stored(&made), n).unwrap();
            assert_eq!(loaded.root(), f.root());
        }
    }
}
