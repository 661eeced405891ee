//! Bounds-checked big-endian field reads shared by the decoders. A field that runs past
//! the end of the data reads as zero (its missing bytes zero), which is how the decoders
//! implement "fields that did not fit read as zero"; nothing here can panic.

use super::ScsiError;

pub(crate) fn bytes_at<const N: usize>(data: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = data.get(at..) {
        let n = src.len().min(N);
        out[..n].copy_from_slice(&src[..n]);
    }
    out
}

pub(crate) fn u8_at(data: &[u8], at: usize) -> u8 {
    data.get(at).copied().unwrap_or(0)
}

pub(crate) fn u16_at(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(bytes_at(data, at))
}

pub(crate) fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes_at(data, at))
}

pub(crate) fn u64_at(data: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes_at(data, at))
}

/// `data[start..end]` clipped to the data; empty when `start` is past the end.
pub(crate) fn slice_at(data: &[u8], start: usize, end: usize) -> &[u8] {
    let end = end.min(data.len());
    data.get(start..end).unwrap_or(&[])
}

/// Errors with [`ScsiError::Truncated`] when `data` is shorter than `needed`.
pub(crate) fn require(what: &'static str, data: &[u8], needed: usize) -> Result<(), ScsiError> {
    if data.len() < needed {
        return Err(ScsiError::Truncated {
            what,
            needed,
            got: data.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_zero_filled() {
        let data = [0x12, 0x34, 0x56];
        assert_eq!(u16_at(&data, 1), 0x3456);
        assert_eq!(u32_at(&data, 1), 0x3456_0000);
        assert_eq!(u64_at(&data, 3), 0);
        assert_eq!(u8_at(&data, 100), 0);
        assert_eq!(slice_at(&data, 2, 10), &[0x56]);
        assert_eq!(slice_at(&data, 5, 10), &[] as &[u8]);
        assert_eq!(slice_at(&data, 2, 1), &[] as &[u8]);
    }
}
