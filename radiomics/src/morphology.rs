//! IBSI morphological features (3D, computed on the morphological and intensity masks).
//!
//! Representations (IBSI "Morphological features"): the ROI surface is a triangle mesh from marching
//! cubes on the morphological mask padded with one empty voxel layer, iso-level 0.5, so every mesh
//! vertex is the midpoint of a grid edge between an ROI and a non-ROI voxel centre. Voxel-centre
//! point sets are used for PCA and centres of mass. Lengths are in mm from the voxel spacing (the
//! direction cosines are a rotation and do not change any feature).
//!
//! Marching-cubes convention used here (written for binary masks, where every iso-crossing is an
//! edge midpoint): each cube's surface loops are traced from the iso-crossings on its six faces; on
//! an ambiguous face (two diagonal ROI corners, saddle exactly at the 0.5 level) the ROI corners are
//! joined (the saddle counts as inside); each loop is then triangulated without extra vertices so
//! that the surface bulges away from the minority corners (maximum enclosed volume when fewer than
//! four of the cube's corners are in the ROI, minimum when more than four, maximum area for a 4–4
//! split). Decisions are made in index space, so they do not depend on the voxel spacing, and they
//! are identical on the two cubes sharing a face, so the mesh is closed and consistently oriented.
//! This reproduces the Lewiner marching cubes of scikit-image (used by MIRP, the IBSI reference
//! implementation) exactly on the IBSI digital phantom (V = 556.33, A = 388.07 mm³/mm²) and to
//! 0.01 % of the area on the IBSI CT masks; it differs only in the rare MC33 sub-cases where
//! Lewiner adds a tunnel or an interior vertex (checked offline against scikit-image 0.26).
//!
//! Not computed: OMBB and MVEE densities (no IBSI consensus values).

use std::collections::HashMap;

use ndarray::Array3;
use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

use crate::volume::{Mask, Volume};

/// Errors of morphology computation.
#[derive(Debug, thiserror::Error)]
pub enum MorphologyError {
    #[error(
        "image {image:?}, morphological mask {morph:?} and intensity mask {int:?} must have the same shape"
    )]
    ShapeMismatch {
        image: [usize; 3],
        morph: [usize; 3],
        int: [usize; 3],
    },
    #[error("the morphological mask is empty")]
    EmptyMorphMask,
    #[error("the intensity mask is empty")]
    EmptyIntensityMask,
}

/// A closed, consistently oriented triangle mesh. Vertex coordinates are in mm, `[x, y, z]` order
/// along the array's x, y, z axes (voxel centre `[z, y, x]` index → `(x·sx, y·sy, z·sz)`).
#[derive(Debug, Clone, Default)]
pub struct Mesh {
    pub vertices: Vec<[f64; 3]>,
    pub faces: Vec<[u32; 3]>,
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}
fn tri_area(a: [f64; 3], b: [f64; 3], c: [f64; 3]) -> f64 {
    0.5 * norm(cross(sub(b, a), sub(c, a)))
}

impl Mesh {
    /// IBSI RNU0: `V = |Σ_k a_k · (b_k × c_k)| / 6` over faces (signed tetrahedra with the origin).
    pub fn volume(&self) -> f64 {
        let mut v = 0.0;
        for f in &self.faces {
            let (a, b, c) = (
                self.vertices[f[0] as usize],
                self.vertices[f[1] as usize],
                self.vertices[f[2] as usize],
            );
            v += dot(a, cross(b, c));
        }
        (v / 6.0).abs()
    }
    /// IBSI C0JK: `A = Σ_k |ab × ac| / 2`.
    pub fn area(&self) -> f64 {
        self.faces
            .iter()
            .map(|f| {
                tri_area(
                    self.vertices[f[0] as usize],
                    self.vertices[f[1] as usize],
                    self.vertices[f[2] as usize],
                )
            })
            .sum()
    }
}

/// Cube faces: four corners in cyclic order and the outward normal. Corner `c = dx + 2 dy + 4 dz`.
const CUBE_FACES: [([usize; 4], [f64; 3]); 6] = [
    ([0, 2, 6, 4], [-1.0, 0.0, 0.0]),
    ([1, 3, 7, 5], [1.0, 0.0, 0.0]),
    ([0, 1, 5, 4], [0.0, -1.0, 0.0]),
    ([2, 3, 7, 6], [0.0, 1.0, 0.0]),
    ([0, 1, 3, 2], [0.0, 0.0, -1.0]),
    ([4, 5, 7, 6], [0.0, 0.0, 1.0]),
];

fn corner_off(c: usize) -> [usize; 3] {
    [c & 1, (c >> 1) & 1, (c >> 2) & 1]
}

/// Optimal triangulation of a closed polygon (vertex positions `p`) minimising the summed
/// `tri_cost` of its triangles (dynamic programming over sub-polygons, O(n³) for n ≤ 12). Returns
/// index triples into `p` that keep the polygon's orientation.
fn best_triangulation(
    p: &[[f64; 3]],
    tri_cost: impl Fn([f64; 3], [f64; 3], [f64; 3]) -> f64,
) -> Vec<[usize; 3]> {
    let n = p.len();
    if n == 3 {
        return vec![[0, 1, 2]];
    }
    // cost[i][j]: best area for the sub-polygon i..=j (j - i >= 2).
    let mut cost = vec![vec![0.0f64; n]; n];
    let mut split = vec![vec![0usize; n]; n];
    for len in 2..n {
        for i in 0..n - len {
            let j = i + len;
            let mut best = f64::INFINITY;
            for k in i + 1..j {
                let c = cost[i][k] + cost[k][j] + tri_cost(p[i], p[k], p[j]);
                // Strict < keeps the lowest k on ties, so the result is deterministic.
                if c < best - 1e-12 {
                    best = c;
                    split[i][j] = k;
                }
            }
            cost[i][j] = best;
        }
    }
    let mut out = Vec::with_capacity(n - 2);
    let mut stack = vec![(0usize, n - 1)];
    while let Some((i, j)) = stack.pop() {
        if j < i + 2 {
            continue;
        }
        let k = split[i][j];
        out.push([i, k, j]);
        stack.push((i, k));
        stack.push((k, j));
    }
    out
}

