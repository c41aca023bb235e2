//! Minimal hex helpers for key material. Nothing here formats a key into an
//! error message: errors name positions and lengths, never the bytes.

use zeroize::Zeroizing;

/// Why a hex string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HexError {
    /// A character that is not a hex digit, at this 0-based position (after
    /// an optional `0x` prefix).
    BadChar { position: usize },
    /// An odd number of hex digits.
    OddLength { digits: usize },
}

/// Strips an optional `0x`/`0X` prefix, as `ip xfrm` accepts.
pub(crate) fn strip_prefix(s: &str) -> &str {
    s.strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes hex digits (no prefix) into a zeroizing buffer.
pub(crate) fn decode(digits: &str) -> Result<Zeroizing<Vec<u8>>, HexError> {
    let bytes = digits.as_bytes();
    if let Some(position) = bytes.iter().position(|&c| nibble(c).is_none()) {
        return Err(HexError::BadChar { position });
    }
    if !bytes.len().is_multiple_of(2) {
        return Err(HexError::OddLength {
            digits: bytes.len(),
        });
    }
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len() / 2));
    for pair in bytes.chunks_exact(2) {
        // Both digits were checked above.
        let hi = nibble(pair[0]).unwrap_or(0);
        let lo = nibble(pair[1]).unwrap_or(0);
        out.push(hi << 4 | lo);
    }
    Ok(out)
}

/// Encodes bytes as lowercase hex into a zeroizing string.
pub(crate) fn encode(parts: &[&[u8]]) -> Zeroizing<String> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let len = parts.iter().map(|p| p.len() * 2).sum();
    let mut out = Zeroizing::new(String::with_capacity(len));
    for part in parts {
        for &b in *part {
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let bytes = decode("00ffA1").unwrap();
        assert_eq!(&bytes[..], &[0x00, 0xff, 0xa1]);
        assert_eq!(&encode(&[&bytes[..], &[0x10]])[..], "00ffa110");
        assert_eq!(decode("0g"), Err(HexError::BadChar { position: 1 }));
        assert_eq!(decode("abc"), Err(HexError::OddLength { digits: 3 }));
        assert_eq!(strip_prefix("0xab"), "ab");
        assert_eq!(strip_prefix("ab"), "ab");
    }
}
