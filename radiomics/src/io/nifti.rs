//! NIfTI-1 / NIfTI-2 reader (`.nii`, `.nii.gz`, `.hdr`+`.img`) written against the NIfTI standard.
//!
//! Conventions: orientation from `sform` when `sform_code > 0`, else `qform` when `qform_code > 0`,
//! else the ANALYZE fallback (pixdim scaling, zero origin) — the same precedence as nibabel.
//! NIfTI world space is RAS; it is converted to the crate's LPS (DICOM) world by negating x and y.
//! Intensities: any integer or float datatype is read as `f64`, then `scl_slope`/`scl_inter` are
//! applied when `scl_slope` is nonzero and finite (the standard says 0 means "no scaling").
//! Only 3D volumes (or 4D+ with all extra dimensions equal to 1) are accepted.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use ndarray::Array3;

use super::{IoError, check_dims, geometry_from_columns};
use crate::volume::{Geometry, Volume};

const FMT: &str = "NIfTI";

/// Parsed subset of a NIfTI header (both versions mapped to one shape).
#[derive(Debug, Clone)]
struct Header {
    little_endian: bool,
    dims: Vec<u64>,
    datatype: i16,
    pixdim: [f64; 8],
    vox_offset: u64,
    scl_slope: f64,
    scl_inter: f64,
    qform_code: i32,
    sform_code: i32,
    quatern: [f64; 3],
    qoffset: [f64; 3],
    srow: [[f64; 4]; 3],
    /// `true` for single-file `.nii` (magic `n+1`/`n+2`), `false` for `.hdr`/`.img` pairs.
    single_file: bool,
    /// 348 (NIfTI-1) or 540 (NIfTI-2).
    header_size: u64,
}

struct Bytes<'a> {
    b: &'a [u8],
    le: bool,
}

impl Bytes<'_> {
    fn arr<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.b[off..off + N]);
        a
    }
    fn i16(&self, off: usize) -> i16 {
        let a = self.arr::<2>(off);
        if self.le {
            i16::from_le_bytes(a)
        } else {
            i16::from_be_bytes(a)
        }
    }
    fn i32(&self, off: usize) -> i32 {
        let a = self.arr::<4>(off);
        if self.le {
            i32::from_le_bytes(a)
        } else {
            i32::from_be_bytes(a)
        }
    }
    fn i64(&self, off: usize) -> i64 {
        let a = self.arr::<8>(off);
        if self.le {
            i64::from_le_bytes(a)
        } else {
            i64::from_be_bytes(a)
        }
    }
    fn f32(&self, off: usize) -> f64 {
        let a = self.arr::<4>(off);
        (if self.le {
            f32::from_le_bytes(a)
        } else {
            f32::from_be_bytes(a)
        }) as f64
    }
    fn f64(&self, off: usize) -> f64 {
        let a = self.arr::<8>(off);
        if self.le {
            f64::from_le_bytes(a)
        } else {
            f64::from_be_bytes(a)
        }
    }
}

fn is_gz(path: &Path) -> bool {
    path.to_string_lossy().to_ascii_lowercase().ends_with(".gz")
}

fn open_reader(path: &Path) -> Result<Box<dyn Read>, IoError> {
    let f = File::open(path).map_err(|e| IoError::io(path, e))?;
    let r = BufReader::new(f);
    Ok(if is_gz(path) {
        Box::new(MultiGzDecoder::new(r))
    } else {
        Box::new(r)
    })
}

/// Read up to `n` bytes; fewer only at end of stream. Decompression errors become `Malformed`.
fn read_upto(path: &Path, r: &mut dyn Read, n: u64) -> Result<Vec<u8>, IoError> {
    let mut buf = Vec::new();
    r.take(n)
        .read_to_end(&mut buf)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput
            | std::io::ErrorKind::InvalidData
            | std::io::ErrorKind::UnexpectedEof => IoError::malformed(
                path,
                FMT,
                format!("corrupt or truncated compressed data ({e})"),
            ),
            _ => IoError::io(path, e),
        })?;
    Ok(buf)
}