/// Marching cubes (see the module documentation for the convention) on a binary mask with voxel
/// `spacing` `[z, y, x]` in mm. Returns an empty mesh for an empty mask.
pub fn mesh_from_mask(mask: &Array3<bool>, spacing: [f64; 3]) -> Mesh {
    let (nz, ny, nx) = mask.dim();
    // Padded grid dims (x, y, z) with one empty layer on each side.
    let (px, py, pz) = (nx + 2, ny + 2, nz + 2);
    let at = |x: usize, y: usize, z: usize| -> bool {
        x >= 1 && y >= 1 && z >= 1 && x <= nx && y <= ny && z <= nz && mask[[z - 1, y - 1, x - 1]]
    };
    let mut vid: HashMap<usize, u32> = HashMap::new();
    let mut mesh = Mesh::default();
    let mut segs: Vec<(u32, u32)> = Vec::with_capacity(12);
    let mut tmp_pos: Vec<[f64; 3]> = Vec::with_capacity(12);
    for cz in 0..pz - 1 {
        for cy in 0..py - 1 {
            for cx in 0..px - 1 {
                let mut v = [false; 8];
                let mut n_in = 0;
                for (c, vc) in v.iter_mut().enumerate() {
                    let o = corner_off(c);
                    *vc = at(cx + o[0], cy + o[1], cz + o[2]);
                    n_in += *vc as usize;
                }
                if n_in == 0 || n_in == 8 {
                    continue;
                }
                // Corner positions (padded index space, x y z).
                let pos = |c: usize| {
                    let o = corner_off(c);
                    [(cx + o[0]) as f64, (cy + o[1]) as f64, (cz + o[2]) as f64]
                };
                let mut edge_vertex = |a: usize, b: usize, mesh: &mut Mesh| -> u32 {
                    let (oa, ob) = (corner_off(a), corner_off(b));
                    let lo = if a < b { oa } else { ob };
                    let axis = (0..3).find(|&k| oa[k] != ob[k]).unwrap_or(0);
                    let lin = ((cz + lo[2]) * py + (cy + lo[1])) * px + (cx + lo[0]);
                    let key = lin * 3 + axis;
                    *vid.entry(key).or_insert_with(|| {
                        let (pa, pb) = (pos(a), pos(b));
                        // Midpoint, back to unpadded index space, then to mm.
                        let m = [
                            ((pa[0] + pb[0]) * 0.5 - 1.0) * spacing[2],
                            ((pa[1] + pb[1]) * 0.5 - 1.0) * spacing[1],
                            ((pa[2] + pb[2]) * 0.5 - 1.0) * spacing[0],
                        ];
                        mesh.vertices.push(m);
                        (mesh.vertices.len() - 1) as u32
                    })
                };
                segs.clear();
                for (corners, normal) in CUBE_FACES.iter() {
                    let fv: [bool; 4] =
                        [v[corners[0]], v[corners[1]], v[corners[2]], v[corners[3]]];
                    let crossing: Vec<usize> =
                        (0..4).filter(|&k| fv[k] != fv[(k + 1) % 4]).collect();
                    // Each segment: two face-edge indices and the corner it cuts off (+ whether that
                    // corner is inside).
                    let mut face_segs: Vec<(usize, usize, usize, bool)> = Vec::new();
                    match crossing.len() {
                        0 => {}
                        2 => {
                            // The corner shared by the two crossing edges is cut off when the edges
                            // are adjacent; otherwise (a straight cut) use any inside corner.
                            let (e1, e2) = (crossing[0], crossing[1]);
                            let shared = if (e1 + 1) % 4 == e2 {
                                Some((e1 + 1) % 4)
                            } else if (e2 + 1) % 4 == e1 {
                                Some((e2 + 1) % 4)
                            } else {
                                None
                            };
                            match shared {
                                Some(k) => face_segs.push((e1, e2, k, fv[k])),
                                None => {
                                    let k = (0..4).find(|&k| fv[k]).unwrap_or(0);
                                    face_segs.push((e1, e2, k, true));
                                }
                            }
                        }
                        4 => {
                            // Ambiguous face: the two ROI corners are joined, i.e. each outside
                            // corner is cut off by its own segment.
                            for (k, &inside) in fv.iter().enumerate() {
                                if !inside {
                                    let e_before = (k + 3) % 4; // edge (k-1, k)
                                    let e_after = k; // edge (k, k+1)
                                    face_segs.push((e_before, e_after, k, false));
                                }
                            }
                        }
                        _ => {}
                    }
                    for (e1, e2, k, inside) in face_segs {
                        let va = edge_vertex(corners[e1], corners[(e1 + 1) % 4], &mut mesh);
                        let vb = edge_vertex(corners[e2], corners[(e2 + 1) % 4], &mut mesh);
                        let (pa, pb) = (mesh.vertices[va as usize], mesh.vertices[vb as usize]);
                        // Orientation rule: viewed from outside the cube the inside region lies to
                        // the right of the segment, i.e. ((b - a) × (inside - a)) · n_face < 0.
                        let pk = pos(corners[k]);
                        let pk = [
                            (pk[0] - 1.0) * spacing[2],
                            (pk[1] - 1.0) * spacing[1],
                            (pk[2] - 1.0) * spacing[0],
                        ];
                        let s = dot(cross(sub(pb, pa), sub(pk, pa)), *normal);
                        let s = if inside { s } else { -s };
                        if s < 0.0 {
                            segs.push((va, vb));
                        } else {
                            segs.push((vb, va));
                        }
                    }
                }
                // Chain directed segments into loops and triangulate them.
                let mut used = vec![false; segs.len()];
                for start in 0..segs.len() {
                    if used[start] {
                        continue;
                    }
                    used[start] = true;
                    let mut lp = vec![segs[start].0];
                    let mut cur = segs[start].1;
                    while cur != lp[0] {
                        lp.push(cur);
                        match (0..segs.len()).find(|&s| !used[s] && segs[s].0 == cur) {
                            Some(s) => {
                                used[s] = true;
                                cur = segs[s].1;
                            }
                            None => break, // cannot happen for a consistent face rule
                        }
                    }
                    if lp.len() < 3 {
                        continue;
                    }
                    tmp_pos.clear();
                    tmp_pos.extend(lp.iter().map(|&i| {
                        let v = mesh.vertices[i as usize];
                        [v[0] / spacing[2], v[1] / spacing[1], v[2] / spacing[0]]
                    }));
                    let nl = tmp_pos.len() as f64;
                    let cen = tmp_pos.iter().fold([0.0; 3], |acc, p| {
                        [acc[0] + p[0] / nl, acc[1] + p[1] / nl, acc[2] + p[2] / nl]
                    });
                    let vol = |a: [f64; 3], b: [f64; 3], c: [f64; 3]| {
                        dot(sub(a, cen), cross(sub(b, cen), sub(c, cen)))
                    };
                    // Bulge away from the minority corners (max. enclosed volume when fewer than
                    // four corners are inside, min. when more); 4–4 splits: maximum area.
                    let tris = match n_in.cmp(&4) {
                        std::cmp::Ordering::Less => {
                            best_triangulation(&tmp_pos, |a, b, c| -vol(a, b, c))
                        }
                        std::cmp::Ordering::Greater => best_triangulation(&tmp_pos, vol),
                        std::cmp::Ordering::Equal => {
                            best_triangulation(&tmp_pos, |a, b, c| -tri_area(a, b, c))
                        }
                    };
                    for t in tris {
                        mesh.faces.push([lp[t[0]], lp[t[1]], lp[t[2]]]);
                    }
                }
            }
        }
    }
    mesh
}

/// 3D convex hull result: hull vertex indices (into the input points), volume and surface area.
#[derive(Debug, Clone)]
pub struct ConvexHull {
    pub vertices: Vec<usize>,
    pub faces: Vec<[usize; 3]>,
    pub volume: f64,
    pub area: f64,
}

