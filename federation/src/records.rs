//! Checksummed records for append-only files (the aggregator's round log, the site's journal of
//! kept standardisations): `len: u32 LE | crc32(payload): u32 LE | payload`. Pure: the callers
//! do the IO.

/// One record around `payload`.
pub fn frame(payload: &[u8]) -> Result<Vec<u8>, String> {
    let len = u32::try_from(payload.len())
        .map_err(|_| format!("a record of {} bytes is too large", payload.len()))?;
    let mut record = Vec::with_capacity(8 + payload.len());
    record.extend_from_slice(&len.to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    record.extend_from_slice(payload);
    Ok(record)
}

/// The payloads of a file's records, in order, with their offsets.
#[derive(Debug, PartialEq)]
pub struct Records<'a> {
    pub payloads: Vec<(usize, &'a [u8])>,
    /// Where an incomplete last record starts (short, or failing its checksum, at the end of the
    /// file): cut short by a crash before it was complete, so never acted on; the caller drops
    /// it.
    pub torn_at: Option<usize>,
}

/// Splits `bytes` into records. `Err(offset)`: a record before the last one fails its checksum
/// (damage, not a crash).
pub fn split(bytes: &[u8]) -> Result<Records<'_>, usize> {
    let mut out = Records {
        payloads: Vec::new(),
        torn_at: None,
    };
    let mut at = 0usize;
    while at < bytes.len() {
        let header = bytes.get(at..at + 8);
        let len = header.map(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize);
        let payload = len.and_then(|l| bytes.get(at + 8..at + 8 + l));
        let valid = match (header, payload) {
            (Some(h), Some(p)) => {
                crc32fast::hash(p) == u32::from_le_bytes([h[4], h[5], h[6], h[7]])
            }
            _ => false,
        };
        let end = at + 8 + len.unwrap_or(0);
        if !valid {
            if end >= bytes.len() {
                out.torn_at = Some(at);
                break;
            }
            return Err(at);
        }
        out.payloads.push((at, payload.expect("valid")));
        at = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_back_and_a_torn_tail_is_set_apart_from_damage() {
        let mut file = Vec::new();
        for p in [&b"one"[..], b"", b"three"] {
            file.extend(frame(p).unwrap());
        }
        let r = split(&file).unwrap();
        let payloads: Vec<&[u8]> = r.payloads.iter().map(|p| p.1).collect();
        assert_eq!(payloads, [&b"one"[..], b"", b"three"]);
        assert_eq!(r.torn_at, None);
        let torn = split(&file[..file.len() - 2]).unwrap();
        assert_eq!(torn.payloads.len(), 2);
        assert_eq!(torn.torn_at, Some(file.len() - 13));
        let mut bad = file.clone();
        bad[9] ^= 1;
        assert_eq!(split(&bad), Err(0));
    }
}
