//! Vector distance kernels shared by SQL functions and HNSW indexes.
//!
//! Sums run over eight independent lanes so the compiler can keep them in
//! SIMD registers without reassociating a single floating-point chain
//! (which it may not do on its own).

const LANES: usize = 8;

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

#[inline]
fn lanes<F: Fn(f32, f32) -> f32>(a: &[f32], b: &[f32], term: F) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let chunks = n / LANES;
    for c in 0..chunks {
        let x = &a[c * LANES..c * LANES + LANES];
        let y = &b[c * LANES..c * LANES + LANES];
        for i in 0..LANES {
            acc[i] += term(x[i], y[i]);
        }
    }
    let mut tail = 0.0f32;
    for i in chunks * LANES..n {
        tail += term(a[i], b[i]);
    }
    acc.iter().sum::<f32>() + tail
}

#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    lanes(a, b, |x, y| (x - y) * (x - y))
}

#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    lanes(a, b, |x, y| x * y)
}

#[inline]
pub fn l1(a: &[f32], b: &[f32]) -> f32 {
    lanes(a, b, |x, y| (x - y).abs())
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
    }

    #[test]
    fn cosine_of_a_zero_vector_is_nan_and_parallel_vectors_are_zero() {
        assert!(cosine_distance(&[0.0, 0.0], &[1.0, 2.0]).is_nan());
        assert_eq!(cosine_distance(&[1.0, 2.0], &[2.0, 4.0]), 0.0);
        assert_eq!(cosine_distance(&[1.0, 0.0], &[-1.0, 0.0]), 2.0);
    }
}
