//! Runs `scripts/render_check.sh` (fixture report → headless Chromium screenshot). Ignored by
//! default: it needs /usr/bin/chromium and takes a while. Run it with
//! `cargo test -p report --test render_check -- --ignored`; it skips (passes with a message)
//! when Chromium is not installed.

use std::path::Path;
use std::process::Command;

#[test]
#[ignore = "needs /usr/bin/chromium; run with --ignored"]
fn report_renders_in_headless_chromium() {
    if !Path::new("/usr/bin/chromium").exists() {
        eprintln!("skipped: /usr/bin/chromium not installed (apt-get install -y chromium)");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/render_check.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg(out.path())
        .status()
        .expect("run render_check.sh");
    assert!(status.success(), "render_check.sh failed: {status}");
    let shot = out.path().join("report.png");
    let file = std::fs::File::open(&shot).unwrap();
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.width, 1400);
    // The page is drawn: far from uniform.
    let px = &buf[..info.buffer_size()];
    let step = info.color_type.samples();
    let first = &px[..step];
    let differing = px.chunks(step).filter(|c| *c != first).count();
    assert!(differing > px.len() / step / 10, "screenshot looks blank");
}
