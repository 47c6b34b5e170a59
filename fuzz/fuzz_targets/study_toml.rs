//! Fuzzes the TOML loaders: the statistician's study file (`StudySpec::from_toml`, which also
//! validates it and must then hash it), and the site's `policy.toml` (`SitePolicy::from_toml`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = federation::study::StudySpec::from_toml(text) {
        let _ = spec.hash();
    }
    let _ = federation::policy::SitePolicy::from_toml(text);
});
