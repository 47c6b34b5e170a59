//! The `certs` command line: clap definitions and the code behind each subcommand. `main.rs` only
//! parses and maps the outcome to an exit code (0 ok, 1 error, 2 usage error from clap).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{ArgGroup, Parser, Subcommand};
use time::OffsetDateTime;

use crate::ca::{Ca, RevocationReason, Selector, Validity, fmt_time};
use crate::fsutil::{KEY_MODE, PUBLIC_MODE, atomic_write, read_text};
use crate::inspect::inspect_from;
use crate::kit::DEFAULT_AGGREGATOR_URL;

/// fedrad consortium PKI: one CA, certificates for the aggregator and every hospital site,
/// revocation lists.
#[derive(Debug, Parser)]
#[command(
    name = "certs",
    // Certificates carry no protocol messages, but every fedrad binary names the protocol
    // release it belongs to (the same string as `aggregator` and `site-agent`).
    version = concat!(env!("CARGO_PKG_VERSION"), " (protocol v4)"),
    after_help = "Typical setup:\n  certs init --dir ca\n  certs issue-aggregator --ca ca --out aggregator-kit --dns localhost --ip 127.0.0.1\n  certs issue-site --ca ca --site-id S01 --out kits/\n  certs revoke --ca ca --site-id S01 --reason cessationOfOperation\n\nExit codes: 0 success, 1 error (the message says what to fix), 2 usage error."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new consortium CA directory (ca.pem, ca.key, index.json, crl.pem).
    #[command(
        after_help = "Example:\n  certs init --dir ca --cn \"fedrad consortium CA\" --days 3650"
    )]
    Init {
        /// Directory to create the CA in.
        #[arg(long)]
        dir: PathBuf,
        /// Common name of the CA certificate.
        #[arg(long, default_value = "fedrad consortium CA")]
        cn: String,
        /// Validity of the CA certificate in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Replace an existing CA (its files are moved to DIR/replaced-<time>/).
        #[arg(long)]
        force: bool,
    },
    /// Issue the aggregator's server certificate and write its kit (ca.pem, aggregator.pem,
    /// aggregator.key, crl.pem). Without --dns/--ip, uses localhost and 127.0.0.1.
    #[command(
        after_help = "Example:\n  certs issue-aggregator --ca ca --out aggregator-kit --dns localhost --dns agg.example.org --ip 127.0.0.1"
    )]
    IssueAggregator {
        /// CA directory.
        #[arg(long)]
        ca: PathBuf,
        /// Output folder for the kit.
        #[arg(long)]
        out: PathBuf,
        /// DNS name sites use to reach the aggregator (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// IP address sites use to reach the aggregator (repeatable).
        #[arg(long)]
        ip: Vec<IpAddr>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Issue a site certificate and write the site kit OUT/<SITE_ID>/ (ca.pem, site.pem,
    /// site.key, site.toml, policy.toml).
    #[command(
        after_help = "Example:\n  certs issue-site --ca ca --site-id S01 --out kits/ --aggregator-url https://agg.example.org:7443"
    )]
    IssueSite {
        /// CA directory.
        #[arg(long)]
        ca: PathBuf,
        /// Site id: 1-64 characters of A-Z a-z 0-9 _ -.
        #[arg(long)]
        site_id: String,
        /// Folder that receives the kit folder.
        #[arg(long)]
        out: PathBuf,
        /// Aggregator URL written into site.toml.
        #[arg(long, default_value = DEFAULT_AGGREGATOR_URL)]
        aggregator_url: String,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Renew a certificate: same identity, new serial and dates. The renewed certificate replaces
    /// PATH (the old one is kept as PATH.old and stays valid until it expires or is revoked).
    #[command(
        after_help = "Example:\n  certs renew --ca ca --cert kits/S01/site.pem --days 365 --new-key"
    )]
    Renew {
        /// CA directory.
        #[arg(long)]
        ca: PathBuf,
        /// Certificate file to renew (overwritten).
        #[arg(long)]
        cert: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Generate a new key pair; the key file is replaced (old one kept as KEY.old).
        #[arg(long)]
        new_key: bool,
        /// Key file to replace with --new-key [default: the cert path with extension .key].
        #[arg(long, requires = "new_key")]
        key: Option<PathBuf>,
    },
    /// Revoke certificates and regenerate crl.pem.
    #[command(
        group(ArgGroup::new("which").required(true).args(["serial", "site_id", "cert"])),
        after_help = "Examples:\n  certs revoke --ca ca --site-id S01 --reason cessationOfOperation\n  certs revoke --ca ca --serial 3f0a9c... --reason keyCompromise\n  certs revoke --ca ca --cert kits/S01/site.pem.old --reason superseded"
    )]
    Revoke {
        /// CA directory.
        #[arg(long)]
        ca: PathBuf,
        /// Serial number (hex, as shown by `certs list`).
        #[arg(long)]
        serial: Option<String>,
        /// Revoke every unrevoked certificate of this site.
        #[arg(long)]
        site_id: Option<String>,
        /// Revoke the certificate in this PEM file.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// keyCompromise | superseded | cessationOfOperation | unspecified.
        #[arg(long, default_value = "unspecified")]
        reason: RevocationReason,
    },
    /// Show a certificate's identity, dates and (with --ca) signature and revocation status.
    #[command(after_help = "Example:\n  certs inspect kits/S01/site.pem --ca ca")]
    Inspect {
        /// PEM certificate file.
        path: PathBuf,
        /// CA directory, to check the signature and revocation.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// List every certificate the CA issued, with its status.
    #[command(after_help = "Example:\n  certs list --ca ca")]
    List {
        /// CA directory.
        #[arg(long)]
        ca: PathBuf,
    },
    /// Re-sign crl.pem with fresh dates (nextUpdate +30 days) without revoking anything.
    #[command(after_help = "Example:\n  certs crl --ca ca")]
    Crl {
        /// CA directory.
        #[arg(long)]
        ca: PathBuf,
    },
}

