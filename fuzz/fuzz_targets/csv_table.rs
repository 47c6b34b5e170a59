//! Fuzzes the site's CSV table reader (`site_agent::data::load_table` → `federation::table`) and
//! the typed column accessors every analysis uses on it.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::write_input("table.csv", data);
    let Ok(table) = site_agent::data::load_table(&path, "patient_id") else {
        return;
    };
    for name in table.header().to_vec() {
        let _ = table.numeric_column(&name);
        let _ = table.text_column(&name);
        let _ = table.label_column(&name, "1", "0");
    }
});