/// Deterministic pseudo-random number in [-0.5, 0.5) from an index (splitmix64).
fn jitter(i: u64) -> f64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 - 0.5
}

/// 3D convex hull (incremental algorithm). Mesh vertices lie on a lattice, so many are exactly
/// coplanar; the hull is built on copies joggled by ≤ 1e-7 of the point cloud's extent
/// (deterministically, like qhull's `QJ`), which removes degeneracies, and volume/area are then
/// evaluated on the original coordinates of the resulting faces (error ~1e-7 relative). Returns
/// `None` for fewer than 4 points or a flat point set.
pub fn convex_hull(points: &[[f64; 3]]) -> Option<ConvexHull> {
    if points.len() < 4 {
        return None;
    }
    // Keep only candidates: a hull vertex is an extreme point, so it cannot lie strictly between
    // two points of the set on any axis-parallel line: it must be the minimum or maximum of its
    // x line (fixed y, z), of its y line and of its z line. (Dropping boundary points that are not
    // vertices does not change the polytope.)
    let mut extreme = vec![0u8; points.len()];
    for axis in 0..3 {
        let (u, v) = ((axis + 1) % 3, (axis + 2) % 3);
        let mut lines: HashMap<(u64, u64), (usize, usize)> = HashMap::new();
        for (i, p) in points.iter().enumerate() {
            let e = lines
                .entry((p[u].to_bits(), p[v].to_bits()))
                .or_insert((i, i));
            if p[axis] < points[e.0][axis] {
                e.0 = i;
            }
            if p[axis] > points[e.1][axis] {
                e.1 = i;
            }
        }
        for &(a, b) in lines.values() {
            extreme[a] |= 1 << axis;
            extreme[b] |= 1 << axis;
        }
    }
    let cand: Vec<usize> = (0..points.len()).filter(|&i| extreme[i] == 7).collect();
    if cand.len() < 4 {
        return None;
    }
    let (mut lo, mut hi) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
    for &i in &cand {
        for k in 0..3 {
            lo[k] = lo[k].min(points[i][k]);
            hi[k] = hi[k].max(points[i][k]);
        }
    }
    let extent = (0..3).map(|k| hi[k] - lo[k]).fold(0.0, f64::max);
    if extent <= 0.0 {
        return None;
    }
    let eps = 1e-7 * extent;
    let q: Vec<[f64; 3]> = cand
        .iter()
        .map(|&i| {
            let p = points[i];
            let s = i as u64 * 3;
            [
                p[0] + eps * jitter(s),
                p[1] + eps * jitter(s + 1),
                p[2] + eps * jitter(s + 2),
            ]
        })
        .collect();
    let orient = |a: usize, b: usize, c: usize, d: usize| -> f64 {
        dot(cross(sub(q[b], q[a]), sub(q[c], q[a])), sub(q[d], q[a]))
    };
    // Initial tetrahedron: extreme points.
    let n = q.len();
    let i0 = (0..n).min_by(|&a, &b| q[a][0].total_cmp(&q[b][0]))?;
    let i1 = (0..n).max_by(|&a, &b| norm(sub(q[a], q[i0])).total_cmp(&norm(sub(q[b], q[i0]))))?;
    let i2 = (0..n).max_by(|&a, &b| {
        norm(cross(sub(q[i1], q[i0]), sub(q[a], q[i0])))
            .total_cmp(&norm(cross(sub(q[i1], q[i0]), sub(q[b], q[i0]))))
    })?;
    let i3 = (0..n).max_by(|&a, &b| {
        orient(i0, i1, i2, a)
            .abs()
            .total_cmp(&orient(i0, i1, i2, b).abs())
    })?;
    let vol_scale = extent * extent * extent;
    if orient(i0, i1, i2, i3).abs() < 1e-12 * vol_scale {
        return None;
    }
    let mut faces: Vec<Option<[usize; 3]>> = Vec::new();
    let add_face = |faces: &mut Vec<Option<[usize; 3]>>, f: [usize; 3]| faces.push(Some(f));
    // Orient faces outward (the fourth point must be on the inner side).
    let tet = [
        [i0, i1, i2, i3],
        [i0, i1, i3, i2],
        [i0, i2, i3, i1],
        [i1, i2, i3, i0],
    ];
    for t in tet {
        if orient(t[0], t[1], t[2], t[3]) > 0.0 {
            add_face(&mut faces, [t[0], t[2], t[1]]);
        } else {
            add_face(&mut faces, [t[0], t[1], t[2]]);
        }
    }
    // Process remaining points, farthest from the centroid first (fewer temporary faces).
    let cen = [
        (q[i0][0] + q[i1][0] + q[i2][0] + q[i3][0]) / 4.0,
        (q[i0][1] + q[i1][1] + q[i2][1] + q[i3][1]) / 4.0,
        (q[i0][2] + q[i1][2] + q[i2][2] + q[i3][2]) / 4.0,
    ];
    let mut order: Vec<usize> = (0..n)
        .filter(|&i| i != i0 && i != i1 && i != i2 && i != i3)
        .collect();
    order.sort_by(|&a, &b| norm(sub(q[b], cen)).total_cmp(&norm(sub(q[a], cen))));
    let mut visible: Vec<usize> = Vec::new();
    for p in order {
        visible.clear();
        for (fi, f) in faces.iter().enumerate() {
            if let Some(f) = f
                && orient(f[0], f[1], f[2], p) > 0.0
            {
                visible.push(fi);
            }
        }
        if visible.is_empty() {
            continue;
        }
        // Horizon: directed edges of visible faces whose reverse edge is not in a visible face.
        let mut vis_edges: HashMap<(usize, usize), ()> = HashMap::new();
        for &fi in &visible {
            if let Some(f) = faces[fi] {
                for k in 0..3 {
                    vis_edges.insert((f[k], f[(k + 1) % 3]), ());
                }
            }
        }
        let mut horizon: Vec<(usize, usize)> = vis_edges
            .keys()
            .filter(|&&(a, b)| !vis_edges.contains_key(&(b, a)))
            .copied()
            .collect();
        // Hash order is random per process: sort so the hull (and its area sums) is reproducible.
        horizon.sort_unstable();
        for &fi in &visible {
            faces[fi] = None;
        }
        for (a, b) in horizon {
            faces.push(Some([a, b, p]));
        }
        // Compact occasionally so scans stay short.
        if faces.len() > 4 * n.max(64) {
            faces.retain(|f| f.is_some());
        }
    }
    let faces: Vec<[usize; 3]> = faces
        .into_iter()
        .flatten()
        .map(|f| [cand[f[0]], cand[f[1]], cand[f[2]]])
        .collect();
    let (mut vol, mut area) = (0.0, 0.0);
    let mut verts: Vec<usize> = Vec::new();
    for f in &faces {
        let (a, b, c) = (points[f[0]], points[f[1]], points[f[2]]);
        vol += dot(a, cross(b, c));
        area += tri_area(a, b, c);
        verts.extend_from_slice(f);
    }
    verts.sort_unstable();
    verts.dedup();
    Some(ConvexHull {
        vertices: verts,
        faces,
        volume: (vol / 6.0).abs(),
        area,
    })
}

