//! Logits as the caller holds them, the per-row results, and exact half-precision conversions.

/// Logits as the caller holds them.
#[derive(Clone, Copy)]
pub enum Logits<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    /// bfloat16 bit patterns.
    Bf16(&'a [u16]),
    /// IEEE float16 bit patterns.
    F16(&'a [u16]),
}

impl Logits<'_> {
    pub fn len(&self) -> usize {
        match self {
            Logits::F32(s) => s.len(),
            Logits::F64(s) => s.len(),
            Logits::Bf16(s) | Logits::F16(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per-row results, each `[rows]`. Masked rows and rows without a usable logit hold NaN.
#[derive(Debug, Clone, Default)]
pub struct TokenStats {
    pub logp: Vec<f64>,
    pub mu: Vec<f64>,
    pub sigma: Vec<f64>,
    /// Log-probability of the most likely token (`max - logsumexp`).
    pub max_logp: Vec<f64>,
}

/// bfloat16 bits to float32 (exact).
#[inline(always)]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// IEEE float16 bits to float32 (exact, subnormals, infinities and NaN included), branch-free so
/// it vectorises: shift the exponent and mantissa into place and rescale by 2^112, which also
/// normalises subnormals; an all-ones exponent becomes float32's all-ones exponent.
#[inline(always)]
pub fn f16_to_f32(bits: u16) -> f32 {
    let h = bits as u32;
    let sign = (h & 0x8000) << 16;
    let magnitude = (h & 0x7fff) << 13;
    let scaled = f32::from_bits(magnitude) * f32::from_bits(0x7780_0000); // 2^112
    let is_special = (h & 0x7c00) == 0x7c00;
    let special = 0x7f80_0000 | magnitude;
    let body = if is_special {
        special
    } else {
        scaled.to_bits()
    };
    f32::from_bits(sign | body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_conversions_are_exact() {
        for bits in 0..=u16::MAX {
            let f = f16_to_f32(bits);
            let sign = if bits & 0x8000 != 0 { -1.0f64 } else { 1.0 };
            let exp = ((bits >> 10) & 0x1f) as i32;
            let man = (bits & 0x3ff) as f64;
            let expect = match exp {
                0 => sign * man * 2f64.powi(-24),
                31 if man == 0.0 => sign * f64::INFINITY,
                31 => f64::NAN,
                _ => sign * (1.0 + man / 1024.0) * 2f64.powi(exp - 15),
            };
            if expect.is_nan() {
                assert!(f.is_nan());
            } else {
                assert_eq!(f as f64, expect, "bits {bits:#06x}");
            }
        }
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xff80), f32::NEG_INFINITY);
    }
}
