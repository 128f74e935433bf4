//! The little geometry dlib's face code uses, with dlib's conventions:
//! rectangles are inclusive (`width = right − left + 1`), a float rectangle
//! becomes an integer one by rounding half away from zero (`std::lround`),
//! and a float point becomes an integer one by `floor(x + 0.5)`.

/// An integer rectangle with inclusive corners (dlib's `rectangle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub left: i64,
    pub top: i64,
    pub right: i64,
    pub bottom: i64,
}

impl Rect {
    pub fn new(left: i64, top: i64, right: i64, bottom: i64) -> Self {
        Self { left, top, right, bottom }
    }
    /// A rectangle of `width` × `height` at the origin.
    pub fn sized(width: i64, height: i64) -> Self {
        Self::new(0, 0, width - 1, height - 1)
    }
    pub fn is_empty(&self) -> bool {
        self.top > self.bottom || self.left > self.right
    }
    pub fn width(&self) -> i64 {
        if self.is_empty() { 0 } else { self.right - self.left + 1 }
    }
    pub fn height(&self) -> i64 {
        if self.is_empty() { 0 } else { self.bottom - self.top + 1 }
    }
    pub fn area(&self) -> i64 {
        self.width() * self.height()
    }
    pub fn intersect(&self, o: &Rect) -> Rect {
        Rect::new(self.left.max(o.left), self.top.max(o.top), self.right.min(o.right), self.bottom.min(o.bottom))
    }
    /// The smallest rectangle containing both (dlib's `operator+`).
    pub fn union(&self, o: &Rect) -> Rect {
        if o.is_empty() {
            return *self;
        }
        if self.is_empty() {
            return *o;
        }
        Rect::new(self.left.min(o.left), self.top.min(o.top), self.right.max(o.right), self.bottom.max(o.bottom))
    }
    pub fn contains(&self, x: i64, y: i64) -> bool {
        x >= self.left && x <= self.right && y >= self.top && y <= self.bottom
    }
    pub fn translate(&self, dx: i64, dy: i64) -> Rect {
        Rect::new(self.left + dx, self.top + dy, self.right + dx, self.bottom + dy)
    }
    pub fn to_drect(self) -> DRect {
        DRect::new(self.left as f64, self.top as f64, self.right as f64, self.bottom as f64)
    }
}

/// A float rectangle (dlib's `drectangle`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DRect {
    pub l: f64,
    pub t: f64,
    pub r: f64,
    pub b: f64,
}

impl DRect {
    pub fn new(l: f64, t: f64, r: f64, b: f64) -> Self {
        Self { l, t, r, b }
    }
    /// dlib's default (empty) `drectangle`.
    pub fn empty() -> Self {
        Self::new(0.0, 0.0, -1.0, -1.0)
    }
    pub fn is_empty(&self) -> bool {
        self.t > self.b || self.l > self.r
    }
    pub fn width(&self) -> f64 {
        if self.is_empty() { 0.0 } else { self.r - self.l + 1.0 }
    }
    pub fn height(&self) -> f64 {
        if self.is_empty() { 0.0 } else { self.b - self.t + 1.0 }
    }
    pub fn area(&self) -> f64 {
        self.width() * self.height()
    }
    pub fn center(&self) -> [f64; 2] {
        [(self.l + self.r) / 2.0, (self.t + self.b) / 2.0]
    }
    /// A rectangle of `width` × `height` centred on `p` (dlib's `centered_drect`).
    pub fn centered(p: [f64; 2], width: f64, height: f64) -> Self {
        let (w, h) = (width - 1.0, height - 1.0);
        Self::new(p[0] - w / 2.0, p[1] - h / 2.0, p[0] + w / 2.0, p[1] + h / 2.0)
    }
    pub fn grow(&self, g: f64) -> Self {
        Self::new(self.l - g, self.t - g, self.r + g, self.b + g)
    }
    pub fn intersect(&self, o: &DRect) -> Self {
        Self::new(self.l.max(o.l), self.t.max(o.t), self.r.min(o.r), self.b.min(o.b))
    }
    /// Grows the rectangle to include `p`.
    pub fn include(&self, p: [f64; 2]) -> Self {
        if self.is_empty() {
            return Self::new(p[0], p[1], p[0], p[1]);
        }
        Self::new(self.l.min(p[0]), self.t.min(p[1]), self.r.max(p[0]), self.b.max(p[1]))
    }
    pub fn translate(&self, dx: f64, dy: f64) -> Self {
        Self::new(self.l + dx, self.t + dy, self.r + dx, self.b + dy)
    }
    pub fn corners(&self) -> [[f64; 2]; 4] {
        [[self.l, self.t], [self.r, self.t], [self.l, self.b], [self.r, self.b]]
    }
    /// dlib's `drectangle → rectangle` conversion (`std::lround` per side).
    pub fn round(&self) -> Rect {
        Rect::new(self.l.round() as i64, self.t.round() as i64, self.r.round() as i64, self.b.round() as i64)
    }
}

/// An affine map `p ↦ M·p + t`, with M row-major.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    pub m: [f64; 4],
    pub t: [f64; 2],
}