/// Symmetric 3×3 eigenvalues (descending) by cyclic Jacobi rotations.
pub fn symmetric_eigenvalues(m: [[f64; 3]; 3]) -> [f64; 3] {
    let mut a = m;
    for _ in 0..100 {
        let off = a[0][1] * a[0][1] + a[0][2] * a[0][2] + a[1][2] * a[1][2];
        if off < 1e-30 * (a[0][0] * a[0][0] + a[1][1] * a[1][1] + a[2][2] * a[2][2]).max(1e-300) {
            break;
        }
        for (p, q) in [(0usize, 1usize), (0, 2), (1, 2)] {
            if a[p][q].abs() < 1e-300 {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let c = 1.0 / (t * t + 1.0).sqrt();
            let s = t * c;
            // Apply rotation J^T A J on rows/cols p, q.
            let mut b = a;
            for k in 0..3 {
                b[k][p] = c * a[k][p] - s * a[k][q];
                b[k][q] = s * a[k][p] + c * a[k][q];
            }
            let mut d = b;
            for k in 0..3 {
                d[p][k] = c * b[p][k] - s * b[q][k];
                d[q][k] = s * b[p][k] + c * b[q][k];
            }
            a = d;
        }
    }
    let mut e = [a[0][0], a[1][1], a[2][2]];
    e.sort_by(|x, y| y.total_cmp(x));
    e
}

/// Surface area of an ellipsoid with semi-axes `a ≥ b ≥ c` by the IBSI Legendre series (ν = 0..=20):
/// `A = 4π a b Σ_ν (αβ)^ν / (1 − 4ν²) P_ν((α² + β²) / (2αβ))`, `α = √(1 − b²/a²)`, `β = √(1 − c²/a²)`.
/// Kept exactly as the IBSI defines it (the reference values use it), although for non-spherical
/// ellipsoids it is not the true area: for (3, 2, 1) it gives 52.81 where the true area is 48.88.
pub fn ellipsoid_area(a: f64, b: f64, c: f64) -> f64 {
    let alpha = (1.0 - b * b / (a * a)).max(0.0).sqrt();
    let beta = (1.0 - c * c / (a * a)).max(0.0).sqrt();
    let ab = alpha * beta;
    let mut sum = 0.0;
    if ab > 1e-9 {
        let x = (alpha * alpha + beta * beta) / (2.0 * ab);
        // Legendre recurrence: ν P_ν = (2ν − 1) x P_{ν−1} − (ν − 1) P_{ν−2}.
        let (mut p_prev, mut p_cur) = (1.0, x);
        for nu in 0..=20u32 {
            let p_nu = match nu {
                0 => 1.0,
                1 => x,
                _ => {
                    let next =
                        ((2 * nu - 1) as f64 * x * p_cur - (nu - 1) as f64 * p_prev) / nu as f64;
                    p_prev = p_cur;
                    p_cur = next;
                    next
                }
            };
            sum += ab.powi(nu as i32) / (1.0 - 4.0 * (nu * nu) as f64) * p_nu;
        }
    } else {
        // Limit αβ → 0 (at most one eccentricity nonzero): (αβ)^ν P_ν(x) → c_ν ((α² + β²)/2)^ν,
        // with c_ν = (2ν)! / (2^ν (ν!)²) the leading coefficient of P_ν.
        let h = 0.5 * (alpha * alpha + beta * beta);
        let mut c_nu = 1.0;
        for nu in 0..=20u32 {
            if nu > 0 {
                c_nu *= (2 * nu - 1) as f64 / nu as f64;
            }
            sum += c_nu * h.powi(nu as i32) / (1.0 - 4.0 * (nu * nu) as f64);
        }
    }
    4.0 * std::f64::consts::PI * a * b * sum
}

/// Moran's I and Geary's C of the intensities inside `mask`, weights `w = 1/‖Δ‖₂` (mm) over all
/// ordered voxel pairs `i ≠ j`. Exact, in O(N log N): both double sums only depend on the integer
/// offset between voxels, so they are sums over offsets of auto-/cross-correlations of the masked,
/// mean-centred image, computed with zero-padded 3D FFTs. Degenerate ROIs (one voxel or constant
/// intensity) give I = C = 1, the convention of the IBSI reference implementation (MIRP).
pub fn moran_geary(image: &Array3<f64>, mask: &Array3<bool>, spacing: [f64; 3]) -> (f64, f64) {
    // Restrict to the mask's bounding box.
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let (mut n, mut s) = (0usize, 0.0);
    for ((z, y, x), &m) in mask.indexed_iter() {
        if m {
            for (a, v) in [z, y, x].into_iter().enumerate() {
                lo[a] = lo[a].min(v);
                hi[a] = hi[a].max(v);
            }
            n += 1;
            s += image[[z, y, x]];
        }
    }
    if n < 2 {
        return (1.0, 1.0);
    }
    let mu = s / n as f64;
    let d = [hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1];
    // Linear (not circular) correlation needs ≥ 2d − 1 points per axis; round up to a size with
    // only the factors 2, 3, 5 (fast FFT kernels).
    let sizes = [
        fast_fft_size(2 * d[0] - 1),
        fast_fft_size(2 * d[1] - 1),
        fast_fft_size(2 * d[2] - 1),
    ];
    let total = sizes[0] * sizes[1] * sizes[2];
    let (nz, ny, nx) = (sizes[0], sizes[1], sizes[2]);
    // With K(o) = 1/‖o‖ (mm) for o ≠ 0 and K(0) = 0, and S = K * m, T = K * z (convolutions over
    // the ROI indicator m and the centred intensities z):
    //   Σ_{i≠j} w_ij         = Σ_i m_i S_i,
    //   Σ_{i≠j} w_ij z_i z_j = Σ_i z_i T_i,
    //   Σ_{i≠j} w_ij (z_i − z_j)² = 2 Σ_i z_i² S_i − 2 Σ_i z_i T_i.
    // K is real and even, so its spectrum is real (computed directly, see `even_kernel_spectrum`):
    // one forward FFT of m + i·z, a product with the kernel spectrum and one inverse FFT give
    // S + i·T. Offsets up to ±(d − 1) fit in sizes ≥ 2d − 1 without wrap-around.
    let kern = even_kernel_spectrum(d, sizes, spacing);
    let half = [nz / 2 + 1, ny / 2 + 1, nx / 2 + 1];
    let mut fc = vec![Complex::new(0.0, 0.0); total];
    let mut ss = 0.0;
    for z in 0..d[0] {
        for y in 0..d[1] {
            for x in 0..d[2] {
                let (gz, gy, gx) = (z + lo[0], y + lo[1], x + lo[2]);
                if mask[[gz, gy, gx]] {
                    let dev = image[[gz, gy, gx]] - mu;
                    fc[(z * ny + y) * nx + x] = Complex::new(1.0, dev);
                    ss += dev * dev;
                }
            }
        }
    }
    if ss <= 0.0 {
        return (1.0, 1.0);
    }
    let mut planner = FftPlanner::<f64>::new();
    fft3(&mut planner, &mut fc, sizes, d, false);
    // The kernel spectrum is real and even per axis: index the stored octant by min(k, n − k).
    for kz in 0..nz {
        let hz = kz.min(nz - kz);
        for ky in 0..ny {
            let hy = ky.min(ny - ky);
            let krow = &kern[(hz * half[1] + hy) * half[2]..][..half[2]];
            let row = &mut fc[(kz * ny + ky) * nx..][..nx];
            for (kx, c) in row.iter_mut().enumerate() {
                *c *= krow[kx.min(nx - kx)];
            }
        }
    }
    drop(kern);
    fft3(&mut planner, &mut fc, sizes, d, true);
    let scale = 1.0 / total as f64;
    let (mut w_sum, mut moran_num, mut qs) = (0.0, 0.0, 0.0);
    for z in 0..d[0] {
        for y in 0..d[1] {
            for x in 0..d[2] {
                let (gz, gy, gx) = (z + lo[0], y + lo[1], x + lo[2]);
                if mask[[gz, gy, gx]] {
                    let dev = image[[gz, gy, gx]] - mu;
                    let st = fc[(z * ny + y) * nx + x] * scale;
                    w_sum += st.re;
                    moran_num += dev * st.im;
                    qs += dev * dev * st.re;
                }
            }
        }
    }
    let geary_num = 2.0 * qs - 2.0 * moran_num;
    let nf = n as f64;
    let moran = nf / w_sum * moran_num / ss;
    let geary = (nf - 1.0) / (2.0 * w_sum) * geary_num / ss;
    (moran, geary)
}

/// DFT on the `sizes` grid of the kernel K(o) = 1/‖o‖ (mm; K(0) = 0) supported on offsets
/// |o_a| < d_a. K is even along every axis, so its DFT is real and even along every axis,
/// K̂(k) = Σ_o K(o) Π_a cos(2π k_a o_a / n_a), and only the octant k_a ≤ n_a/2 is needed. It is
/// computed as three separable cosine sums over o_a ≥ 0 (weight 2 for o_a > 0): about
/// d·(n/2)·(d₀d₁ + …) multiply-adds in contiguous axpy loops, cheaper than a full complex 3D FFT of
/// the padded kernel and without its n₀n₁n₂ complex buffer. Layout `[k_z][k_y][k_x]` of the octant.
fn even_kernel_spectrum(d: [usize; 3], sizes: [usize; 3], spacing: [f64; 3]) -> Vec<f64> {
    let h = [sizes[0] / 2 + 1, sizes[1] / 2 + 1, sizes[2] / 2 + 1];
    // table[a][o * h[a] + k] = w_o cos(2π k o / n_a)
    let table: Vec<Vec<f64>> = (0..3)
        .map(|a| {
            let mut t = vec![0.0; d[a] * h[a]];
            for o in 0..d[a] {
                let w = if o == 0 { 1.0 } else { 2.0 };
                for k in 0..h[a] {
                    // Reduce k·o mod n first so the angle stays small and exact.
                    let m = (k * o) % sizes[a];
                    t[o * h[a] + k] =
                        w * (2.0 * std::f64::consts::PI * m as f64 / sizes[a] as f64).cos();
                }
            }
            t
        })
        .collect();
    let axpy = |dst: &mut [f64], a: f64, src: &[f64]| {
        for (y, &x) in dst.iter_mut().zip(src) {
            *y += a * x;
        }
    };
    // x: A[oz][oy][kx]
    let mut a_buf = vec![0.0; d[0] * d[1] * h[2]];
    for oz in 0..d[0] {
        let dz = oz as f64 * spacing[0];
        for oy in 0..d[1] {
            let dy = oy as f64 * spacing[1];
            let dst = &mut a_buf[(oz * d[1] + oy) * h[2]..][..h[2]];
            for ox in 0..d[2] {
                if oz == 0 && oy == 0 && ox == 0 {
                    continue;
                }
                let dx = ox as f64 * spacing[2];
                let k = 1.0 / (dz * dz + dy * dy + dx * dx).sqrt();
                axpy(dst, k, &table[2][ox * h[2]..][..h[2]]);
            }
        }
    }
    // y: B[oz][ky][kx]
    let mut b_buf = vec![0.0; d[0] * h[1] * h[2]];
    for oz in 0..d[0] {
        for ky in 0..h[1] {
            let dst = &mut b_buf[(oz * h[1] + ky) * h[2]..][..h[2]];
            for oy in 0..d[1] {
                let c = table[1][oy * h[1] + ky];
                axpy(dst, c, &a_buf[(oz * d[1] + oy) * h[2]..][..h[2]]);
            }
        }
    }
    drop(a_buf);
    // z: K̂[kz][ky][kx]
    let plane = h[1] * h[2];
    let mut out = vec![0.0; h[0] * plane];
    for kz in 0..h[0] {
        let dst = &mut out[kz * plane..][..plane];
        for oz in 0..d[0] {
            let c = table[0][oz * h[0] + kz];
            axpy(dst, c, &b_buf[oz * plane..][..plane]);
        }
    }
    out
}

/// Smallest `n' ≥ n` whose only prime factors are 2, 3 and 5.
fn fast_fft_size(n: usize) -> usize {
    let mut m = n.max(1);
    loop {
        let mut r = m;
        for p in [2, 3, 5] {
            while r.is_multiple_of(p) {
                r /= p;
            }
        }
        if r == 1 {
            return m;
        }
        m += 1;
    }
}

/// Lanes transformed per batch along the strided axes: gathering a block of neighbouring lanes
/// reads contiguous runs of memory instead of one cache line per element.
const FFT_LANE_BLOCK: usize = 32;

/// In-place 3D FFT of a row-major `sizes` = `[z, y, x]` buffer, pruned to a block `[0, block[a])`
/// per axis: a forward transform assumes the input is zero outside the block (passes x, y, z; the
/// x pass skips all-zero rows, the y pass all-zero planes); an (unnormalised) inverse transform
/// computes only the outputs inside the block (passes z, y, x; each later pass only on the lanes
/// that are kept). `block = sizes` is the full transform.
fn fft3(
    planner: &mut FftPlanner<f64>,
    buf: &mut [Complex<f64>],
    sizes: [usize; 3],
    block: [usize; 3],
    inverse: bool,
) {
    let (nz, ny, nx) = (sizes[0], sizes[1], sizes[2]);
    let (dz, dy) = (block[0].min(nz), block[1].min(ny));
    let plan = |p: &mut FftPlanner<f64>, n: usize| {
        if inverse {
            p.plan_fft_inverse(n)
        } else {
            p.plan_fft_forward(n)
        }
    };
    let mut scratch = vec![Complex::new(0.0, 0.0); FFT_LANE_BLOCK * ny.max(nz)];
    // x: contiguous rows; the first dy rows of each of the first dz planes are one call each.
    let x_pass = |p: &mut FftPlanner<f64>, buf: &mut [Complex<f64>]| {
        let fx = plan(p, nx);
        for z in 0..dz {
            fx.process(&mut buf[z * ny * nx..(z * ny + dy) * nx]);
        }
    };
    if inverse {
        strided_pass(
            &*plan(planner, nz),
            buf,
            &mut scratch,
            nx,
            nz,
            ny * nx,
            ny,
            nx,
        );
        strided_pass(
            &*plan(planner, ny),
            buf,
            &mut scratch,
            nx,
            ny,
            nx,
            dz,
            ny * nx,
        );
        x_pass(planner, buf);
    } else {
        x_pass(planner, buf);
        strided_pass(
            &*plan(planner, ny),
            buf,
            &mut scratch,
            nx,
            ny,
            nx,
            dz,
            ny * nx,
        );
        strided_pass(
            &*plan(planner, nz),
            buf,
            &mut scratch,
            nx,
            nz,
            ny * nx,
            ny,
            nx,
        );
    }
}

/// FFT of every lane of length `len` and stride `stride`, for `outer` groups `outer_stride` apart,
/// gathering blocks of neighbouring x lanes (contiguous reads) into `scratch`.
#[allow(clippy::too_many_arguments)]
fn strided_pass(
    f: &dyn rustfft::Fft<f64>,
    buf: &mut [Complex<f64>],
    scratch: &mut [Complex<f64>],
    nx: usize,
    len: usize,
    stride: usize,
    outer: usize,
    outer_stride: usize,
) {
    for o in 0..outer {
        let base = o * outer_stride;
        for x0 in (0..nx).step_by(FFT_LANE_BLOCK) {
            let bw = FFT_LANE_BLOCK.min(nx - x0);
            for t in 0..len {
                let src = base + t * stride + x0;
                for b in 0..bw {
                    scratch[b * len + t] = buf[src + b];
                }
            }
            f.process(&mut scratch[..bw * len]);
            for t in 0..len {
                let dst = base + t * stride + x0;
                for b in 0..bw {
                    buf[dst + b] = scratch[b * len + t];
                }
            }
        }
    }
}

/// Brute-force O(N²) Moran's I / Geary's C (reference for tests and tiny ROIs).
pub fn moran_geary_bruteforce(
    image: &Array3<f64>,
    mask: &Array3<bool>,
    spacing: [f64; 3],
) -> (f64, f64) {
    let pts: Vec<([f64; 3], f64)> = mask
        .indexed_iter()
        .filter(|(_, m)| **m)
        .map(|((z, y, x), _)| {
            (
                [
                    z as f64 * spacing[0],
                    y as f64 * spacing[1],
                    x as f64 * spacing[2],
                ],
                image[[z, y, x]],
            )
        })
        .collect();
    let n = pts.len();
    if n < 2 {
        return (1.0, 1.0);
    }
    let mu = pts.iter().map(|p| p.1).sum::<f64>() / n as f64;
    let ss: f64 = pts.iter().map(|p| (p.1 - mu) * (p.1 - mu)).sum();
    if ss <= 0.0 {
        return (1.0, 1.0);
    }
    let (mut w_sum, mut mi, mut gc) = (0.0, 0.0, 0.0);
    for i in 0..n {
        for j in 0..n {
            if i == j {
                continue;
            }
            let w = 1.0 / norm(sub(pts[i].0, pts[j].0));
            w_sum += w;
            mi += w * (pts[i].1 - mu) * (pts[j].1 - mu);
            gc += w * (pts[i].1 - pts[j].1) * (pts[i].1 - pts[j].1);
        }
    }
    let nf = n as f64;
    (nf / w_sum * mi / ss, (nf - 1.0) / (2.0 * w_sum) * gc / ss)
}

/// All IBSI morphological features with reference values (OMBB/MVEE omitted). Units: mm, mm², mm³.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MorphologyFeatures {
    /// RNU0 volume (mesh): `V = |Σ a·(b×c)| / 6`.
    pub volume: f64,
    /// YEKZ volume (voxel counting): `N_v,m · voxel volume`.
    pub approx_volume: f64,
    /// C0JK surface area (mesh): `A = Σ |ab × ac| / 2`.
    pub area: f64,
    /// 2PR5 surface to volume ratio `A / V`.
    pub surface_to_volume: f64,
    /// SKGS compactness 1: `V / (π^{1/2} A^{3/2})`.
    pub compactness_1: f64,
    /// BQWJ compactness 2: `36π V² / A³`.
    pub compactness_2: f64,
    /// KRCK spherical disproportion: `A / (36π V²)^{1/3}`.
    pub spherical_disproportion: f64,
    /// QCFX sphericity: `(36π V²)^{1/3} / A`.
    pub sphericity: f64,
    /// 25C7 asphericity: `(A³ / (36π V²))^{1/3} − 1`.
    pub asphericity: f64,
    /// KLMA centre of mass shift: `‖CoM_geom(morph. mask) − CoM_gl(intensity mask, intensity-weighted)‖`.
    pub centre_of_mass_shift: f64,
    /// L0JK maximum 3D diameter: largest distance between mesh vertices (searched on hull vertices).
    pub max_diameter: f64,
    /// TDIC major axis length `4 √λ_major` (PCA of morph. voxel centres, covariance with n − 1).
    pub major_axis: f64,
    /// P9VJ minor axis length `4 √λ_minor`.
    pub minor_axis: f64,
    /// 7J51 least axis length `4 √λ_least`.
    pub least_axis: f64,
    /// Q3CK elongation `√(λ_minor / λ_major)`.
    pub elongation: f64,
    /// N17B flatness `√(λ_least / λ_major)`.
    pub flatness: f64,
    /// PBX1 volume density (AABB of mesh vertices) `V / V_aabb`.
    pub vol_dens_aabb: f64,
    /// R59B area density (AABB) `A / A_aabb`.
    pub area_dens_aabb: f64,
    /// 6BDE volume density (approximate enclosing ellipsoid) `3V / (4π a b c)`, semi-axes `2√λ`.
    pub vol_dens_aee: f64,
    /// RDD2 area density (AEE) `A / A_aee` (Legendre series, ν ≤ 20).
    pub area_dens_aee: f64,
    /// R3ER volume density (convex hull of mesh vertices) `V / V_convex`.
    pub vol_dens_conv_hull: f64,
    /// 7T7F area density (convex hull) `A / A_convex`.
    pub area_dens_conv_hull: f64,
    /// 99N0 integrated intensity `V · mean(intensity mask)`.
    pub integrated_intensity: f64,
    /// N365 Moran's I (inverse-distance weights, intensity mask).
    pub moran_i: f64,
    /// NPT7 Geary's C.
    pub geary_c: f64,
}

