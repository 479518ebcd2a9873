//! Vector walks of the fixed-depth layout ([`Fast`]): one lane per row,
//! a block of rows walks a tree at once, chosen at run time from what the
//! CPU has — AVX-512 (sixteen rows per vector), AVX2 (eight) — with the
//! scalar [`Fast::accumulate`] for the rest. Which one is fastest is
//! measured, not assumed (`super::calibration`): gathers are slow on some
//! CPUs, where the AVX2 walk ran at half the scalar one's speed.
//!
//! Why they beat the scalar walk: the scalar loop spends about two cycles
//! per row and tree level on node load → feature load → compare → index,
//! even with eight walks interleaved. Here the top levels' nodes live in
//! registers and each lane picks its node with one permute; deeper nodes
//! and the row values are gathered, so a level costs a handful of vector
//! instructions per vector of rows. Each block's levels form one
//! dependency chain through a gather (~30 cycles a level), so several
//! blocks walk together.
//!
//! Results are bit-identical to [`Fast::accumulate`]: the same f32
//! compares (`v <= t`, NaN goes right) and the same f64 additions in the
//! same order per row.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

use std::sync::atomic::{AtomicU8, Ordering};

use super::tree::Fast;

/// How rows walk the trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Walk {
    /// Eight interleaved scalar walks; every CPU.
    Scalar = 1,
    /// Eight rows per AVX2 vector.
    Avx2 = 2,
    /// Sixteen rows per AVX-512 vector.
    Avx512 = 3,
}

impl Walk {
    pub fn name(self) -> &'static str {
        match self {
            Walk::Scalar => "scalar",
            Walk::Avx2 => "avx2",
            Walk::Avx512 => "avx512",
        }
    }
}

/// The walk the process uses: 0 = the best the CPU has.
static CHOSEN: AtomicU8 = AtomicU8::new(0);

/// Forces `walk` (capped at what the CPU has), or the best with `None`.
pub(super) fn choose(walk: Option<Walk>) {
    CHOSEN.store(walk.map_or(0, |w| w as u8), Ordering::Relaxed);
}

/// Whether this CPU runs `walk` (std caches the answers).
fn supports(walk: Walk) -> bool {
    match walk {
        Walk::Scalar => true,
        #[cfg(target_arch = "x86_64")]
        Walk::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
        #[cfg(target_arch = "x86_64")]
        Walk::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
        #[cfg(not(target_arch = "x86_64"))]
        _ => false,
    }
}

/// The walks this CPU can run, best last.
pub(super) fn available() -> Vec<Walk> {
    [Walk::Scalar, Walk::Avx2, Walk::Avx512]
        .into_iter()
        .filter(|w| supports(*w))
        .collect()
}

/// The forced walk, capped at what the CPU has; `None` when none is forced.
pub(super) fn forced() -> Option<Walk> {
    let cap = CHOSEN.load(Ordering::Relaxed);
    (cap != 0).then(|| {
        [Walk::Avx512, Walk::Avx2]
            .into_iter()
            .find(|w| supports(*w) && *w as u8 <= cap)
            .unwrap_or(Walk::Scalar)
    })
}

/// Adds each row's path length in `tree` to `acc` for as many whole
/// vectors of rows as `walk` takes; returns how many rows it did (the
/// caller walks the rest with the scalar walk). `walk` must be one of
/// [`available`]; others do nothing.
pub(super) fn accumulate<const S: usize>(
    walk: Walk,
    tree: &Fast,
    rows: &[[f32; S]],
    acc: &mut [f64],
) -> usize {
    if !S.is_power_of_two() || !supports(walk) {
        return 0;
    }
    #[cfg(target_arch = "x86_64")]
    match walk {
        // SAFETY: the CPU has AVX-512F / AVX2 (`supports` checked it).
        Walk::Avx512 => return unsafe { avx512::accumulate::<S>(tree, rows, acc) },
        Walk::Avx2 => return unsafe { avx2::accumulate::<S>(tree, rows, acc) },
        Walk::Scalar => {}
    }
    let _ = (tree, rows, acc);
    0
}
