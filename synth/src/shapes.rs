//! Implicit shapes in millimetres: perturbed ellipsoids ("blobs": liver, lesions) and capsules
//! (vessels), with an approximate signed distance used for placement and partial-volume edges.
//!
//! Coordinates are crop-local millimetres `[x, y, z]` with the axes of the patient (LPS: x to the
//! patient's left, y posterior, z superior) and the origin at the centre of the crop.

use serde::{Deserialize, Serialize};

pub type Vec3 = [f64; 3];

pub(crate) fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
pub(crate) fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
pub(crate) fn scale(a: Vec3, s: f64) -> Vec3 {
    [a[0] * s, a[1] * s, a[2] * s]
}
pub(crate) fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
pub(crate) fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}

/// One low-frequency boundary undulation: the boundary radius along unit direction `u` (in the
/// shape's own normalised frame) is multiplied by `1 + Σ amp · sin(freq · (dir · u) + phase)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Harmonic {
    pub dir: Vec3,
    pub freq: f64,
    pub phase: f64,
    pub amp: f64,
}

/// A rotated ellipsoid with an undulating boundary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Blob {
    /// Centre (mm, crop-local).
    pub centre: Vec3,
    /// Semi-axes (mm) along the body axes.
    pub radii: Vec3,
    /// Rotation whose columns are the body axes expressed in crop-local coordinates.
    pub rotation: [[f64; 3]; 3],
    pub harmonics: Vec<Harmonic>,
}

/// Where a point lies relative to a [`Blob`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlobPoint {
    /// Approximate signed distance to the boundary in mm (negative inside), measured along the ray
    /// from the centre: exact for spheres, a good approximation for the mildly eccentric shapes used.
    pub dist: f64,
    /// Normalised radius: 0 at the centre, 1 on the boundary.
    pub q: f64,
}

impl Blob {
    fn bump(&self, u: Vec3) -> f64 {
        1.0 + self
            .harmonics
            .iter()
            .map(|h| h.amp * (h.freq * dot(h.dir, u) + h.phase).sin())
            .sum::<f64>()
    }

    /// Crop-local offset from the centre → body-frame coordinates.
    fn local_to_body(&self, d: Vec3) -> Vec3 {
        let r = &self.rotation;
        // R^T d: rows of R^T are columns of R.
        [
            r[0][0] * d[0] + r[1][0] * d[1] + r[2][0] * d[2],
            r[0][1] * d[0] + r[1][1] * d[1] + r[2][1] * d[2],
            r[0][2] * d[0] + r[1][2] * d[1] + r[2][2] * d[2],
        ]
    }

    fn body_to_local(&self, b: Vec3) -> Vec3 {
        let r = &self.rotation;
        [
            r[0][0] * b[0] + r[0][1] * b[1] + r[0][2] * b[2],
            r[1][0] * b[0] + r[1][1] * b[1] + r[1][2] * b[2],
            r[2][0] * b[0] + r[2][1] * b[1] + r[2][2] * b[2],
        ]
    }

    /// Signed distance and normalised radius of point `p`.
    pub fn eval(&self, p: Vec3) -> BlobPoint {
        let d = sub(p, self.centre);
        let b = self.local_to_body(d);
        let n = [
            b[0] / self.radii[0],
            b[1] / self.radii[1],
            b[2] / self.radii[2],
        ];
        let rho_n = norm(n);
        if rho_n < 1e-12 {
            let rmin = self.radii.iter().cloned().fold(f64::INFINITY, f64::min);
            return BlobPoint {
                dist: -rmin,
                q: 0.0,
            };
        }
        let u = scale(n, 1.0 / rho_n);
        let q = rho_n / self.bump(u);
        // Distance along the ray: |d| - (boundary radius along the ray) = |d| (1 - 1/q).
        BlobPoint {
            dist: norm(d) * (1.0 - 1.0 / q),
            q,
        }
    }

    /// An upper bound of [`Blob::eval`]'s `dist` that needs no trigonometry (the boundary radius
    /// along any ray is at least `1 - Σ|amp|` times the plain ellipsoid's). Used to skip the exact
    /// evaluation deep inside a shape.
    pub fn dist_upper_bound(&self, p: Vec3) -> f64 {
        let d = sub(p, self.centre);
        let b = self.local_to_body(d);
        let n = [
            b[0] / self.radii[0],
            b[1] / self.radii[1],
            b[2] / self.radii[2],
        ];
        let rho_n = norm(n);
        if rho_n < 1e-12 {
            return 0.0;
        }
        let shrink = 1.0 - self.harmonics.iter().map(|h| h.amp.abs()).sum::<f64>();
        norm(d) * (1.0 - shrink / rho_n)
    }

    /// Largest distance from the centre to the boundary (an upper bound).
    pub fn max_radius(&self) -> f64 {
        let rmax = self.radii.iter().cloned().fold(0.0, f64::max);
        rmax * (1.0 + self.harmonics.iter().map(|h| h.amp.abs()).sum::<f64>())
    }

