#!/usr/bin/env python3
"""Writes fedrad's bad-input corpus (tests/corpus/{nifti,nrrd,dicom,csv,toml}/) and the small
valid seeds the fuzzers start from (fuzz/seeds/<target>/).

Every corpus file is malformed in exactly one named way; tests/tests/corpus.rs feeds each to the
real parser and checks the error names the problem. Files are tiny on purpose: a header that
*claims* 2^31 voxels is a few hundred bytes. Standard library only (struct, gzip), so the script
runs anywhere. Run from the repository root: `python3 tests/corpus/generate.py`. Files from fuzz
crashes (tests/corpus/*/fuzz-*) are committed as found and never rewritten here.
"""

import gzip
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "corpus")
SEEDS = os.path.join(ROOT, "fuzz", "seeds")


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(path, "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- NIfTI-1 (nifti1.h layout)

def nifti1(dims=(3, 4, 4, 4, 1, 1, 1, 1), datatype=4, bitpix=16, pixdim=(1.0, 1.0, 1.0, 1.0),
           vox_offset=352.0, magic=b"n+1\0", sizeof_hdr=348, qform=0, sform=1, data=None):
    """A little-endian NIfTI-1 single file. `dims` is the raw dim[0..8] array; `data` defaults to
    exactly the bytes the header promises (small dims only)."""
    h = bytearray(352)
    struct.pack_into("<i", h, 0, sizeof_hdr)
    struct.pack_into("<8h", h, 40, *dims)
    struct.pack_into("<h", h, 70, datatype)
    struct.pack_into("<h", h, 72, bitpix)
    struct.pack_into("<f", h, 76, 1.0)  # qfac
    for i, p in enumerate(pixdim[1:4] if len(pixdim) == 4 else pixdim):
        struct.pack_into("<f", h, 80 + 4 * i, p)
    struct.pack_into("<f", h, 108, vox_offset)
    struct.pack_into("<f", h, 112, 1.0)  # scl_slope
    struct.pack_into("<h", h, 252, qform)
    struct.pack_into("<h", h, 254, sform)
    # srow: diag(-1, -1, 1) spacing 1 (LPS identity)
    for row, vals in enumerate(([-1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, 1.0, 0])):
        struct.pack_into("<4f", h, 280 + 16 * row, *vals)
    h[344:348] = magic
    if data is None:
        n = 1
        for d in dims[1:1 + dims[0]]:
            n *= d
        data = bytes(n * max(bitpix // 8, 1))
    return bytes(h) + data


def nifti_corpus():
    d = os.path.join(CORPUS, "nifti")
    write(os.path.join(d, "truncated_header.nii"), nifti1()[:100])
    write(os.path.join(d, "wrong_magic.nii"), nifti1(magic=b"xyz\0"))
    write(os.path.join(d, "bad_sizeof_hdr.nii"), nifti1(sizeof_hdr=999))
    # 2048 x 1024 x 1024 = 2^31 voxels: refused against MAX_VOXELS before any allocation.
    write(os.path.join(d, "absurd_dims_2pow31.nii"),
          nifti1(dims=(3, 2048, 1024, 1024, 1, 1, 1, 1), data=b""))
    # 1024 x 1024 x 1000 float64 (just under MAX_VOXELS, 8 GB of data) in a 352-byte file: must be
    # refused as truncated without reserving 8 GB first.
    write(os.path.join(d, "huge_claim_tiny_file.nii"),
          nifti1(dims=(3, 1024, 1024, 1000, 1, 1, 1, 1), datatype=64, bitpix=64, data=b""))
    write(os.path.join(d, "huge_claim_tiny_file.nii.gz"),
          gzip.compress(nifti1(dims=(3, 1024, 1024, 1000, 1, 1, 1, 1), datatype=64, bitpix=64,
                               data=b""), mtime=0))
    write(os.path.join(d, "negative_dim.nii"), nifti1(dims=(3, 4, -5, 4, 1, 1, 1, 1), data=b""))
    write(os.path.join(d, "zero_ndim.nii"), nifti1(dims=(0, 4, 4, 4, 1, 1, 1, 1)))
    write(os.path.join(d, "unknown_datatype.nii"), nifti1(datatype=9999))
    write(os.path.join(d, "rgb_datatype.nii"), nifti1(datatype=128, bitpix=24))
    write(os.path.join(d, "data_shorter_than_header.nii"), nifti1()[:352 + 10])
    write(os.path.join(d, "nan_voxel_size.nii"),
          nifti1(pixdim=(float("nan"), 1.0, 1.0), qform=1, sform=0))
    write(os.path.join(d, "vox_offset_inside_header.nii"), nifti1(vox_offset=100.0))
    write(os.path.join(d, "vox_offset_past_end.nii"), nifti1(vox_offset=1.0e9))
    write(os.path.join(d, "four_d.nii"), nifti1(dims=(4, 2, 2, 2, 3, 1, 1, 1)))
    write(os.path.join(d, "not_gzip.nii.gz"), b"this is not gzip data at all")
    write(os.path.join(d, "truncated_gzip.nii.gz"), gzip.compress(nifti1(), mtime=0)[:30])
    write(os.path.join(SEEDS, "nifti", "valid_4x4x4_int16.nii"), b"\x00" + nifti1())
    write(os.path.join(SEEDS, "nifti", "valid_2x2x2_float64.nii"),
          b"\x00" + nifti1(dims=(3, 2, 2, 2, 1, 1, 1, 1), datatype=64, bitpix=64))


# ---------------------------------------------------------------- NRRD

def nrrd(fields, data=b""):
    head = "NRRD0004\n" + "".join(f"{k}: {v}\n" for k, v in fields) + "\n"
    return head.encode() + data


BASE = [("type", "short"), ("dimension", "3"), ("sizes", "2 2 2"), ("encoding", "raw"),
        ("endian", "little"), ("space", "left-posterior-superior"),
        ("space directions", "(1,0,0) (0,1,0) (0,0,1)"), ("space origin", "(0,0,0)")]


def with_field(key, value):
    out = [(k, v) for k, v in BASE if k != key]
    if value is not None:
        out.append((key, value))
    return out


def nrrd_corpus():
    d = os.path.join(CORPUS, "nrrd")
    good = bytes(16)
    write(os.path.join(d, "wrong_magic.nrrd"), b"NRRX0004\n" + nrrd(BASE, good)[9:])
    write(os.path.join(d, "truncated_header.nrrd"), b"NRRD0004\ntype: short\ndimen")
    write(os.path.join(d, "absurd_dims_2pow31.nrrd"), nrrd(with_field("sizes", "2048 1024 1024")))
    write(os.path.join(d, "huge_claim_tiny_file.nrrd"),
          nrrd(with_field("sizes", "1024 1024 1000")))
    write(os.path.join(d, "negative_dims.nrrd"), nrrd(with_field("sizes", "2 -2 2"), good))
    write(os.path.join(d, "zero_dim.nrrd"), nrrd(with_field("sizes", "2 0 2"), good))
    write(os.path.join(d, "unknown_type.nrrd"), nrrd(with_field("type", "quaternion"), good))
    write(os.path.join(d, "data_shorter_than_header.nrrd"), nrrd(BASE, bytes(5)))
    write(os.path.join(d, "nan_voxel_size.nrrd"),
          nrrd(with_field("space directions", "(NaN,0,0) (0,1,0) (0,0,1)"), good))
    write(os.path.join(d, "nan_spacings.nrrd"),
          nrrd([(k, v) for k, v in BASE if not k.startswith("space")] + [("spacings", "1 nan 1")],
               good))
    write(os.path.join(d, "missing_sizes.nrrd"), nrrd(with_field("sizes", None), good))
    write(os.path.join(d, "four_d.nrrd"),
          nrrd(with_field("dimension", "4") + [("sizes", "2 2 2 2")], good))
    write(os.path.join(d, "unknown_encoding.nrrd"), nrrd(with_field("encoding", "bzip2"), good))
    write(os.path.join(d, "corrupt_gzip.nrrd"),
          nrrd(with_field("encoding", "gzip"), b"not gzip at all"))
    write(os.path.join(d, "bad_ascii_value.nrrd"),
          nrrd(with_field("encoding", "ascii"), b"1 2 3 four 5 6 7 8\n"))
    write(os.path.join(d, "unreadable_header_line.nrrd"),
          b"NRRD0004\ntype short\n\n" + good)
    write(os.path.join(d, "missing_data_file.nhdr"),
          nrrd(BASE + [("data file", "does-not-exist.raw")]))
    write(os.path.join(d, "data_file_is_a_device.nhdr"), nrrd(BASE + [("data file", "/dev/zero")]))
    write(os.path.join(SEEDS, "nrrd", "valid_raw.nrrd"), nrrd(BASE, bytes(range(16))))
    write(os.path.join(SEEDS, "nrrd", "valid_ascii.nrrd"),
          nrrd(with_field("encoding", "ascii"), b"1 2 3 4 5 6 7 8\n"))
    write(os.path.join(SEEDS, "nrrd", "valid_gzip.nrrd"),
          nrrd(with_field("encoding", "gzip"), gzip.compress(bytes(16), mtime=0)))


# ---------------------------------------------------------------- DICOM (explicit VR little endian)

def element(group, elem, vr, value):
    if isinstance(value, str):
        value = value.encode()
        pad = b"\0" if vr == "UI" else b" "
        if len(value) % 2:
            value += pad
    tag = struct.pack("<HH", group, elem)
    if vr in ("OB", "OW", "SQ", "UN", "UT"):
        return tag + vr.encode() + b"\0\0" + struct.pack("<I", len(value)) + value
    return tag + vr.encode() + struct.pack("<H", len(value)) + value


def us(v):
    return struct.pack("<H", v)


def dicom(rows=4, cols=4, pixel_spacing="1\\1", iop="1\\0\\0\\0\\1\\0", ipp="0\\0\\0",
          bits=16, pixels=None, drop=()):
    """One CT slice. `drop` lists element names to leave out."""
    sop_class = "1.2.840.10008.5.1.4.1.1.2"
    meta_body = (element(0x0002, 0x0001, "OB", b"\0\1")
                 + element(0x0002, 0x0002, "UI", sop_class)
                 + element(0x0002, 0x0003, "UI", "1.2.3.4.5.6")
                 + element(0x0002, 0x0010, "UI", "1.2.840.10008.1.2.1"))
    meta = element(0x0002, 0x0000, "UL", struct.pack("<I", len(meta_body))) + meta_body
    if pixels is None:
        pixels = bytes(rows * cols * bits // 8)
    fields = [
        ("sop_class", element(0x0008, 0x0016, "UI", sop_class)),
        ("modality", element(0x0008, 0x0060, "CS", "CT")),
        ("series", element(0x0020, 0x000E, "UI", "1.2.3.4")),
        ("ipp", element(0x0020, 0x0032, "DS", ipp)),
        ("iop", element(0x0020, 0x0037, "DS", iop)),
        ("samples", element(0x0028, 0x0002, "US", us(1))),
        ("photometric", element(0x0028, 0x0004, "CS", "MONOCHROME2")),
        ("rows", element(0x0028, 0x0010, "US", us(rows))),
        ("cols", element(0x0028, 0x0011, "US", us(cols))),
        ("spacing", element(0x0028, 0x0030, "DS", pixel_spacing)),
        ("bits", element(0x0028, 0x0100, "US", us(bits))),
        ("stored", element(0x0028, 0x0101, "US", us(bits))),
        ("high", element(0x0028, 0x0102, "US", us(max(bits - 1, 0)))),
        ("repr", element(0x0028, 0x0103, "US", us(1))),
        ("intercept", element(0x0028, 0x1052, "DS", "-1024")),
        ("slope", element(0x0028, 0x1053, "DS", "1")),
        ("pixels", element(0x7FE0, 0x0010, "OW", pixels)),
    ]
    body = b"".join(v for k, v in fields if k not in drop)
    return bytes(128) + b"DICM" + meta + body


def dicom_corpus():
    d = os.path.join(CORPUS, "dicom")
    write(os.path.join(d, "not_dicom.dcm"), "patient_id,age\nP1,50\n")
    write(os.path.join(d, "wrong_magic.dcm"), bytes(128) + b"DICX" + dicom()[132:])
    write(os.path.join(d, "truncated_header.dcm"), dicom()[:200])
    write(os.path.join(d, "data_shorter_than_header.dcm"), dicom(pixels=bytes(8)))
    # 65535 x 65535 = 4.3e9 pixels on one slice: above MAX_VOXELS.
    write(os.path.join(d, "absurd_dims.dcm"), dicom(rows=65535, cols=65535, pixels=bytes(8)))
    # 32768 x 32768 = 2^30 pixels (just at MAX_VOXELS) with 8 bytes of pixel data.
    write(os.path.join(d, "huge_claim_tiny_file.dcm"),
          dicom(rows=32768, cols=32768, pixels=bytes(8)))
    write(os.path.join(d, "zero_rows.dcm"), dicom(rows=0, pixels=b""))
    write(os.path.join(d, "nan_voxel_size.dcm"), dicom(pixel_spacing="NaN\\NaN"))
    write(os.path.join(d, "missing_orientation.dcm"), dicom(drop=("iop",)))
    write(os.path.join(d, "degenerate_orientation.dcm"), dicom(iop="1\\0\\0\\1\\0\\0"))
    write(os.path.join(d, "unknown_bits_allocated.dcm"), dicom(bits=7, pixels=bytes(14)))
    write(os.path.join(SEEDS, "dicom", "valid_ct_slice.dcm"), dicom())


# ---------------------------------------------------------------- CSV (site table)

def csv_corpus():
    d = os.path.join(CORPUS, "csv")
    write(os.path.join(d, "missing_id_column.csv"), "id,age,response\nP1,50,1\nP2,60,0\n")
    write(os.path.join(d, "ragged_rows.csv"), "patient_id,age,response\nP1,50,1\nP2,60\n")
    write(os.path.join(d, "duplicate_column.csv"), "patient_id,age,age\nP1,50,51\n")
    write(os.path.join(d, "empty.csv"), "")
    write(os.path.join(d, "non_numeric.csv"), "patient_id,age,response\nP1,50,1\nP2,sixty,0\n")
    write(os.path.join(d, "infinite_value.csv"), "patient_id,age,response\nP1,inf,1\n")
    write(os.path.join(d, "bad_label.csv"), "patient_id,age,response\nP1,50,yes\n")
    write(os.path.join(d, "invalid_utf8.csv"), b"patient_id,age,response\nP1,\xff\xfe,1\n")
    write(os.path.join(SEEDS, "csv_table", "valid.csv"),
          "patient_id,age,response,site\nP1,50,1,S01\nP2,NA,0,S01\n")


# ---------------------------------------------------------------- TOML (study, policy, site)

STUDY_OK = """id = "t1"
[analysis]
kind = "table1"
label_column = "response"
variables = ["age", "sex"]
categorical = ["sex"]
"""


def toml_corpus():
    d = os.path.join(CORPUS, "toml")
    write(os.path.join(d, "study_unknown_key.toml"), STUDY_OK + "colour = \"blue\"\n")
    write(os.path.join(d, "study_wrong_type.toml"), STUDY_OK.replace('["age", "sex"]', '"age"'))
    write(os.path.join(d, "study_missing_analysis.toml"), 'id = "t1"\n')
    write(os.path.join(d, "study_unknown_kind.toml"),
          STUDY_OK.replace('kind = "table1"', 'kind = "deep_learning"'))
    write(os.path.join(d, "study_bad_id.toml"), STUDY_OK.replace('"t1"', '"../etc/passwd"'))
    write(os.path.join(d, "study_categorical_not_listed.toml"),
          STUDY_OK.replace('categorical = ["sex"]', 'categorical = ["stage"]'))
    write(os.path.join(d, "study_not_toml.toml"), "id = \n[[[\n")
    write(os.path.join(d, "policy_unknown_key.toml"), "min_cuont = 5\n")
    write(os.path.join(d, "policy_wrong_type.toml"), 'min_count = "five"\n')
    write(os.path.join(d, "policy_zero_min_count.toml"), "min_count = 0\n")
    write(os.path.join(d, "policy_nan_ratio.toml"), "max_params_per_row = nan\n")
    write(os.path.join(d, "policy_negative_ratio.toml"), "max_params_per_row = -1.0\n")
    write(os.path.join(d, "site_unknown_key.toml"),
          'aggregator_url = "https://localhost:1"\nca_cert = "ca.pem"\ncert = "site.pem"\n'
          'key = "site.key"\npolicy = "policy.toml"\ndata_table = "data.csv"\npasword = "x"\n')
    write(os.path.join(d, "site_wrong_type.toml"),
          'aggregator_url = 7443\nca_cert = "ca.pem"\ncert = "site.pem"\nkey = "site.key"\n'
          'policy = "policy.toml"\ndata_table = "data.csv"\n')
    write(os.path.join(d, "site_missing_field.toml"),
          'aggregator_url = "https://localhost:1"\nca_cert = "ca.pem"\ncert = "site.pem"\n'
          'policy = "policy.toml"\ndata_table = "data.csv"\n')
    write(os.path.join(SEEDS, "study_toml", "table1.toml"), STUDY_OK)
    write(os.path.join(SEEDS, "study_toml", "policy.toml"),
          "min_count = 5\nallowed_studies = [\"abc\"]\nmax_params_per_row = 0.33\n")
    lasso = ('id = "l1"\n[analysis]\nkind = "lasso"\nlabel_column = "response"\n'
             'features = ["f1", "f2", "f3"]\nnfolds = 5\nbootstrap = 10\ntop_k = 2\n')
    write(os.path.join(SEEDS, "study_toml", "lasso.toml"), lasso)
    harm = ('id = "h1"\n[analysis]\nkind = "harmonize"\nfeatures = ["f1", "f2"]\n'
            'covariates = ["age", "sex"]\ncategorical = ["sex"]\nmode = "mean-only"\n')
    write(os.path.join(SEEDS, "study_toml", "harmonize.toml"), harm)


if __name__ == "__main__":
    nifti_corpus()
    nrrd_corpus()
    dicom_corpus()
    csv_corpus()
    toml_corpus()
    for base in (CORPUS, SEEDS):
        n = sum(len(files) for _, _, files in os.walk(base))
        print(f"{base}: {n} files")
