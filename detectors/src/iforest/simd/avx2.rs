//! The AVX2 walk: eight rows per vector. Levels 0–3 (15 nodes) are picked
//! from registers with `vpermps`/`vpermd`; levels 4–7 gather the node.
//! (Without AVX-512 there are 16 vector registers: eight blocks' indices
//! and these four leave little room.)

use std::arch::x86_64::{
    __m256, __m256i, _CMP_LE_OQ, _mm256_add_epi32, _mm256_add_pd, _mm256_and_si256,
    _mm256_castps_si256, _mm256_castsi256_si128, _mm256_cmp_ps, _mm256_extracti128_si256,
    _mm256_i32gather_epi32, _mm256_i32gather_pd, _mm256_i32gather_ps, _mm256_loadu_pd,
    _mm256_loadu_ps, _mm256_loadu_si256, _mm256_mullo_epi32, _mm256_permutevar8x32_epi32,
    _mm256_permutevar8x32_ps, _mm256_set1_epi32, _mm256_setr_epi32, _mm256_setzero_si256,
    _mm256_storeu_pd, _mm256_sub_epi32,
};

use super::super::tree::{FAST_DEPTH, FAST_INTERNAL, Fast};

// The walk below takes levels 0–3 from registers.
const _: () = assert!(FAST_DEPTH >= 4);

/// Rows per vector.
const LANES: usize = 8;

/// Blocks of eight rows in flight (each block's levels are one dependency
/// chain through a gather). Measured on the 1M × 8 bench (debug bench
/// binary, optimised crate): 2 → 0.91M rows/s, 4 → 1.27M, 8 → 2.1–2.3M,
/// 12 → 2.06M, 16 → 2.13M. Level 4 from registers as well (two
/// permutes and a blend instead of two gathers) measured the same.
const G: usize = 8;

/// Thresholds and features of nodes 0..8 (levels 0–2) and 7..15 (level 3),
/// and each lane's row offset.
#[derive(Clone, Copy)]
struct Registers {
    top: (__m256, __m256i),
    level3: (__m256, __m256i),
    lane_offset: __m256i,
}

/// See [`super::accumulate`]; the caller checked that the CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(super) fn accumulate<const S: usize>(tree: &Fast, rows: &[[f32; S]], acc: &mut [f64]) -> usize {
    let (thr, feat) = (tree.thresholds(), tree.features());
    let load = |at: usize| -> (__m256, __m256i) {
        let (t, f) = (&thr[at..at + LANES], &feat[at..at + LANES]);
        // SAFETY: `t` and `f` hold 8 f32 and 8 i32 (bounds-checked
        // slices); the loads are unaligned.
        unsafe {
            (
                _mm256_loadu_ps(t.as_ptr()),
                _mm256_loadu_si256(f.as_ptr().cast()),
            )
        }
    };
    let regs = Registers {
        top: load(0),
        level3: load(7),
        lane_offset: _mm256_mullo_epi32(
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            _mm256_set1_epi32(S as i32),
        ),
    };
    let n = rows.len().min(acc.len()) / LANES * LANES;
    let (rows, acc) = (&rows[..n], &mut acc[..n]);
    let grouped = n / (G * LANES) * (G * LANES);
    for (r, a) in rows[..grouped]
        .chunks_exact(G * LANES)
        .zip(acc[..grouped].chunks_exact_mut(G * LANES))
    {
        walk::<S, G>(tree, &regs, r, a);
    }
    for (r, a) in rows[grouped..]
        .chunks_exact(LANES)
        .zip(acc[grouped..].chunks_exact_mut(LANES))
    {
        walk::<S, 1>(tree, &regs, r, a);
    }
    n
}

/// Walks `G` blocks of eight rows (`rows` and `acc` hold exactly `8 G`).
#[target_feature(enable = "avx2")]
#[inline]
fn walk<const S: usize, const G: usize>(
    tree: &Fast,
    regs: &Registers,
    rows: &[[f32; S]],
    acc: &mut [f64],
) {
    let (thr, feat, value) = (tree.thresholds(), tree.features(), tree.values());
    let two = _mm256_set1_epi32(2);
    let stride_mask = _mm256_set1_epi32(S as i32 - 1);
    let node_mask = _mm256_set1_epi32(FAST_INTERNAL as i32);
    let mut base = [std::ptr::null::<f32>(); G];
    for (k, b) in base.iter_mut().enumerate() {
        *b = rows[k * LANES..(k + 1) * LANES].as_ptr().cast();
    }
    let step = |k: usize, idx: __m256i, t: __m256, f: __m256i| -> __m256i {
        let at = _mm256_add_epi32(regs.lane_offset, _mm256_and_si256(f, stride_mask));
        // SAFETY: lane r reads row r of block k at `f & (S - 1)`, inside
        // that block's 8 rows (`base[k]` comes from a bounds-checked slice
        // of 8 rows).
        let v = unsafe { _mm256_i32gather_ps::<4>(base[k], at) };
        // All ones (−1) where `v <= t` (NaN: 0, right): 2i+2−1 = 2i+1.
        let left = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(v, t));
        _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(idx, idx), two), left)
    };
    let mut idx = [_mm256_setzero_si256(); G];
    let (t0, f0) = regs.top;
    for _ in 0..3 {
        for (k, i) in idx.iter_mut().enumerate() {
            let t = _mm256_permutevar8x32_ps(t0, *i);
            let f = _mm256_permutevar8x32_epi32(f0, *i);
            *i = step(k, *i, t, f);
        }
    }
    let (t3, f3) = regs.level3;
    for (k, i) in idx.iter_mut().enumerate() {
        let j = _mm256_sub_epi32(*i, _mm256_set1_epi32(7));
        let t = _mm256_permutevar8x32_ps(t3, j);
        let f = _mm256_permutevar8x32_epi32(f3, j);
        *i = step(k, *i, t, f);
    }
    for _ in 4..FAST_DEPTH {
        for (k, i) in idx.iter_mut().enumerate() {
            let at = _mm256_and_si256(*i, node_mask);
            // SAFETY: `at` ≤ 255 and both node arrays hold 256.
            let (t, f) = unsafe {
                (
                    _mm256_i32gather_ps::<4>(thr.as_ptr(), at),
                    _mm256_i32gather_epi32::<4>(feat.as_ptr(), at),
                )
            };
            *i = step(k, *i, t, f);
        }
    }
    for (k, i) in idx.iter().enumerate() {
        let leaf = _mm256_and_si256(
            _mm256_sub_epi32(*i, _mm256_set1_epi32(FAST_INTERNAL as i32)),
            node_mask,
        );
        let out = &mut acc[k * LANES..(k + 1) * LANES];
        // SAFETY: leaf indices are ≤ 255 and `value` holds 256; `out`
        // holds 8 f64 for the two 4-lane loads and stores.
        unsafe {
            let lo = _mm256_i32gather_pd::<8>(value.as_ptr(), _mm256_castsi256_si128(leaf));
            let hi = _mm256_i32gather_pd::<8>(value.as_ptr(), _mm256_extracti128_si256::<1>(leaf));
            let p = out.as_mut_ptr();
            _mm256_storeu_pd(p, _mm256_add_pd(_mm256_loadu_pd(p), lo));
            _mm256_storeu_pd(p.add(4), _mm256_add_pd(_mm256_loadu_pd(p.add(4)), hi));
        }
    }
}
