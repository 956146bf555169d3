//! The little dense linear algebra a Gaussian process needs: a Cholesky factorisation of a
//! symmetric positive-definite matrix, triangular solves and the inverse from the factor.
//!
//! Written here rather than taken from `nalgebra`: these three loops are all the GP uses,
//! and `nalgebra` would add a large dependency tree to the crate every toucan binary links.

/// A square matrix, row-major.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Matrix {
    pub n: usize,
    pub data: Vec<f64>,
}

impl Matrix {
    pub(crate) fn zeros(n: usize) -> Self {
        Matrix {
            n,
            data: vec![0.0; n * n],
        }
    }

    #[inline]
    pub(crate) fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.n + j]
    }

    #[inline]
    pub(crate) fn set(&mut self, i: usize, j: usize, v: f64) {
        self.data[i * self.n + j] = v;
    }
}

/// The lower-triangular `L` with `L Lᵀ = a`, or `None` when `a` is not positive definite.
pub(crate) fn cholesky(a: &Matrix) -> Option<Matrix> {
    let n = a.n;
    let mut l = Matrix::zeros(n);
    for i in 0..n {
        for j in 0..=i {
            let (ri, rj) = (&l.data[i * n..i * n + j], &l.data[j * n..j * n + j]);
            let dot: f64 = ri.iter().zip(rj).map(|(x, y)| x * y).sum();
            let v = a.at(i, j) - dot;
            if i == j {
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l.set(i, i, v.sqrt());
            } else {
                l.set(i, j, v / l.at(j, j));
            }
        }
    }
    Some(l)
}

/// `x` with `L x = b`.
pub(crate) fn solve_lower(l: &Matrix, b: &[f64]) -> Vec<f64> {
    let n = l.n;
    let mut x = vec![0.0; n];
    for i in 0..n {
        let row = &l.data[i * n..i * n + i];
        let dot: f64 = row.iter().zip(&x[..i]).map(|(a, b)| a * b).sum();
        x[i] = (b[i] - dot) / l.at(i, i);
    }
    x
}

/// `x` with `Lᵀ x = b`.
pub(crate) fn solve_upper_transposed(l: &Matrix, b: &[f64]) -> Vec<f64> {
    let n = l.n;
    let mut x = b.to_vec();
    for i in (0..n).rev() {
        x[i] /= l.at(i, i);
        let xi = x[i];
        let row = &l.data[i * n..i * n + i];
        for (xj, lij) in x[..i].iter_mut().zip(row) {
            *xj -= lij * xi;
        }
    }
    x
}

/// `a⁻¹` from the factor `L` of `a`.
pub(crate) fn inverse_from_cholesky(l: &Matrix) -> Matrix {
    let n = l.n;
    // Rows of M = L⁻¹ (lower triangular), by forward substitution on the identity.
    let mut m = Matrix::zeros(n);
    for col in 0..n {
        m.set(col, col, 1.0 / l.at(col, col));
        for i in col + 1..n {
            let mut s = 0.0;
            for k in col..i {
                s += l.at(i, k) * m.at(k, col);
            }
            m.set(i, col, -s / l.at(i, i));
        }
    }
    // a⁻¹ = Mᵀ M.
    let mut inv = Matrix::zeros(n);
    for i in 0..n {
        for j in 0..=i {
            let mut s = 0.0;
            for k in i..n {
                s += m.at(k, i) * m.at(k, j);
            }
            inv.set(i, j, s);
            inv.set(j, i, s);
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd() -> Matrix {
        Matrix {
            n: 3,
            data: vec![4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0],
        }
    }

    #[test]
    fn factor_and_inverse_reproduce_the_matrix() {
        let a = spd();
        let l = cholesky(&a).unwrap();
        let inv = inverse_from_cholesky(&l);
        for i in 0..3 {
            for j in 0..3 {
                let prod: f64 = (0..3).map(|k| a.at(i, k) * inv.at(k, j)).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((prod - want).abs() < 1e-12, "({i},{j}) = {prod}");
            }
        }
        let b = [1.0, -2.0, 0.5];
        let x = solve_upper_transposed(&l, &solve_lower(&l, &b));
        for (i, bi) in b.iter().enumerate() {
            let ax: f64 = (0..3).map(|k| a.at(i, k) * x[k]).sum();
            assert!((ax - bi).abs() < 1e-12);
        }
    }

    #[test]
    fn refuses_a_matrix_that_is_not_positive_definite() {
        let a = Matrix {
            n: 2,
            data: vec![1.0, 2.0, 2.0, 1.0],
        };
        assert!(cholesky(&a).is_none());
    }
}
