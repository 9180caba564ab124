//! Vector distance kernels shared by SQL functions and HNSW indexes.
//!
//! Sums run over independent lanes so the compiler can keep them in SIMD
//! registers without reassociating a single floating-point chain (which it
//! may not do on its own). On x86-64 processors with AVX2 and FMA, and
//! again with AVX-512, the same loops are compiled once more for those
//! instructions and the widest the processor has is chosen at run time, so
//! one binary runs everywhere and uses the wide registers where they exist.

const LANES: usize = 16;

/// The elements of row `row` of a `FixedSizeList<Float32>` array.
pub fn vector_at(vectors: &arrow_array::FixedSizeListArray, row: usize) -> &[f32] {
    use arrow_array::cast::AsArray;
    use arrow_array::Array;
    let dims = vectors.value_length() as usize;
    let values = vectors
        .values()
        .as_primitive::<arrow_array::types::Float32Type>()
        .values();
    let start = (vectors.offset() + row) * dims;
    &values[start..start + dims]
}

/// How an index or a query measures closeness. Smaller is closer for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Euclidean distance; indexes rank by its square.
    L2,
    /// `1 - cos(a, b)`.
    Cosine,
    /// `-(a . b)`, pgvector's `<#>`.
    InnerProduct,
}

impl Metric {
    pub fn code(self) -> u8 {
        match self {
            Metric::L2 => 0,
            Metric::Cosine => 1,
            Metric::InnerProduct => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<Metric> {
        match code {
            0 => Some(Metric::L2),
            1 => Some(Metric::Cosine),
            2 => Some(Metric::InnerProduct),
            _ => None,
        }
    }

    /// The value an index orders by: monotone in the SQL distance.
    #[inline]
    pub fn rank(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::L2 => l2_squared(a, b),
            Metric::Cosine => cosine_distance(a, b) as f32,
            Metric::InnerProduct => -dot(a, b),
        }
    }

    /// The SQL distance (`<->`, `<=>`, `<#>`) of two vectors.
    pub fn distance(self, a: &[f32], b: &[f32]) -> f64 {
        match self {
            Metric::L2 => f64::from(l2_squared(a, b)).sqrt(),
            Metric::Cosine => cosine_distance(a, b),
            Metric::InnerProduct => -f64::from(dot(a, b)),
        }
    }
}

/// Folds `step(acc, a[i], b[i])` over independent lanes.
#[inline(always)]
fn lanes<F: Fn(f32, f32, f32) -> f32>(a: &[f32], b: &[f32], step: F) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (x_chunks, y_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (x_tail, y_tail) = (x_chunks.remainder(), y_chunks.remainder());
    for (x, y) in x_chunks.zip(y_chunks) {
        for i in 0..LANES {
            acc[i] = step(acc[i], x[i], y[i]);
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in x_tail.iter().zip(y_tail) {
        tail = step(tail, *x, *y);
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn l2_portable(a: &[f32], b: &[f32]) -> f32 {
    lanes(a, b, |acc, x, y| acc + (x - y) * (x - y))
}

#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    lanes(a, b, |acc, x, y| acc + x * y)
}

#[cfg(target_arch = "x86_64")]
mod wide {
    /// # Safety
    /// The processor must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn l2(a: &[f32], b: &[f32]) -> f32 {
        super::lanes(a, b, |acc, x, y| (x - y).mul_add(x - y, acc))
    }

    /// # Safety
    /// The processor must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        super::lanes(a, b, |acc, x, y| x.mul_add(y, acc))
    }

    /// # Safety
    /// The processor must support AVX-512F, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn l2_512(a: &[f32], b: &[f32]) -> f32 {
        super::lanes(a, b, |acc, x, y| (x - y).mul_add(x - y, acc))
    }

    /// # Safety
    /// The processor must support AVX-512F, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn dot_512(a: &[f32], b: &[f32]) -> f32 {
        super::lanes(a, b, |acc, x, y| x.mul_add(y, acc))
    }

