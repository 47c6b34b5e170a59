//! Fuzzes the NIfTI-1/-2 reader (`radiomics::io::nifti`): plain `.nii` and gzip `.nii.gz`
//! (the first input byte picks which). Any input must give `Ok` or an `IoError`, never a panic or
//! an allocation driven by header fields alone.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let path = if mode & 1 == 0 {
        common::write_input("in.nii", body)
    } else {
        // Raw bytes under a .gz name exercise the decompression-error paths; compressing the body
        // exercises the header parser behind gzip.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, body).unwrap();
        let gz = if mode & 2 == 0 {
            enc.finish().unwrap()
        } else {
            body.to_vec()
        };
        common::write_input("in.nii.gz", &gz)
    };
    let _ = radiomics::io::nifti::read_nifti(&path);
    let _ = radiomics::io::nifti::read_nifti_mask(&path, |v| v != 0.0);
});
