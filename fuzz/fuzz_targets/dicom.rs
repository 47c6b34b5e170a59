//! Fuzzes the DICOM series reader (`radiomics::io::dicom::read_dicom_series`) with a folder that
//! holds one slice, and the mask entry point for non-image objects (RTSTRUCT) on a 4×4×1 grid.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let dir = common::scratch().join("series");
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("slice.dcm");
    std::fs::write(&file, data).unwrap();
    let _ = radiomics::io::dicom::read_dicom_series(&dir);
    let geometry = radiomics::volume::Geometry {
        spacing: [1.0; 3],
        origin: [0.0; 3],
        direction: [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]],
    };
    let _ = radiomics::io::dicom::read_dicom_mask(&file, &geometry, [1, 4, 4], None);
});
