//! Small NRRD reader (`.nrrd` attached header, `.nhdr` + detached data file) for 3D scalar volumes.
//!
//! Supported: encodings `raw`, `gzip`/`gz` and `ascii`/`text`; the common integer and float types;
//! `endian`; `byte skip` (non-negative) and `line skip`; geometry from `space directions` +
//! `space origin` (world frame from `space`: LPS as is, RAS/LAS converted to the crate's LPS), or
//! from `spacings` when no space directions are given (axis-aligned, origin 0).
//! Axis order: NRRD lists the fastest axis first, i.e. x, y, z; the array is stored `[z, y, x]`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::{IoError, array_from_x_fastest, check_dims, geometry_from_columns};
use crate::volume::Volume;

const FMT: &str = "NRRD";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ty {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl Ty {
    fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "signed char" | "int8" | "int8_t" => Ty::I8,
            "uchar" | "unsigned char" | "uint8" | "uint8_t" => Ty::U8,
            "short" | "short int" | "signed short" | "signed short int" | "int16" | "int16_t" => {
                Ty::I16
            }
            "ushort" | "unsigned short" | "unsigned short int" | "uint16" | "uint16_t" => Ty::U16,
            "int" | "signed int" | "int32" | "int32_t" => Ty::I32,
            "uint" | "unsigned int" | "uint32" | "uint32_t" => Ty::U32,
            "longlong"
            | "long long"
            | "long long int"
            | "signed long long"
            | "signed long long int"
            | "int64"
            | "int64_t" => Ty::I64,
            "ulonglong"
            | "unsigned long long"
            | "unsigned long long int"
            | "uint64"
            | "uint64_t" => Ty::U64,
            "float" => Ty::F32,
            "double" => Ty::F64,
            _ => return None,
        })
    }
    fn size(self) -> usize {
        match self {
            Ty::I8 | Ty::U8 => 1,
            Ty::I16 | Ty::U16 => 2,
            Ty::I32 | Ty::U32 | Ty::F32 => 4,
            Ty::I64 | Ty::U64 | Ty::F64 => 8,
        }
    }
}

fn decode(ty: Ty, le: bool, raw: &[u8]) -> Vec<f64> {
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            raw.chunks_exact($n)
                .map(|c| {
                    let mut a = [0u8; $n];
                    a.copy_from_slice(c);
                    (if le {
                        <$t>::from_le_bytes(a)
                    } else {
                        <$t>::from_be_bytes(a)
                    }) as f64
                })
                .collect()
        };
    }
    match ty {
        Ty::I8 => raw.iter().map(|&v| v as i8 as f64).collect(),
        Ty::U8 => raw.iter().map(|&v| v as f64).collect(),
        Ty::I16 => conv!(i16, 2),
        Ty::U16 => conv!(u16, 2),
        Ty::I32 => conv!(i32, 4),
        Ty::U32 => conv!(u32, 4),
        Ty::I64 => conv!(i64, 8),
        Ty::U64 => conv!(u64, 8),
        Ty::F32 => conv!(f32, 4),
        Ty::F64 => conv!(f64, 8),
    }
}

/// Parse `(a,b,c)` vectors separated by spaces; `none` entries become `None`.
fn parse_vectors(path: &Path, s: &str) -> Result<Vec<Option<[f64; 3]>>, IoError> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("none") {
            out.push(None);
            rest = r.trim_start();
            continue;
        }
        let Some(start) = rest.strip_prefix('(') else {
            return Err(IoError::malformed(
                path,
                FMT,
                format!("bad vector list {s:?}"),
            ));
        };
        let Some(end) = start.find(')') else {
            return Err(IoError::malformed(
                path,
                FMT,
                format!("unclosed '(' in {s:?}"),
            ));
        };
        let nums: Result<Vec<f64>, _> = start[..end]
            .split(',')
            .map(|t| t.trim().parse::<f64>())
            .collect();
        match nums {
            Ok(v) if v.len() == 3 => out.push(Some([v[0], v[1], v[2]])),
            _ => {
                return Err(IoError::malformed(
                    path,
                    FMT,
                    format!("vector {:?} is not 3 numbers", &start[..end]),
                ));
            }
        }
        rest = start[end + 1..].trim_start();
    }
    Ok(out)
}