fn parse_header(path: &Path, b: &[u8]) -> Result<Header, IoError> {
    if b.len() < 348 {
        return Err(IoError::malformed(
            path,
            FMT,
            format!(
                "file ends after {} bytes, inside the 348-byte header (truncated?)",
                b.len()
            ),
        ));
    }
    let le_size = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let be_size = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let (le, version) = match (le_size, be_size) {
        (348, _) => (true, 1),
        (_, 348) => (false, 1),
        (540, _) => (true, 2),
        (_, 540) => (false, 2),
        _ => {
            return Err(IoError::malformed(
                path,
                FMT,
                format!(
                    "sizeof_hdr is {le_size}, expected 348 (NIfTI-1) or 540 (NIfTI-2); not a NIfTI file"
                ),
            ));
        }
    };
    let r = Bytes { b, le };
    if version == 1 {
        let magic = &b[344..348];
        let single_file = match magic {
            b"n+1\0" => true,
            b"ni1\0" => false,
            _ => {
                return Err(IoError::malformed(
                    path,
                    FMT,
                    format!("bad magic {magic:?} at byte 344 (expected \"n+1\" or \"ni1\")"),
                ));
            }
        };
        let ndim = r.i16(40);
        if !(1..=7).contains(&ndim) {
            return Err(IoError::malformed(
                path,
                FMT,
                format!("dim[0] = {ndim}, must be 1..7"),
            ));
        }
        let mut dims = Vec::new();
        for i in 1..=ndim as usize {
            let d = r.i16(40 + 2 * i);
            if d < 1 {
                return Err(IoError::malformed(
                    path,
                    FMT,
                    format!("dim[{i}] = {d} must be positive"),
                ));
            }
            dims.push(d as u64);
        }
        let mut pixdim = [0.0; 8];
        for (i, p) in pixdim.iter_mut().enumerate() {
            *p = r.f32(76 + 4 * i);
        }
        let vo = r.f32(108);
        let mut srow = [[0.0; 4]; 3];
        for (row, s) in srow.iter_mut().enumerate() {
            for (c, v) in s.iter_mut().enumerate() {
                *v = r.f32(280 + 16 * row + 4 * c);
            }
        }
        Ok(Header {
            little_endian: le,
            dims,
            datatype: r.i16(70),
            pixdim,
            vox_offset: if vo.is_finite() && vo >= 0.0 {
                vo as u64
            } else {
                u64::MAX
            },
            scl_slope: r.f32(112),
            scl_inter: r.f32(116),
            qform_code: r.i16(252) as i32,
            sform_code: r.i16(254) as i32,
            quatern: [r.f32(256), r.f32(260), r.f32(264)],
            qoffset: [r.f32(268), r.f32(272), r.f32(276)],
            srow,
            single_file,
            header_size: 348,
        })
    } else {
        if b.len() < 540 {
            return Err(IoError::malformed(
                path,
                FMT,
                "NIfTI-2 header truncated (needs 540 bytes)",
            ));
        }
        let magic = &b[4..8];
        let single_file = match magic {
            b"n+2\0" => true,
            b"ni2\0" => false,
            _ => {
                return Err(IoError::malformed(
                    path,
                    FMT,
                    format!("bad NIfTI-2 magic {magic:?}"),
                ));
            }
        };
        let ndim = r.i64(16);
        if !(1..=7).contains(&ndim) {
            return Err(IoError::malformed(
                path,
                FMT,
                format!("dim[0] = {ndim}, must be 1..7"),
            ));
        }
        let mut dims = Vec::new();
        for i in 1..=ndim as usize {
            let d = r.i64(16 + 8 * i);
            if d < 1 {
                return Err(IoError::malformed(
                    path,
                    FMT,
                    format!("dim[{i}] = {d} must be positive"),
                ));
            }
            dims.push(d as u64);
        }
        let mut pixdim = [0.0; 8];
        for (i, p) in pixdim.iter_mut().enumerate() {
            *p = r.f64(104 + 8 * i);
        }
        let vo = r.i64(168);
        let mut srow = [[0.0; 4]; 3];
        for (row, s) in srow.iter_mut().enumerate() {
            for (c, v) in s.iter_mut().enumerate() {
                *v = r.f64(400 + 32 * row + 8 * c);
            }
        }
        Ok(Header {
            little_endian: le,
            dims,
            datatype: r.i16(12),
            pixdim,
            vox_offset: if vo >= 0 { vo as u64 } else { u64::MAX },
            scl_slope: r.f64(176),
            scl_inter: r.f64(184),
            qform_code: r.i32(344),
            sform_code: r.i32(348),
            quatern: [r.f64(352), r.f64(360), r.f64(368)],
            qoffset: [r.f64(376), r.f64(384), r.f64(392)],
            srow,
            single_file,
            header_size: 540,
        })
    }
}