impl MorphologyFeatures {
    /// Feature tags as in the IBSI reference table (`reference_values.csv`), with values.
    pub fn tagged(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("morph_volume", self.volume),
            ("morph_vol_approx", self.approx_volume),
            ("morph_area_mesh", self.area),
            ("morph_av", self.surface_to_volume),
            ("morph_comp_1", self.compactness_1),
            ("morph_comp_2", self.compactness_2),
            ("morph_sph_dispr", self.spherical_disproportion),
            ("morph_sphericity", self.sphericity),
            ("morph_asphericity", self.asphericity),
            ("morph_com", self.centre_of_mass_shift),
            ("morph_diam", self.max_diameter),
            ("morph_pca_maj_axis", self.major_axis),
            ("morph_pca_min_axis", self.minor_axis),
            ("morph_pca_least_axis", self.least_axis),
            ("morph_pca_elongation", self.elongation),
            ("morph_pca_flatness", self.flatness),
            ("morph_vol_dens_aabb", self.vol_dens_aabb),
            ("morph_area_dens_aabb", self.area_dens_aabb),
            ("morph_vol_dens_aee", self.vol_dens_aee),
            ("morph_area_dens_aee", self.area_dens_aee),
            ("morph_vol_dens_conv_hull", self.vol_dens_conv_hull),
            ("morph_area_dens_conv_hull", self.area_dens_conv_hull),
            ("morph_integ_int", self.integrated_intensity),
            ("morph_moran_i", self.moran_i),
            ("morph_geary_c", self.geary_c),
        ]
    }
}