/// Read a 3D NRRD volume.
pub fn read_nrrd(path: &Path) -> Result<Volume, IoError> {
    let bytes = std::fs::read(path).map_err(|e| IoError::io(path, e))?;
    if !bytes.starts_with(b"NRRD000") {
        return Err(IoError::malformed(
            path,
            FMT,
            "missing NRRD000x magic on the first line",
        ));
    }
    // Header ends at the first empty line (or end of file for a detached .nhdr).
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut pos = 0usize;
    let mut first = true;
    loop {
        let Some(nl) = bytes[pos..].iter().position(|&b| b == b'\n') else {
            pos = bytes.len();
            break;
        };
        let line_bytes = &bytes[pos..pos + nl];
        pos += nl + 1;
        let line = String::from_utf8_lossy(line_bytes);
        let line = line.trim_end_matches('\r');
        if first {
            first = false;
            continue;
        }
        if line.is_empty() {
            break;
        }
        if line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once(": ") {
            fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        } else if line.contains(":=") {
            continue; // key/value pairs: metadata we do not need
        } else {
            return Err(IoError::malformed(
                path,
                FMT,
                format!("unreadable header line {line:?}"),
            ));
        }
    }
    let get = |k: &str| fields.get(k).map(|s| s.as_str());
    let dim: usize = get("dimension")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| IoError::malformed(path, FMT, "missing or bad 'dimension' field"))?;
    if dim != 3 {
        return Err(IoError::Unsupported {
            path: path.to_path_buf(),
            what: format!("a {dim}-dimensional NRRD"),
            hint: "only 3D scalar volumes are read".into(),
        });
    }
    let sizes_text =
        get("sizes").ok_or_else(|| IoError::malformed(path, FMT, "missing 'sizes' field"))?;
    let sizes: Vec<u64> = sizes_text
        .split_whitespace()
        .map(|t| t.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            IoError::malformed(
                path,
                FMT,
                format!("'sizes' must be non-negative integers, got {sizes_text:?}"),
            )
        })?;
    if sizes.len() != 3 {
        return Err(IoError::malformed(
            path,
            FMT,
            format!("'sizes' has {} entries for dimension 3", sizes.len()),
        ));
    }
    let n = check_dims(path, FMT, &sizes)?;
    let ty_s = get("type").ok_or_else(|| IoError::malformed(path, FMT, "missing 'type' field"))?;
    let ty = Ty::parse(ty_s).ok_or_else(|| IoError::Unsupported {
        path: path.to_path_buf(),
        what: format!("NRRD type {ty_s:?}"),
        hint: "use an integer, float or double type".into(),
    })?;
    let encoding =
        get("encoding").ok_or_else(|| IoError::malformed(path, FMT, "missing 'encoding' field"))?;
    let le = match get("endian") {
        None | Some("little") => true,
        Some("big") => false,
        Some(e) => {
            return Err(IoError::malformed(
                path,
                FMT,
                format!("unknown endian {e:?}"),
            ));
        }
    };
    let line_skip: usize = get("line skip")
        .or(get("lineskip"))
        .map(|s| s.parse().unwrap_or(usize::MAX))
        .unwrap_or(0);
    let byte_skip: i64 = get("byte skip")
        .or(get("byteskip"))
        .map(|s| s.parse().unwrap_or(i64::MIN))
        .unwrap_or(0);
    if line_skip == usize::MAX || byte_skip < 0 {
        return Err(IoError::Unsupported {
            path: path.to_path_buf(),
            what: "negative or unparsable 'byte skip'/'line skip'".into(),
            hint: "rewrite the file with an attached header".into(),
        });
    }

    // Locate the data bytes: attached after the header, or a detached data file.
    let (data_path, payload): (PathBuf, Vec<u8>) = match get("data file").or(get("datafile")) {
        Some(df) => {
            if df.starts_with("LIST") || df.contains('%') {
                return Err(IoError::Unsupported {
                    path: path.to_path_buf(),
                    what: "multi-file NRRD data".into(),
                    hint: "use a single data file".into(),
                });
            }
            let p = Path::new(df);
            let p = if p.is_absolute() {
                p.to_path_buf()
            } else {
                path.parent().unwrap_or(Path::new(".")).join(p)
            };
            // A device or FIFO (`/dev/zero`) would be read without bound.
            if p.exists() && !p.is_file() {
                return Err(IoError::malformed(
                    path,
                    FMT,
                    format!("'data file' {} is not a regular file", p.display()),
                ));
            }
            let b = std::fs::read(&p).map_err(|e| IoError::io(&p, e))?;
            (p, b)
        }
        None => (path.to_path_buf(), bytes[pos..].to_vec()),
    };
    let mut data: &[u8] = &payload;
    for _ in 0..line_skip {
        match data.iter().position(|&b| b == b'\n') {
            Some(i) => data = &data[i + 1..],
            None => {
                return Err(IoError::malformed(
                    &data_path,
                    FMT,
                    "fewer lines than 'line skip'",
                ));
            }
        }
    }
    let nbytes = n * ty.size();
    let values: Vec<f64> = match encoding {
        "raw" => {
            let d = data.get(byte_skip as usize..).unwrap_or(&[]);
            if d.len() < nbytes {
                return Err(IoError::malformed(
                    &data_path,
                    FMT,
                    format!(
                        "truncated: {nbytes} bytes of voxel data expected, {} present",
                        d.len()
                    ),
                ));
            }
            decode(ty, le, &d[..nbytes])
        }
        "gzip" | "gz" => {
            let mut dec = MultiGzDecoder::new(data);
            let mut raw = Vec::new();
            (&mut dec)
                .take(nbytes as u64 + byte_skip as u64)
                .read_to_end(&mut raw)
                .map_err(|e| {
                    IoError::malformed(
                        &data_path,
                        FMT,
                        format!("corrupt or truncated gzip data ({e})"),
                    )
                })?;
            let d = raw.get(byte_skip as usize..).unwrap_or(&[]);
            if d.len() < nbytes {
                return Err(IoError::malformed(
                    &data_path,
                    FMT,
                    format!(
                        "truncated: {nbytes} bytes of voxel data expected, {} decompressed",
                        d.len()
                    ),
                ));
            }
            decode(ty, le, &d[..nbytes])
        }
        "ascii" | "text" | "txt" => {
            let text = String::from_utf8_lossy(data);
            let v: Vec<f64> = text
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|t| !t.is_empty())
                .take(n)
                .map(|t| t.parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    IoError::malformed(&data_path, FMT, format!("bad ascii value ({e})"))
                })?;
            if v.len() < n {
                return Err(IoError::malformed(
                    &data_path,
                    FMT,
                    format!("{n} ascii values expected, {} found", v.len()),
                ));
            }
            v
        }
        other => {
            return Err(IoError::Unsupported {
                path: path.to_path_buf(),
                what: format!("NRRD encoding {other:?}"),
                hint: "re-save with raw or gzip encoding".into(),
            });
        }
    };

    // Geometry.
    let flip = match get("space").map(|s| s.to_ascii_lowercase()) {
        None => [1.0, 1.0, 1.0],
        Some(s) => match s.as_str() {
            "left-posterior-superior" | "lps" | "scanner-xyz" | "3d-right-handed" => {
                [1.0, 1.0, 1.0]
            }
            "right-anterior-superior" | "ras" => [-1.0, -1.0, 1.0],
            "left-anterior-superior" | "las" => [1.0, -1.0, 1.0],
            other => {
                return Err(IoError::Unsupported {
                    path: path.to_path_buf(),
                    what: format!("NRRD space {other:?}"),
                    hint: "use LPS, RAS or LAS".into(),
                });
            }
        },
    };
    let (cols, origin) = if let Some(sd) = get("space directions") {
        let v = parse_vectors(path, sd)?;
        let v: Vec<[f64; 3]> = v.into_iter().flatten().collect();
        if v.len() != 3 {
            return Err(IoError::malformed(
                path,
                FMT,
                "'space directions' must give 3 vectors",
            ));
        }
        let o = match get("space origin") {
            Some(so) => parse_vectors(path, so)?
                .into_iter()
                .flatten()
                .next()
                .unwrap_or([0.0; 3]),
            None => [0.0; 3],
        };
        ([v[0], v[1], v[2]], o)
    } else {
        let sp: Vec<f64> = match get("spacings") {
            Some(s) => s
                .split_whitespace()
                .map(|t| t.parse::<f64>().unwrap_or(f64::NAN))
                .collect(),
            None => vec![1.0; 3],
        };
        if sp.len() != 3 || sp.iter().any(|v| !v.is_finite() || *v <= 0.0) {
            return Err(IoError::malformed(
                path,
                FMT,
                "'spacings' must be 3 positive numbers",
            ));
        }
        (
            [[sp[0], 0.0, 0.0], [0.0, sp[1], 0.0], [0.0, 0.0, sp[2]]],
            [0.0; 3],
        )
    };
    let mut cols = cols;
    let mut origin = origin;
    for c in cols.iter_mut() {
        for k in 0..3 {
            c[k] *= flip[k];
        }
    }
    for k in 0..3 {
        origin[k] *= flip[k];
    }
    let geometry = geometry_from_columns(path, FMT, cols, origin)?;
    let dims_xyz = [sizes[0] as usize, sizes[1] as usize, sizes[2] as usize];
    let data = array_from_x_fastest(path, FMT, dims_xyz, values)?;
    Ok(Volume { data, geometry })
}