/// Bytes per voxel for the supported datatypes (NIfTI `DT_*` codes).
fn datatype_size(dt: i16) -> Option<usize> {
    match dt {
        2 | 256 => Some(1),          // uint8, int8
        4 | 512 => Some(2),          // int16, uint16
        8 | 768 | 16 => Some(4),     // int32, uint32, float32
        64 | 1024 | 1280 => Some(8), // float64, int64, uint64
        _ => None,
    }
}

fn datatype_name(dt: i16) -> String {
    match dt {
        32 => "complex64".into(),
        128 => "RGB24".into(),
        1536 => "float128".into(),
        1792 => "complex128".into(),
        2048 => "complex256".into(),
        2304 => "RGBA32".into(),
        other => format!("datatype code {other}"),
    }
}

/// Decode little/big-endian voxels of NIfTI datatype `dt` and hand each to `out`.
fn decode_into(dt: i16, le: bool, raw: &[u8], out: &mut impl FnMut(f64)) {
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            for c in raw.chunks_exact($n) {
                let mut a = [0u8; $n];
                a.copy_from_slice(c);
                out((if le {
                    <$t>::from_le_bytes(a)
                } else {
                    <$t>::from_be_bytes(a)
                }) as f64)
            }
        };
    }
    match dt {
        2 => raw.iter().for_each(|&v| out(v as f64)),
        256 => raw.iter().for_each(|&v| out(v as i8 as f64)),
        4 => conv!(i16, 2),
        512 => conv!(u16, 2),
        8 => conv!(i32, 4),
        768 => conv!(u32, 4),
        16 => conv!(f32, 4),
        64 => conv!(f64, 8),
        1024 => conv!(i64, 8),
        1280 => conv!(u64, 8),
        _ => {}
    }
}

/// Quaternion (qform) rotation matrix per the NIfTI-1 standard (`nifti1.h`, method 2).
fn quaternion_matrix(b: f64, c: f64, d: f64) -> [[f64; 3]; 3] {
    let a2 = 1.0 - (b * b + c * c + d * d);
    // Rounding in float32 storage can make a2 slightly negative: the standard then sets a = 0 and
    // renormalises (b, c, d).
    let (a, b, c, d) = if a2 < 1e-7 {
        let n = (b * b + c * c + d * d).sqrt().max(f64::MIN_POSITIVE);
        (0.0, b / n, c / n, d / n)
    } else {
        (a2.sqrt(), b, c, d)
    };
    [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        ],
    ]
}

/// Read a NIfTI-1 or NIfTI-2 volume (`.nii`, `.nii.gz`, or `.hdr` with its `.img`/`.img.gz`).
pub fn read_nifti(path: &Path) -> Result<Volume, IoError> {
    let (data, geometry) = read_nifti_mapped(path, |v| v)?;
    Ok(Volume { data, geometry })
}