impl Affine {
    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        [self.m[0] * p[0] + self.m[1] * p[1] + self.t[0], self.m[2] * p[0] + self.m[3] * p[1] + self.t[1]]
    }

    /// The least-squares similarity transform (rotation, uniform scale,
    /// translation) taking `from` to `to`: Umeyama's estimate, which in 2-D
    /// has this closed form.
    pub fn similarity(from: &[[f64; 2]], to: &[[f64; 2]]) -> Affine {
        let n = from.len() as f64;
        let mean = |pts: &[[f64; 2]]| {
            let s = pts.iter().fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
            [s[0] / n, s[1] / n]
        };
        let (mf, mt) = (mean(from), mean(to));
        let (mut dot, mut cross, mut norm) = (0.0, 0.0, 0.0);
        for (p, q) in from.iter().zip(to) {
            let (px, py) = (p[0] - mf[0], p[1] - mf[1]);
            let (qx, qy) = (q[0] - mt[0], q[1] - mt[1]);
            dot += qx * px + qy * py;
            cross += qy * px - qx * py;
            norm += px * px + py * py;
        }
        let (a, b) = if norm == 0.0 { (1.0, 0.0) } else { (dot / norm, cross / norm) };
        let m = [a, -b, b, a];
        let t = [mt[0] - (m[0] * mf[0] + m[1] * mf[1]), mt[1] - (m[2] * mf[0] + m[3] * mf[1])];
        Affine { m, t }
    }

    /// The affine map taking three points exactly onto three others.
    pub fn from_three(from: [[f64; 2]; 3], to: [[f64; 2]; 3]) -> Affine {
        // Solve [x y 1]·coeffs = target for each output coordinate.
        let (a, b, c) = (from[0], from[1], from[2]);
        let det = a[0] * (b[1] - c[1]) - a[1] * (b[0] - c[0]) + (b[0] * c[1] - b[1] * c[0]);
        let solve = |v: [f64; 3]| {
            let dx = v[0] * (b[1] - c[1]) - a[1] * (v[1] - v[2]) + (v[1] * c[1] - b[1] * v[2]);
            let dy = a[0] * (v[1] - v[2]) - v[0] * (b[0] - c[0]) + (b[0] * v[2] - v[1] * c[0]);
            let d1 = a[0] * (b[1] * v[2] - v[1] * c[1]) - a[1] * (b[0] * v[2] - v[1] * c[0])
                + v[0] * (b[0] * c[1] - b[1] * c[0]);
            [dx / det, dy / det, d1 / det]
        };
        let x = solve([to[0][0], to[1][0], to[2][0]]);
        let y = solve([to[0][1], to[1][1], to[2][1]]);
        Affine { m: [x[0], x[1], y[0], y[1]], t: [x[2], y[2]] }
    }
}

/// The linear part of the similarity transform between two shapes given as
/// flat `x0 y0 x1 y1 …` vectors (dlib's `find_tform_between_shapes`).
pub fn similarity_linear(from: &[f32], to: &[f32]) -> [f64; 4] {
    if from.len() <= 2 {
        return [1.0, 0.0, 0.0, 1.0];
    }
    let pts = |s: &[f32]| s.chunks_exact(2).map(|c| [c[0] as f64, c[1] as f64]).collect::<Vec<_>>();
    Affine::similarity(&pts(from), &pts(to)).m
}

/// Rotates `p` about `center` by `angle` radians.
pub fn rotate(center: [f64; 2], p: [f64; 2], angle: f64) -> [f64; 2] {
    let (s, c) = angle.sin_cos();
    let (x, y) = (p[0] - center[0], p[1] - center[1]);
    [c * x - s * y + center[0], s * x + c * y + center[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_recovers_a_known_transform() {
        let truth = Affine { m: [1.5 * 0.8, -1.5 * 0.6, 1.5 * 0.6, 1.5 * 0.8], t: [10.0, -4.0] };
        let from = [[0.0, 0.0], [3.0, 1.0], [-2.0, 5.0], [7.0, 7.0]];
        let to: Vec<_> = from.iter().map(|p| truth.apply(*p)).collect();
        let est = Affine::similarity(&from, &to);
        for i in 0..4 {
            assert!((est.m[i] - truth.m[i]).abs() < 1e-12);
        }
        assert!((est.t[0] - 10.0).abs() < 1e-12 && (est.t[1] + 4.0).abs() < 1e-12);
    }

    #[test]
    fn three_point_affine_is_exact() {
        let from = [[0.0, 0.0], [149.0, 0.0], [0.0, 149.0]];
        let to = [[10.0, 20.0], [200.0, 40.0], [-5.0, 180.0]];
        let a = Affine::from_three(from, to);
        for (f, t) in from.iter().zip(&to) {
            let p = a.apply(*f);
            assert!((p[0] - t[0]).abs() < 1e-9 && (p[1] - t[1]).abs() < 1e-9);
        }
    }

    #[test]
    fn rectangles_follow_dlib_conventions() {
        let r = Rect::new(0, 0, 9, 4);
        assert_eq!((r.width(), r.height(), r.area()), (10, 5, 50));
        assert_eq!(DRect::new(0.5, -0.5, 2.5, 1.49).round(), Rect::new(1, -1, 3, 1));
        let c = DRect::centered([40.0, 40.0], 80.0, 80.0);
        assert_eq!((c.l, c.r), (0.5, 79.5));
    }
}
