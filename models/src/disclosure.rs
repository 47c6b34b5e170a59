//! Disclosure guard for releasing cross-product matrices (X'WX, X'X).
//!
//! A site that releases a p × p cross-product of n rows with p close to n lets the receiver
//! solve back for (functions of) individual rows. DataSHIELD's `glmDS` refuses a fit when the
//! number of parameters exceeds `nfilter.glm` (default 0.33) times the number of rows; this is
//! the same rule, with the ratio taken from the site's policy.
//!
//! Aggregator rule when a site refuses (implemented by the drivers in this crate): the study
//! **fails** with [`crate::ModelsError::DisclosureRefused`] naming the site, the fit and the
//! limit. Nothing is excluded silently: the operator either drops the site from the study
//! explicitly (a new study without it) or reduces the number of features, and the report says
//! which.

/// True when a site may release a cross-product for `p_params` parameters (features plus
/// intercept) over `n_rows` rows with non-zero weight: `p_params ≤ max_params_per_row · n_rows`.
/// `f64::INFINITY` disables the guard; NaN or a non-positive ratio refuses everything except
/// `p_params == 0`.
pub fn cross_product_allowed(p_params: usize, n_rows: usize, max_params_per_row: f64) -> bool {
    if p_params == 0 || max_params_per_row == f64::INFINITY {
        return true;
    }
    if max_params_per_row.is_nan() || max_params_per_row <= 0.0 {
        return false;
    }
    (p_params as f64) <= max_params_per_row * n_rows as f64
}

#[cfg(test)]
mod tests {
    use super::cross_product_allowed;

    #[test]
    fn datashield_like_ratio() {
        // DataSHIELD default 0.33: 10 parameters need at least 31 rows (10 ≤ 0.33·31 = 10.23).
        assert!(cross_product_allowed(10, 31, 0.33));
        assert!(!cross_product_allowed(10, 30, 0.33));
        assert!(!cross_product_allowed(1, 100, 0.0));
        assert!(!cross_product_allowed(1, 100, f64::NAN));
        assert!(cross_product_allowed(0, 0, 0.33));
        assert!(cross_product_allowed(57, 10, f64::INFINITY));
    }
}