/// Read a NIfTI label map straight into a binary mask with `keep(value)` (after `scl_slope` /
/// `scl_inter`), without an intermediate `f64` volume: a 512×512×300 label map costs its 79 MB of
/// booleans instead of 629 MB of floats.
pub fn read_nifti_mask(
    path: &Path,
    keep: impl FnMut(f64) -> bool,
) -> Result<(Array3<bool>, Geometry), IoError> {
    read_nifti_mapped(path, keep)
}

/// Bytes decoded per step when streaming voxel data (bounded memory besides the output).
const CHUNK_BYTES: usize = 1 << 22;

/// Stream the voxel data through `map` (applied after scaling) into a `[z, y, x]` array.
fn read_nifti_mapped<T>(
    path: &Path,
    mut map: impl FnMut(f64) -> T,
) -> Result<(Array3<T>, Geometry), IoError> {
    let mut reader = open_reader(path)?;
    let head = read_upto(path, &mut *reader, 540)?;
    let h = parse_header(path, &head)?;

    let mut dims3 = [1u64; 3];
    for (i, d) in h.dims.iter().enumerate().take(3) {
        dims3[i] = *d;
    }
    if h.dims.len() > 3 && h.dims[3..].iter().any(|&d| d != 1) {
        return Err(IoError::Unsupported {
            path: path.to_path_buf(),
            what: format!("a {}-dimensional image {:?}", h.dims.len(), h.dims),
            hint: "extract one 3D volume (e.g. one time point) first".into(),
        });
    }
    let n = check_dims(path, FMT, &dims3)?;
    let Some(bpv) = datatype_size(h.datatype) else {
        return Err(IoError::Unsupported {
            path: path.to_path_buf(),
            what: format!("voxel type {}", datatype_name(h.datatype)),
            hint: "convert to an integer or float scalar type".into(),
        });
    };
    let nbytes = (n as u64) * bpv as u64;

    // Position a reader at the first voxel; `prefix` holds voxel bytes already read with the header.
    let mut prefix = Vec::new();
    let mut data_path = path.to_path_buf();
    let mut data_reader: Box<dyn Read> = if h.single_file {
        let header_len = head.len() as u64;
        if h.vox_offset == u64::MAX || h.vox_offset < h.header_size {
            return Err(IoError::malformed(
                path,
                FMT,
                format!(
                    "vox_offset {} points inside the {}-byte header",
                    h.vox_offset, h.header_size
                ),
            ));
        }
        if h.vox_offset < header_len {
            // Data starts inside what we already read (vox_offset 348..540 for NIfTI-1).
            prefix = head[h.vox_offset as usize..].to_vec();
            prefix.truncate(nbytes as usize);
        } else {
            let skip = h.vox_offset - header_len;
            let skipped = std::io::copy(&mut (&mut *reader).take(skip), &mut std::io::sink())
                .map_err(|e| {
                    IoError::malformed(path, FMT, format!("corrupt data before vox_offset ({e})"))
                })?;
            if skipped < skip {
                return Err(IoError::malformed(
                    path,
                    FMT,
                    "file ends before vox_offset (truncated)",
                ));
            }
        }
        reader
    } else {
        let img = companion_img(path)?;
        let mut r = open_reader(&img)?;
        let skip = if h.vox_offset == u64::MAX {
            0
        } else {
            h.vox_offset
        };
        let skipped = std::io::copy(&mut (&mut *r).take(skip), &mut std::io::sink())
            .map_err(|e| IoError::io(&img, e))?;
        if skipped < skip {
            return Err(IoError::malformed(
                &img,
                FMT,
                "file ends before vox_offset (truncated)",
            ));
        }
        data_path = img;
        r
    };

    let scale = h.scl_slope != 0.0
        && h.scl_slope.is_finite()
        && h.scl_inter.is_finite()
        && !(h.scl_slope == 1.0 && h.scl_inter == 0.0);
    let (slope, inter) = (h.scl_slope, h.scl_inter);
    // Reserve only what the data file can actually deliver: a 352-byte file whose header claims
    // 10^9 voxels must fail as truncated, not reserve gigabytes first. gzip expands at most
    // 1032:1 (deflate's limit), so a compressed file bounds its voxel count too.
    let deliverable = std::fs::metadata(&data_path)
        .map(|m| {
            m.len()
                .saturating_mul(if is_gz(&data_path) { 1032 } else { 1 })
        })
        .unwrap_or(0);
    let mut values: Vec<T> = Vec::with_capacity(n.min((deliverable / bpv as u64) as usize));
    let mut push = |v: f64| values.push(map(if scale { v * slope + inter } else { v }));
    let mut pending = prefix;
    let mut got = pending.len() as u64;
    loop {
        let whole = pending.len() - pending.len() % bpv;
        decode_into(h.datatype, h.little_endian, &pending[..whole], &mut push);
        pending.drain(..whole);
        if got >= nbytes {
            break;
        }
        let want = (nbytes - got).min(CHUNK_BYTES as u64);
        let chunk = read_upto(&data_path, &mut *data_reader, want)?;
        if chunk.is_empty() {
            break;
        }
        got += chunk.len() as u64;
        pending.extend_from_slice(&chunk);
    }
    if got < nbytes || values.len() < n {
        return Err(IoError::malformed(
            path,
            FMT,
            format!(
                "truncated: header promises {nbytes} bytes of voxel data ({dims3:?} x {bpv} bytes), file has {got}"
            ),
        ));
    }

    // Index-to-world (RAS) matrix columns for file axes i, j, k.
    let (mut cols, mut origin) = if h.sform_code > 0 {
        let s = &h.srow;
        (
            [
                [s[0][0], s[1][0], s[2][0]],
                [s[0][1], s[1][1], s[2][1]],
                [s[0][2], s[1][2], s[2][2]],
            ],
            [s[0][3], s[1][3], s[2][3]],
        )
    } else if h.qform_code > 0 {
        let r = quaternion_matrix(h.quatern[0], h.quatern[1], h.quatern[2]);
        let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let p = [
            h.pixdim[1].abs(),
            h.pixdim[2].abs(),
            h.pixdim[3].abs() * qfac,
        ];
        let mut c = [[0.0; 3]; 3];
        for (axis, col) in c.iter_mut().enumerate() {
            for (row, v) in col.iter_mut().enumerate() {
                *v = r[row][axis] * p[axis];
            }
        }
        (c, h.qoffset)
    } else {
        let p = |i: usize| {
            if h.pixdim[i] > 0.0 && h.pixdim[i].is_finite() {
                h.pixdim[i]
            } else {
                1.0
            }
        };
        (
            [[p(1), 0.0, 0.0], [0.0, p(2), 0.0], [0.0, 0.0, p(3)]],
            [0.0; 3],
        )
    };
    // RAS -> LPS.
    for c in cols.iter_mut() {
        c[0] = -c[0];
        c[1] = -c[1];
    }
    origin[0] = -origin[0];
    origin[1] = -origin[1];
    let geometry = geometry_from_columns(path, FMT, cols, origin)?;
    let shape = (dims3[2] as usize, dims3[1] as usize, dims3[0] as usize);
    let data = Array3::from_shape_vec(shape, values).map_err(|_| {
        IoError::malformed(path, FMT, format!("{n} voxel values do not fill {dims3:?}"))
    })?;
    Ok((data, geometry))
}