fn open_ca(dir: &Path) -> anyhow::Result<Ca> {
    let ca = Ca::open(dir)?;
    if let Some(w) = ca
        .key_permissions()
        .warning(&dir.join(crate::ca::CA_KEY_FILE))
    {
        eprintln!("warning: {w}");
    }
    if ca.crl_repaired() {
        eprintln!(
            "note: {} was missing or behind index.json and has been regenerated",
            ca.crl_path().display()
        );
    }
    Ok(ca)
}

/// Runs one parsed command, printing results to stdout and warnings to stderr.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init {
            dir,
            cn,
            days,
            force,
        } => {
            let ca = if force {
                Ca::init_overwriting(&dir, &cn, days)?
            } else {
                Ca::init(&dir, &cn, days)?
            };
            println!(
                "created CA {:?} in {} (valid until {})",
                ca.subject(),
                dir.display(),
                fmt_time(ca.not_after())
            );
            println!(
                "keep {} secret; distribute {}",
                dir.join("ca.key").display(),
                ca.cert_path().display()
            );
        }
        Command::IssueAggregator {
            ca,
            out,
            mut dns,
            mut ip,
            days,
        } => {
            if dns.is_empty() && ip.is_empty() {
                dns.push("localhost".into());
                ip.push(IpAddr::from([127, 0, 0, 1]));
            }
            let mut ca = open_ca(&ca)?;
            let kit = ca.write_aggregator_kit(&out, &dns, &ip, Validity::Days(days))?;
            note_capped(&ca, days);
            let names: Vec<String> = dns
                .iter()
                .cloned()
                .chain(ip.iter().map(|i| i.to_string()))
                .collect();
            println!(
                "aggregator kit written to {} for {}",
                kit.display(),
                names.join(", ")
            );
            println!(
                "after each revocation copy {} into the kit again (see README.txt there)",
                ca.crl_path().display()
            );
        }
        Command::IssueSite {
            ca,
            site_id,
            out,
            aggregator_url,
            days,
        } => {
            let mut ca = open_ca(&ca)?;
            let kit = ca.write_site_kit(&site_id, &out, &aggregator_url, Validity::Days(days))?;
            note_capped(&ca, days);
            println!("site kit for {site_id} written to {}", kit.display());
            println!("hand the whole folder to the site; site.key must stay on the site's host");
        }
        Command::Renew {
            ca,
            cert,
            days,
            new_key,
            key,
        } => {
            let mut ca = open_ca(&ca)?;
            let old_text = read_text(&cert)?;
            let renewed = ca.renew(&old_text, Validity::Days(days), new_key)?;
            note_capped(&ca, days);
            let old_copy = append_ext(&cert, "old");
            atomic_write(&old_copy, old_text.as_bytes(), PUBLIC_MODE)?;
            if let Some(key_pem) = &renewed.key_pem {
                let key_path = key.unwrap_or_else(|| cert.with_extension("key"));
                if key_path.exists() {
                    let old_key = read_text(&key_path)?;
                    atomic_write(&append_ext(&key_path, "old"), old_key.as_bytes(), KEY_MODE)?;
                }
                atomic_write(&key_path, key_pem.as_bytes(), KEY_MODE)?;
                println!("new key written to {}", key_path.display());
            }
            atomic_write(&cert, renewed.cert_pem.as_bytes(), PUBLIC_MODE)?;
            println!(
                "renewed {} certificate {} -> {} in {} (old copy: {})",
                renewed.kind,
                renewed.old_serial_hex,
                renewed.serial_hex,
                cert.display(),
                old_copy.display()
            );
            println!(
                "the old certificate stays valid until it expires; revoke it with `certs revoke --ca {} --serial {} --reason superseded` if needed",
                ca.dir().display(),
                renewed.old_serial_hex
            );
        }
        Command::Revoke {
            ca,
            serial,
            site_id,
            cert,
            reason,
        } => {
            let selector = match (serial, site_id, cert) {
                (Some(s), _, _) => Selector::Serial(s),
                (_, Some(id), _) => Selector::SiteId(id),
                (_, _, Some(path)) => Selector::CertPem(read_text(&path)?),
                _ => anyhow::bail!("give one of --serial, --site-id, --cert"),
            };
            let mut ca = open_ca(&ca)?;
            let serials = ca.revoke(&selector, reason)?;
            for s in &serials {
                println!("revoked {s} ({reason})");
            }
            println!(
                "{} updated (CRL number {}); copy it to the aggregator and reload it",
                ca.crl_path().display(),
                ca.index().crl_number
            );
        }
        Command::Inspect { path, ca } => {
            let text = read_text(&path)?;
            let ca = ca.as_deref().map(open_ca).transpose()?;
            let info = inspect_from(&text, &path, ca.as_ref(), OffsetDateTime::now_utc())
                .with_context(|| format!("inspecting {}", path.display()))?;
            print!("{info}");
        }
        Command::List { ca } => {
            let ca = open_ca(&ca)?;
            print!("{}", list_table(&ca, OffsetDateTime::now_utc()));
        }
        Command::Crl { ca } => {
            let mut ca = open_ca(&ca)?;
            let n = ca.refresh_crl()?;
            println!("{} re-signed (CRL number {n})", ca.crl_path().display());
        }
    }
    Ok(())
}