/// Compute every morphological feature. `morph_mask` (interpolated, not re-segmented) gives the
/// mesh and voxel point set; `int_mask` (re-segmented) gives intensities for the centre-of-mass
/// shift, integrated intensity, Moran's I and Geary's C. All three share one grid.
pub fn morphology(
    image: &Volume,
    morph_mask: &Mask,
    int_mask: &Mask,
) -> Result<MorphologyFeatures, MorphologyError> {
    let (di, dm, dn) = (image.data.dim(), morph_mask.data.dim(), int_mask.data.dim());
    if di != dm || di != dn {
        return Err(MorphologyError::ShapeMismatch {
            image: di.into(),
            morph: dm.into(),
            int: dn.into(),
        });
    }
    let sp = image.geometry.spacing;
    let pos = |z: usize, y: usize, x: usize| [x as f64 * sp[2], y as f64 * sp[1], z as f64 * sp[0]];

    // Morphological voxel point set: count, centroid, covariance.
    let mut n_m = 0usize;
    let mut sum = [0.0; 3];
    for ((z, y, x), &m) in morph_mask.data.indexed_iter() {
        if m {
            n_m += 1;
            let p = pos(z, y, x);
            for k in 0..3 {
                sum[k] += p[k];
            }
        }
    }
    if n_m == 0 {
        return Err(MorphologyError::EmptyMorphMask);
    }
    let com_geom = [
        sum[0] / n_m as f64,
        sum[1] / n_m as f64,
        sum[2] / n_m as f64,
    ];
    let mut cov = [[0.0; 3]; 3];
    for ((z, y, x), &m) in morph_mask.data.indexed_iter() {
        if m {
            let d = sub(pos(z, y, x), com_geom);
            for r in 0..3 {
                for c in 0..3 {
                    cov[r][c] += d[r] * d[c];
                }
            }
        }
    }
    let denom = (n_m.max(2) - 1) as f64;
    for row in cov.iter_mut() {
        for v in row.iter_mut() {
            *v /= denom;
        }
    }
    let lam = symmetric_eigenvalues(cov).map(|l| l.max(0.0));

    // Intensity mask: mean, intensity-weighted centre.
    let (mut n_i, mut isum) = (0usize, 0.0);
    let mut wsum = [0.0; 3];
    for ((z, y, x), &m) in int_mask.data.indexed_iter() {
        if m {
            let v = image.data[[z, y, x]];
            n_i += 1;
            isum += v;
            let p = pos(z, y, x);
            for k in 0..3 {
                wsum[k] += v * p[k];
            }
        }
    }
    if n_i == 0 {
        return Err(MorphologyError::EmptyIntensityMask);
    }
    let com_gl = [wsum[0] / isum, wsum[1] / isum, wsum[2] / isum];
    let mean_int = isum / n_i as f64;

    // Mesh-based features.
    let mesh = mesh_from_mask(&morph_mask.data, sp);
    let v = mesh.volume();
    let a = mesh.area();
    let pi = std::f64::consts::PI;
    let approx_volume = n_m as f64 * sp[0] * sp[1] * sp[2];

    let (mut lo, mut hi) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
    for p in &mesh.vertices {
        for k in 0..3 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    let ext = [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]];
    let v_aabb = ext[0] * ext[1] * ext[2];
    let a_aabb = 2.0 * (ext[0] * ext[1] + ext[0] * ext[2] + ext[1] * ext[2]);

    let hull = convex_hull(&mesh.vertices);
    let (v_hull, a_hull, max_diameter) = match &hull {
        Some(h) => {
            let mut best = 0.0f64;
            for (ii, &i) in h.vertices.iter().enumerate() {
                for &j in &h.vertices[ii + 1..] {
                    let d = sub(mesh.vertices[i], mesh.vertices[j]);
                    best = best.max(dot(d, d));
                }
            }
            (h.volume, h.area, best.sqrt())
        }
        None => {
            let mut best = 0.0f64;
            for (ii, p) in mesh.vertices.iter().enumerate() {
                for q in &mesh.vertices[ii + 1..] {
                    best = best.max(dot(sub(*p, *q), sub(*p, *q)));
                }
            }
            (f64::NAN, f64::NAN, best.sqrt())
        }
    };

    let (sa, sb, sc) = (
        2.0 * lam[0].sqrt(),
        2.0 * lam[1].sqrt(),
        2.0 * lam[2].sqrt(),
    );
    let v_aee = 4.0 * pi * sa * sb * sc / 3.0;
    let a_aee = if sa > 0.0 {
        ellipsoid_area(sa, sb, sc)
    } else {
        f64::NAN
    };

    let (moran_i, geary_c) = moran_geary(&image.data, &int_mask.data, sp);

    Ok(MorphologyFeatures {
        volume: v,
        approx_volume,
        area: a,
        surface_to_volume: a / v,
        compactness_1: v / (pi.sqrt() * a.powf(1.5)),
        compactness_2: 36.0 * pi * v * v / (a * a * a),
        spherical_disproportion: a / (36.0 * pi * v * v).cbrt(),
        sphericity: (36.0 * pi * v * v).cbrt() / a,
        asphericity: (a * a * a / (36.0 * pi * v * v)).cbrt() - 1.0,
        centre_of_mass_shift: norm(sub(com_geom, com_gl)),
        max_diameter,
        major_axis: 4.0 * lam[0].sqrt(),
        minor_axis: 4.0 * lam[1].sqrt(),
        least_axis: 4.0 * lam[2].sqrt(),
        elongation: (lam[1] / lam[0]).sqrt(),
        flatness: (lam[2] / lam[0]).sqrt(),
        vol_dens_aabb: v / v_aabb,
        area_dens_aabb: a / a_aabb,
        vol_dens_aee: v / v_aee,
        area_dens_aee: a / a_aee,
        vol_dens_conv_hull: v / v_hull,
        area_dens_conv_hull: a / a_hull,
        integrated_intensity: v * mean_int,
        moran_i,
        geary_c,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cube_mask(n: usize, pad: usize) -> Array3<bool> {
        Array3::from_shape_fn((n + 2 * pad, n + 2 * pad, n + 2 * pad), |(z, y, x)| {
            (pad..pad + n).contains(&z)
                && (pad..pad + n).contains(&y)
                && (pad..pad + n).contains(&x)
        })
    }

    #[test]
    fn single_voxel_mesh_is_an_octahedron() {
        // One voxel at level 0.5: vertices at the 6 face-adjacent edge midpoints → regular
        // octahedron with "radius" s/2: V = (4/3) r³, A = 4√3 r².
        let mesh = mesh_from_mask(&cube_mask(1, 0), [2.0, 2.0, 2.0]);
        assert_eq!(mesh.vertices.len(), 6);
        assert_eq!(mesh.faces.len(), 8);
        let r = 1.0;
        assert!((mesh.volume() - 4.0 / 3.0 * r * r * r).abs() < 1e-12);
        assert!((mesh.area() - 4.0 * 3f64.sqrt() * r * r).abs() < 1e-12);
    }

    #[test]
    fn mesh_is_closed_and_consistently_oriented() {
        // Irregular blob with ambiguous faces: every directed edge must appear exactly once and its
        // reverse exactly once.
        let m = Array3::from_shape_fn((5, 6, 7), |(z, y, x)| {
            (x * 7 + y * 3 + z * 5) % 4 == 0 || (x + y + z) % 5 == 1
        });
        let mesh = mesh_from_mask(&m, [1.0, 1.0, 1.0]);
        let mut edges: HashMap<(u32, u32), usize> = HashMap::new();
        for f in &mesh.faces {
            for k in 0..3 {
                *edges.entry((f[k], f[(k + 1) % 3])).or_default() += 1;
            }
        }
        for (&(a, b), &c) in &edges {
            assert_eq!(c, 1, "edge {a}->{b} used {c} times");
            assert_eq!(edges.get(&(b, a)), Some(&1), "edge {a}->{b} has no twin");
        }
    }

    #[test]
    fn big_cube_volume_and_hull() {
        // n³ voxel cube: mesh = cube of side n with its 12 edges and 8 corners bevelled:
        // V = n³ − 3n·(1/2)·(1/2)·... computed directly: cube of side n minus edge prisms
        // (cross-section right triangle with legs 1/2: area 1/8) minus corner pieces.
        let n = 6usize;
        let mesh = mesh_from_mask(&cube_mask(n, 1), [1.0, 1.0, 1.0]);
        let nf = n as f64;
        // Bevel: 12 edges, each a prism of length (n − 1) and cross-section 1/8, plus 8 corner
        // tetrahedra-like pieces of volume 1/6·(1/2)³·... (= 1/48 each, corner cut by the triangle).
        let expected =
            nf * nf * nf - 12.0 * (nf - 1.0) / 8.0 - 8.0 * (1.0 / 8.0 - 1.0 / 48.0) + 0.0;
        // The corner region of the mesh: a unit-half cube (1/8) with the corner tetrahedron kept
        // (1/48) → removed volume 1/8 − 1/48; plus the three half-prisms meeting at it are already
        // counted in the edges over length n − 1.
        assert!(
            (mesh.volume() - expected).abs() < 1e-9,
            "{} vs {expected}",
            mesh.volume()
        );
        let hull = convex_hull(&mesh.vertices).unwrap();
        assert!(
            (hull.volume - mesh.volume()).abs() < 1e-4 * mesh.volume(),
            "convex shape: hull = mesh"
        );
        assert!((hull.area - mesh.area()).abs() < 1e-4 * mesh.area());
    }

    #[test]
    fn hull_of_random_points_contains_all_and_matches_box() {
        let mut pts = Vec::new();
        for i in 0..500u64 {
            pts.push([
                jitter(i * 3) * 10.0,
                jitter(i * 3 + 1) * 4.0,
                jitter(i * 3 + 2) * 2.0,
            ]);
        }
        // Add the 8 box corners: hull must be the box.
        for c in 0..8 {
            pts.push([
                if c & 1 == 0 { -5.0 } else { 5.0 },
                if c & 2 == 0 { -2.0 } else { 2.0 },
                if c & 4 == 0 { -1.0 } else { 1.0 },
            ]);
        }
        let h = convex_hull(&pts).unwrap();
        assert!((h.volume - 80.0).abs() < 1e-4, "{}", h.volume);
        assert!(
            (h.area - 2.0 * (40.0 + 20.0 + 8.0)).abs() < 1e-4,
            "{}",
            h.area
        );
    }

    #[test]
    fn eigenvalues_and_ellipsoid_area() {
        let e = symmetric_eigenvalues([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 5.0]]);
        assert!(
            (e[0] - 5.0).abs() < 1e-12 && (e[1] - 3.0).abs() < 1e-12 && (e[2] - 1.0).abs() < 1e-12
        );
        // Sphere: 4π r².
        assert!((ellipsoid_area(2.0, 2.0, 2.0) - 16.0 * std::f64::consts::PI).abs() < 1e-9);
        // Triaxial a=3, b=2, c=1: the IBSI series evaluated independently with numpy's `legval`
        // (same 21 terms) gives 52.81348101202416. Note the true area is 48.882 (numerical
        // quadrature): the series as printed in the IBSI manual over-estimates it, and the reference
        // values were computed with the series, so it is kept as defined.
        let tri = ellipsoid_area(3.0, 2.0, 1.0);
        assert!((tri - 52.81348101202416).abs() < 1e-9, "{tri}");
    }

    #[test]
    fn fft_moran_geary_equal_bruteforce() {
        let img = Array3::from_shape_fn((4, 5, 6), |(z, y, x)| {
            ((x * 13 + y * 7 + z * 3) % 11) as f64 + 0.1 * z as f64
        });
        let mask = Array3::from_shape_fn((4, 5, 6), |(z, y, x)| (x + 2 * y + z) % 3 != 0 && x > 0);
        let sp = [2.0, 0.7, 0.9];
        let (i1, c1) = moran_geary(&img, &mask, sp);
        let (i2, c2) = moran_geary_bruteforce(&img, &mask, sp);
        assert!((i1 - i2).abs() < 1e-10, "{i1} vs {i2}");
        assert!((c1 - c2).abs() < 1e-10, "{c1} vs {c2}");
        // Wider than one lane block (x extent 41 → FFT size 81), odd sizes on every axis.
        let img = Array3::from_shape_fn((3, 7, 43), |(z, y, x)| {
            ((x * 5 + y * 11 + z * 7) % 13) as f64 - 0.3 * x as f64
        });
        let mask = Array3::from_shape_fn((3, 7, 43), |(z, y, x)| {
            (1..=41).contains(&x) && (x * y + z) % 4 != 1
        });
        let (i1, c1) = moran_geary(&img, &mask, sp);
        let (i2, c2) = moran_geary_bruteforce(&img, &mask, sp);
        assert!((i1 - i2).abs() < 1e-10, "{i1} vs {i2}");
        assert!((c1 - c2).abs() < 1e-10, "{c1} vs {c2}");
        assert_eq!(fast_fft_size(81), 81);
        assert_eq!(fast_fft_size(197), 200);
        assert_eq!(fast_fft_size(7), 8);
    }
}
