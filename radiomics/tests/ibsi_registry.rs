//! Checks the feature registry against the IBSI reference table: every non-diagnostics tag in
//! `shared/ibsi/reference_values.csv` (digital phantom and CT configurations A–E) must be in the
//! registry with the same IBSI code and family.

use radiomics::registry;

const REFERENCE_CSV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/ibsi/reference_values.csv"
);

#[test]
fn every_reference_tag_is_registered_with_its_code() {
    let text = std::fs::read_to_string(REFERENCE_CSV)
        .unwrap_or_else(|e| panic!("cannot read {REFERENCE_CSV}: {e}"));
    let mut lines = text.lines();
    let header = lines.next().expect("header line");
    assert_eq!(
        header,
        "phantom,config,family,feature,ibsi_code,value,tolerance"
    );
    let mut problems = Vec::new();
    let mut checked = 0;
    for line in lines {
        let cols: Vec<&str> = line.split(',').collect();
        assert_eq!(cols.len(), 7, "malformed row {line}");
        let (family, tag, code) = (cols[2], cols[3], cols[4]);
        if family == "diagnostics" {
            continue;
        }
        checked += 1;
        match registry::by_tag(tag) {
            None => problems.push(format!("{tag}: not in the registry")),
            Some(def) => {
                if def.ibsi_code != code {
                    problems.push(format!(
                        "{tag}: registry code {} != reference {code}",
                        def.ibsi_code
                    ));
                }
                if def.family.as_str() != family {
                    problems.push(format!(
                        "{tag}: registry family {} != reference {family}",
                        def.family.as_str()
                    ));
                }
            }
        }
    }
    assert_eq!(checked, 1804, "expected 482 digital + 1322 CT feature rows");
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
