//! Random numbers and key distributions for the mixed workload: a splitmix64
//! generator, and key ranks drawn uniformly or Zipf-distributed over a
//! connection's partition.
//!
//! The Zipf sampler is rejection-inversion (W. Hörmann and G. Derflinger,
//! "Rejection-inversion to generate variates from monotone discrete
//! distributions", 1996), as Apache Commons RNG implements it: O(1) set-up (no
//! O(n) zeta table, unlike YCSB's generator), no allocation, any exponent > 0
//! including 1, and about one iteration per sample. Rank 1 is the hottest key;
//! P(rank k) ∝ 1 / k^theta.

use crate::keys::mix;

/// splitmix64: a 64-bit state advanced by a constant and scrambled by [`mix`].
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Nearby seeds (connection ids) give unrelated sequences: the seed is scrambled first.
    pub fn new(seed: u64) -> Rng {
        Rng(mix(seed, 0x5eed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0, 0)
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in 0..n (n > 0); the modulo bias is below 2^-40 for n < 2^24.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// How keys are drawn from a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Uniform,
    Zipf,
}

/// Draws positions `0..n` of a partition.
#[derive(Debug, Clone)]
pub enum KeySampler {
    Uniform { n: u64 },
    Zipf(Zipf),
}

impl KeySampler {
    pub fn new(distribution: Distribution, n: u64, theta: f64) -> KeySampler {
        match distribution {
            Distribution::Uniform => KeySampler::Uniform { n },
            Distribution::Zipf => KeySampler::Zipf(Zipf::new(n, theta)),
        }
    }

    /// A position in `0..n`; with Zipf, position 0 is the hottest.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        match self {
            KeySampler::Uniform { n } => rng.below(*n),
            KeySampler::Zipf(zipf) => zipf.sample(rng) - 1,
        }
    }
}

/// Zipf ranks `1..=n` with exponent `theta` by rejection-inversion.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: f64,
    theta: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    s: f64,
}

impl Zipf {
    pub fn new(n: u64, theta: f64) -> Zipf {
        assert!(n > 0 && theta > 0.0, "Zipf needs n > 0 and theta > 0");
        let mut z = Zipf {
            n: n as f64,
            theta,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            s: 0.0,
        };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(n as f64 + 0.5);
        z.s = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        z
    }

    /// A rank in `1..=n`.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        loop {
            let u = self.h_integral_n + rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.s || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }

    /// h(x) = 1 / x^theta.
    fn h(&self, x: f64) -> f64 {
        (-self.theta * x.ln()).exp()
    }

    /// H(x), an integral of h, written to stay exact as theta → 1.
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.theta) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.theta)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// ln(1 + x) / x, continuous at 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// (e^x - 1) / x, continuous at 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: usize = 400_000;

    fn frequencies(sampler: &KeySampler, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        let mut counts = vec![0usize; n];
        for _ in 0..SAMPLES {
            counts[sampler.sample(&mut rng) as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / SAMPLES as f64).collect()
    }

    fn zipf_pmf(n: usize, theta: f64) -> Vec<f64> {
        let weights: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-theta)).collect();
        let total: f64 = weights.iter().sum();
        weights.iter().map(|w| w / total).collect()
    }

    #[test]
    fn zipf_samples_follow_the_zipf_law_for_several_exponents() {
        for theta in [0.5, 0.99, 1.0, 1.5] {
            let n = 1_000;
            let seen = frequencies(
                &KeySampler::new(Distribution::Zipf, n, theta),
                n as usize,
                7,
            );
            let pmf = zipf_pmf(n as usize, theta);
            for rank in 0..5 {
                let error = (seen[rank] - pmf[rank]).abs() / pmf[rank];
                assert!(
                    error < 0.05,
                    "theta {theta} rank {}: seen {:.4}, expected {:.4}",
                    rank + 1,
                    seen[rank],
                    pmf[rank]
                );
            }
            // The whole distribution: total variation distance stays small.
            let tvd: f64 = seen
                .iter()
                .zip(&pmf)
                .map(|(s, p)| (s - p).abs())
                .sum::<f64>()
                / 2.0;
            assert!(tvd < 0.02, "theta {theta}: total variation {tvd}");
        }
    }

    #[test]
    fn zipf_stays_in_range_for_tiny_and_huge_key_spaces() {
        let mut rng = Rng::new(1);
        for n in [1, 2, 3, u64::from(u32::MAX) * 4] {
            let sampler = KeySampler::new(Distribution::Zipf, n, 0.99);
            assert!((0..10_000).all(|_| sampler.sample(&mut rng) < n), "n {n}");
        }
    }

    #[test]
    fn uniform_samples_are_flat() {
        let n = 100;
        let seen = frequencies(
            &KeySampler::new(Distribution::Uniform, n, 0.0),
            n as usize,
            3,
        );
        assert!(seen.iter().all(|&f| (f - 0.01).abs() < 0.001), "{seen:?}");
    }

    #[test]
    fn rng_is_deterministic_per_seed_and_f64_is_in_unit_interval() {
        let (mut a, mut b, mut c) = (Rng::new(5), Rng::new(5), Rng::new(6));
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(xs, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(xs[0], c.next_u64());
        assert!((0..10_000).all(|_| (0.0..1.0).contains(&a.next_f64())));
    }
}