    /// The widest kernels this processor runs.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub enum Width {
        Portable = 1,
        Avx2 = 2,
        Avx512 = 3,
    }

    pub fn width() -> Width {
        use std::sync::atomic::{AtomicU8, Ordering};
        // 0 = not yet checked, else a `Width`.
        static CHECKED: AtomicU8 = AtomicU8::new(0);
        match CHECKED.load(Ordering::Relaxed) {
            0 => {
                let avx2 = std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma");
                let width = match (avx2, std::arch::is_x86_feature_detected!("avx512f")) {
                    (true, true) => Width::Avx512,
                    (true, false) => Width::Avx2,
                    (false, _) => Width::Portable,
                };
                CHECKED.store(width as u8, Ordering::Relaxed);
                width
            }
            3 => Width::Avx512,
            2 => Width::Avx2,
            _ => Width::Portable,
        }
    }
}

/// Squared Euclidean distance.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match wide::width() {
        // SAFETY: the processor was checked for each kernel's features.
        wide::Width::Avx512 => return unsafe { wide::l2_512(a, b) },
        wide::Width::Avx2 => return unsafe { wide::l2(a, b) },
        wide::Width::Portable => {}
    }
    l2_portable(a, b)
}

#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match wide::width() {
        // SAFETY: the processor was checked for each kernel's features.
        wide::Width::Avx512 => return unsafe { wide::dot_512(a, b) },
        wide::Width::Avx2 => return unsafe { wide::dot(a, b) },
        wide::Width::Portable => {}
    }
    dot_portable(a, b)
}

#[inline]
pub fn l1(a: &[f32], b: &[f32]) -> f32 {
    lanes(a, b, |acc, x, y| acc + (x - y).abs())
}

/// `1 - cos(a, b)`; NaN when either vector is zero, as in pgvector.
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f64 {
    let similarity = f64::from(dot(a, b)) / (f64::from(dot(a, a)) * f64::from(dot(b, b))).sqrt();
    if similarity.is_nan() {
        return f64::NAN;
    }
    1.0 - similarity.clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_l2(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(x - y).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    #[test]
    fn kernels_match_the_textbook_formulas() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..19).map(|i| (i * i) as f32 * 0.1).collect();
        assert!((Metric::L2.distance(&a, &b) - naive_l2(&a, &b)).abs() < 1e-4);
        let dot_naive: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
        assert!((Metric::InnerProduct.distance(&a, &b) + dot_naive).abs() < 1e-3);
        let norm = |v: &[f32]| v.iter().map(|x| f64::from(x * x)).sum::<f64>().sqrt();
        let cos = 1.0 - dot_naive / (norm(&a) * norm(&b));
        assert!((Metric::Cosine.distance(&a, &b) - cos).abs() < 1e-6);
        assert_eq!(l1(&[1.0, -2.0], &[0.0, 2.0]), 5.0);
        // Every code path agrees (the widest is taken where available).
        assert!((l2_squared(&a, &b) - l2_portable(&a, &b)).abs() < 1e-3);
        assert!((dot(&a, &b) - dot_portable(&a, &b)).abs() < 1e-3);
        #[cfg(target_arch = "x86_64")]
        for width in [wide::Width::Avx2, wide::Width::Avx512] {
            if wide::width() as u8 >= width as u8 {
                // SAFETY: the processor supports the kernel's features.
                let (l2, dot) = unsafe {
                    match width {
                        wide::Width::Avx512 => (wide::l2_512(&a, &b), wide::dot_512(&a, &b)),
                        _ => (wide::l2(&a, &b), wide::dot(&a, &b)),
                    }
                };
                assert!((l2 - l2_portable(&a, &b)).abs() < 1e-3);
                assert!((dot - dot_portable(&a, &b)).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn cosine_of_a_zero_vector_is_nan_and_parallel_vectors_are_zero() {
        assert!(cosine_distance(&[0.0, 0.0], &[1.0, 2.0]).is_nan());
        assert_eq!(cosine_distance(&[1.0, 2.0], &[2.0, 4.0]), 0.0);
        assert_eq!(cosine_distance(&[1.0, 0.0], &[-1.0, 0.0]), 2.0);
    }
}