/// Tells the operator when `--days` was cut short by the CA's own expiry.
fn note_capped(ca: &Ca, days: u32) {
    let requested = OffsetDateTime::now_utc() + time::Duration::days(i64::from(days));
    if requested > ca.not_after() + time::Duration::minutes(1) {
        eprintln!(
            "note: validity capped at the CA's expiry {} (fewer than {days} days)",
            fmt_time(ca.not_after())
        );
    }
}

/// `path` with `.ext` appended to the full file name (`site.pem` -> `site.pem.old`).
fn append_ext(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// The `certs list` table.
pub fn list_table(ca: &Ca, now: OffsetDateTime) -> String {
    let mut out = format!(
        "CA {} ({}), CRL number {}\n",
        ca.subject(),
        ca.dir().display(),
        ca.index().crl_number
    );
    if ca.index().certs.is_empty() {
        out.push_str("no certificates issued yet\n");
        return out;
    }
    out.push_str(&format!(
        "{:<32}  {:<10}  {:<20}  {:<20}  {}\n",
        "SERIAL", "KIND", "ID", "NOT AFTER", "STATUS"
    ));
    for e in &ca.index().certs {
        let mut status = e.status(now).to_string();
        if let Some(r) = e.revocation_reason.filter(|_| e.revoked) {
            status.push_str(&format!(
                " ({r}, {})",
                e.revoked_at.map(fmt_time).unwrap_or_default()
            ));
        }
        let id = if e.names.is_empty() {
            e.id.clone()
        } else {
            e.names.join(",")
        };
        out.push_str(&format!(
            "{:<32}  {:<10}  {:<20}  {:<20}  {}\n",
            e.serial,
            e.kind.to_string(),
            id,
            fmt_time(e.not_after),
            status
        ));
    }
    out
}
