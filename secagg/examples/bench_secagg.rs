//! Benchmark of secure aggregation at fedrad scale: a 56×56 packed cross-product (1596 values)
//! for each of 111 fits per round, 50 sites. Reports key setup, encoding, masking and
//! aggregation cost, and checks the decoded sum against the plain sum.
//!
//! Run with `cargo run --release -p secagg --example bench_secagg [-- SITES FITS ROUNDS]`.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secagg::{
    FixedPoint, KeyAnnouncement, Layout, MaskedRound, RoundSpec, SecAggPolicy, SiteSecret,
    SiteSession,
};

const STUDY: &str = "bench-study";
/// Upper triangle (with diagonal) of a 56×56 symmetric cross-product matrix.
const PACKED: usize = 56 * 57 / 2;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .map(|s| s.parse().expect("arguments: SITES FITS ROUNDS (integers)"))
        .unwrap_or(default)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let n_sites = arg(1, 50);
    let fits = arg(2, 111);
    let rounds = arg(3, 3);
    let len = PACKED * fits;
    let fp = FixedPoint::default();
    let layout = Layout::single("xtwx", len, fp);
    let policy = SecAggPolicy::default();
    println!(
        "secagg bench: {n_sites} sites, {fits} fits × {PACKED} values = {len} ring elements \
         ({:.2} MB per masked vector), F = {}, {rounds} rounds",
        len as f64 * 8.0 / 1e6,
        fp.frac_bits()
    );

    // Key setup: one X25519 key pair per site, then every site pins all peers (n−1 DH + HKDF).
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let t = Instant::now();
    let mut sites: Vec<SiteSession> = (0..n_sites)
        .map(|i| {
            SiteSession::new(
                STUDY,
                format!("site-{i:02}"),
                SiteSecret::generate(&mut rng),
                policy,
            )
            .unwrap()
        })
        .collect();
    let anns: Vec<KeyAnnouncement> = sites.iter().map(|s| s.announcement()).collect();
    let keygen = t.elapsed();
    let t = Instant::now();
    for s in &mut sites {
        s.accept_peer_keys(&anns).unwrap();
    }
    let agree = t.elapsed();
    println!(
        "key setup per site: keygen {:.1} µs, accept {} peer keys {:.1} µs",
        us(keygen) / n_sites as f64,
        n_sites - 1,
        us(agree) / n_sites as f64
    );

    // Inputs: cross-product-like values (|x| up to 1e4), fixed across rounds.
    let inputs: Vec<Vec<f64>> = (0..n_sites)
        .map(|_| (0..len).map(|_| rng.gen_range(-1e4..1e4)).collect())
        .collect();
    let ids: Vec<String> = sites.iter().map(|s| s.site_id().to_string()).collect();

    let (mut t_encode, mut t_mask, mut t_agg, mut t_decode) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let mut decoded = Vec::new();
    for r in 0..rounds {
        let spec = RoundSpec::new(STUDY, r as u64 + 1, ids.clone()).unwrap();
        let mut round = MaskedRound::new(spec.clone(), len, &policy).unwrap();
        for (site, x) in sites.iter_mut().zip(&inputs) {
            let t = Instant::now();
            let enc = layout.encode(&[x], spec.n()).unwrap();
            t_encode += t.elapsed();
            let t = Instant::now();
            let masked = site.mask(&spec, enc).unwrap();
            t_mask += t.elapsed();
            let t = Instant::now();
            round.accept(&masked).unwrap();
            t_agg += t.elapsed();
        }
        let t = Instant::now();
        decoded = layout.decode(&round.complete().unwrap()).unwrap().remove(0);
        t_decode += t.elapsed();
    }
    let per_site_round = |d: Duration| us(d) / (n_sites * rounds) as f64;
    let per_round = |d: Duration| us(d) / rounds as f64;
    println!(
        "site, per site per round: encode {:.0} µs + mask {:.0} µs = {:.0} µs \
         ({:.1} ns per value per peer; keystream {:.2} GB/s)",
        per_site_round(t_encode),
        per_site_round(t_mask),
        per_site_round(t_encode + t_mask),
        per_site_round(t_mask) * 1e3 / (len * (n_sites - 1)) as f64,
        (len * (n_sites - 1) * 8) as f64 / (per_site_round(t_mask) * 1e-6) / 1e9
    );
    println!(
        "aggregator, per round: accept {} vectors {:.0} µs, complete + decode {:.0} µs",
        n_sites,
        per_round(t_agg),
        per_round(t_decode)
    );

    // Correctness at scale: decoded masked sum vs plain f64 sum.
    let mut worst = 0.0f64;
    for j in 0..len {
        let plain: f64 = inputs.iter().map(|v| v[j]).sum();
        worst = worst.max((decoded[j] - plain).abs());
    }
    let bound = fp.sum_error_bound(n_sites) + n_sites as f64 * 1e4 * 2f64.powi(-50);
    println!(
        "max |masked − plain| over {len} sums: {worst:.3e} (bound n·2^-(F+1) + f64 rounding = {bound:.3e})"
    );
    assert!(worst <= bound, "precision bound violated");
}
