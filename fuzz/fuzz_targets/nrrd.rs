//! Fuzzes the NRRD reader (`radiomics::io::nrrd`, attached headers, raw/gzip/ascii encodings).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    // Detached `data file:` names are resolved next to the header, inside the scratch directory.
    let path = common::write_input("in.nrrd", data);
    let _ = radiomics::io::nrrd::read_nrrd(&path);
});