/// Write `volume` as an uncompressed (`.nii`) or gzip-compressed (`.nii.gz`) NIfTI-1 file, voxels
/// as float32 (`as_int16 = false`) or int16 (`true`, values rounded and saturated), world
/// orientation in the sform (and a matching zero-rotation qform code 0), LPS converted back to RAS.
/// Meant for tests, benchmarks and exporting label maps; the reader is the inverse.
pub fn write_nifti(path: &Path, volume: &Volume, as_int16: bool) -> Result<(), IoError> {
    let (nz, ny, nx) = volume.data.dim();
    for (axis, &d) in [nx, ny, nz].iter().enumerate() {
        if d > i16::MAX as usize {
            return Err(IoError::Unsupported {
                path: path.to_path_buf(),
                what: format!("axis {axis} of length {d} in NIfTI-1"),
                hint: "NIfTI-1 dimensions are limited to 32767".into(),
            });
        }
    }
    let g = &volume.geometry;
    let mut h = vec![0u8; 352];
    let put_i16 =
        |h: &mut Vec<u8>, off: usize, v: i16| h[off..off + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut Vec<u8>, off: usize, v: f64| {
        h[off..off + 4].copy_from_slice(&(v as f32).to_le_bytes())
    };
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    for (i, d) in [3, nx, ny, nz, 1, 1, 1, 1].iter().enumerate() {
        put_i16(&mut h, 40 + 2 * i, *d as i16);
    }
    let (dt, bitpix) = if as_int16 { (4i16, 16i16) } else { (16, 32) };
    put_i16(&mut h, 70, dt);
    put_i16(&mut h, 72, bitpix);
    put_f32(&mut h, 76, 1.0); // qfac
    for (i, a) in [2usize, 1, 0].iter().enumerate() {
        put_f32(&mut h, 80 + 4 * i, g.spacing[*a]);
    }
    put_f32(&mut h, 108, 352.0); // vox_offset
    put_f32(&mut h, 112, 1.0); // scl_slope
    h[123] = 10; // xyzt_units: mm + s
    put_i16(&mut h, 254, 1); // sform_code: scanner
    // srow: RAS = diag(-1, -1, 1) · LPS; columns = file axes i (x), j (y), k (z).
    let o = g.origin_xyz();
    for row in 0..3 {
        let flip = if row < 2 { -1.0 } else { 1.0 };
        for (c, a) in [2usize, 1, 0].iter().enumerate() {
            put_f32(
                &mut h,
                280 + 16 * row + 4 * c,
                flip * g.direction[*a][row] * g.spacing[*a],
            );
        }
        put_f32(&mut h, 280 + 16 * row + 12, flip * o[row]);
    }
    h[344..348].copy_from_slice(b"n+1\0");
    let mut bytes = h;
    bytes.reserve(volume.data.len() * if as_int16 { 2 } else { 4 });
    for &v in volume.data.iter() {
        if as_int16 {
            bytes.extend_from_slice(&(v.round().clamp(-32768.0, 32767.0) as i16).to_le_bytes());
        } else {
            bytes.extend_from_slice(&(v as f32).to_le_bytes());
        }
    }
    let write = |w: &mut dyn std::io::Write| w.write_all(&bytes);
    let f = File::create(path).map_err(|e| IoError::io(path, e))?;
    let mut f = std::io::BufWriter::new(f);
    if is_gz(path) {
        let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        write(&mut e)
            .and_then(|_| e.finish().map(|_| ()))
            .map_err(|e| IoError::io(path, e))
    } else {
        write(&mut f)
            .and_then(|_| std::io::Write::flush(&mut f))
            .map_err(|e| IoError::io(path, e))
    }
}

/// `.hdr` → `.img` (or `.img.gz`) for two-file NIfTI.
fn companion_img(path: &Path) -> Result<PathBuf, IoError> {
    let s = path.to_string_lossy();
    let lower = s.to_ascii_lowercase();
    let stem = if let Some(x) = lower.strip_suffix(".hdr.gz") {
        &s[..x.len()]
    } else if let Some(x) = lower.strip_suffix(".hdr") {
        &s[..x.len()]
    } else {
        return Err(IoError::malformed(
            path,
            FMT,
            "magic says two-file NIfTI (ni1) but the file is not a .hdr; rename or convert to .nii",
        ));
    };
    for ext in [".img", ".img.gz"] {
        let p = PathBuf::from(format!("{stem}{ext}"));
        if p.exists() {
            return Ok(p);
        }
    }
    Err(IoError::malformed(
        path,
        FMT,
        format!("companion data file {stem}.img not found"),
    ))
}
