//! Deterministic random numbers and synthetic build-time series, for the detector's
//! measurements (the trends tests, and `benches/trends_detection.rs`, which includes
//! this file): xoshiro256** seeded by SplitMix64, normals by Marsaglia's polar method,
//! so that every run and every machine draws the same series.

#![allow(dead_code)]

/// xoshiro256**: small, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
    spare: Option<f64>,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
            spare: None,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize
    }

    /// A standard normal.
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let f = (-2.0 * s.ln() / s).sqrt();
                self.spare = Some(v * f);
                return u * f;
            }
        }
    }

    /// Lognormal noise with median 1 and coefficient of variation `cv`: build times
    /// are skewed to the slow side, never negative.
    pub fn lognormal_cv(&mut self, cv: f64) -> f64 {
        let sigma = (1.0 + cv * cv).ln().sqrt();
        (sigma * self.normal()).exp()
    }
}

/// A series of `before` builds at `level`, then `after` builds `factor` times slower,
/// with lognormal noise of coefficient of variation `cv`.
pub fn series(
    rng: &mut Rng,
    level: f64,
    before: usize,
    after: usize,
    factor: f64,
    cv: f64,
) -> Vec<f64> {
    (0..before + after)
        .map(|i| {
            let f = if i >= before { factor } else { 1.0 };
            level * f * rng.lognormal_cv(cv)
        })
        .collect()
}

/// A store path hash part from a number: unique per build, valid nixbase32.
pub fn hash_of(n: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut rng = Rng::new(n);
    (0..32)
        .map(|_| char::from(ALPHABET[rng.below(32)]))
        .collect()
}

/// Records a series of build durations (ms) of derivations named `name`, one new .drv
/// per build as an input change makes, through the ledger's own record path (the
/// wrapper's records), one transaction per series; builds an hour apart from `start_ms`.
pub fn record_series(
    ledger: &mut nix_ledger::ledger::Ledger,
    name: &str,
    durations: &[f64],
    start_ms: i64,
    serial: &mut u64,
) -> nix_ledger::Result<()> {
    use nix_ledger::ledger::model::TimingSource;
    use nix_ledger::ledger::record::{BuildRecord, BuildStatus, Source};
    let records: Vec<BuildRecord> = durations
        .iter()
        .enumerate()
        .map(|(i, &ms)| {
            *serial += 1;
            let drv = format!("/nix/store/{}-{name}.drv", hash_of(*serial));
            let started = start_ms + i as i64 * 3_600_000;
            let mut rec = BuildRecord::new(
                &drv,
                Source::Wrapper,
                BuildStatus::Built,
                started + ms as i64,
            );
            rec.started_ms = Some(started);
            rec.timing_source = Some(TimingSource::Wrapper);
            rec
        })
        .collect();
    ledger.record_session_builds(&records).map(drop)
}