    /// Boundary point in the direction `u` of the normalised body frame (`u` a unit vector).
    pub fn surface_point(&self, u: Vec3) -> Vec3 {
        let n = scale(u, self.bump(u));
        let b = [
            n[0] * self.radii[0],
            n[1] * self.radii[1],
            n[2] * self.radii[2],
        ];
        add(self.centre, self.body_to_local(b))
    }
}

/// A vessel segment: points within `radius` of the segment `a`–`b`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capsule {
    pub a: Vec3,
    pub b: Vec3,
    pub radius: f64,
}

impl Capsule {
    /// Distance from `p` to the segment axis.
    pub fn axis_distance(&self, p: Vec3) -> f64 {
        let ab = sub(self.b, self.a);
        let ap = sub(p, self.a);
        let l2 = dot(ab, ab);
        let t = if l2 > 0.0 {
            (dot(ap, ab) / l2).clamp(0.0, 1.0)
        } else {
            0.0
        };
        norm(sub(ap, scale(ab, t)))
    }

    /// Signed distance to the capsule surface (negative inside).
    pub fn dist(&self, p: Vec3) -> f64 {
        self.axis_distance(p) - self.radius
    }
}

/// `n` nearly uniform unit vectors (Fibonacci sphere), deterministic.
pub fn fibonacci_sphere(n: usize) -> Vec<Vec3> {
    let golden = std::f64::consts::PI * (3.0 - 5f64.sqrt());
    (0..n)
        .map(|i| {
            let z = 1.0 - 2.0 * (i as f64 + 0.5) / n as f64;
            let r = (1.0 - z * z).sqrt();
            let t = golden * i as f64;
            [r * t.cos(), r * t.sin(), z]
        })
        .collect()
}

/// Rotation matrix (columns = rotated axes) of the unit quaternion `(w, x, y, z)`.
pub fn rotation_from_quaternion(q: [f64; 4]) -> [[f64; 3]; 3] {
    let n = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]).sqrt();
    let [w, x, y, z] = [q[0] / n, q[1] / n, q[2] / n, q[3] / n];
    [
        [
            1.0 - 2.0 * (y * y + z * z),
            2.0 * (x * y - w * z),
            2.0 * (x * z + w * y),
        ],
        [
            2.0 * (x * y + w * z),
            1.0 - 2.0 * (x * x + z * z),
            2.0 * (y * z - w * x),
        ],
        [
            2.0 * (x * z - w * y),
            2.0 * (y * z + w * x),
            1.0 - 2.0 * (x * x + y * y),
        ],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: [[f64; 3]; 3] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

    #[test]
    fn sphere_distance_is_exact() {
        let b = Blob {
            centre: [1.0, 2.0, 3.0],
            radii: [5.0; 3],
            rotation: ID,
            harmonics: vec![],
        };
        let p = b.eval([1.0, 2.0, 10.0]);
        assert!((p.dist - 2.0).abs() < 1e-12 && (p.q - 1.4).abs() < 1e-12);
        assert!((b.eval([1.0, 0.0, 3.0]).dist + 3.0).abs() < 1e-12);
        assert_eq!(b.eval([1.0, 2.0, 3.0]).dist, -5.0);
    }

    #[test]
    fn surface_points_are_on_the_boundary() {
        let b = Blob {
            centre: [1.0, -2.0, 0.5],
            radii: [9.0, 6.0, 4.0],
            rotation: rotation_from_quaternion([0.3, -0.5, 0.7, 0.2]),
            harmonics: vec![Harmonic {
                dir: [0.0, 0.6, 0.8],
                freq: 3.0,
                phase: 0.4,
                amp: 0.05,
            }],
        };
        for u in fibonacci_sphere(50) {
            let s = b.surface_point(u);
            let e = b.eval(s);
            assert!((e.q - 1.0).abs() < 1e-9 && e.dist.abs() < 1e-9, "{e:?}");
            assert!(norm(sub(s, b.centre)) <= b.max_radius() + 1e-9);
            for t in [0.2, 0.7, 1.0, 1.3] {
                let q = add(b.centre, scale(sub(s, b.centre), t));
                assert!(b.dist_upper_bound(q) >= b.eval(q).dist - 1e-9);
            }
        }
    }

    #[test]
    fn rotation_is_orthonormal() {
        let r = rotation_from_quaternion([0.1, 0.9, -0.3, 0.4]);
        for i in 0..3 {
            for j in 0..3 {
                let d: f64 = (0..3).map(|k| r[k][i] * r[k][j]).sum();
                assert!((d - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn capsule_distance() {
        let c = Capsule {
            a: [0.0; 3],
            b: [10.0, 0.0, 0.0],
            radius: 2.0,
        };
        assert!((c.dist([5.0, 3.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!((c.dist([-3.0, 0.0, 4.0]) - 3.0).abs() < 1e-12);
    }
}
