//! Nix's base-32: the encoding of the hash part of store paths and of `sha256:<base32>`
//! hashes. This module owns the alphabet and the bit order; nothing else in the crate
//! should know them.
//!
//! It is not RFC 4648 base32: the alphabet drops `e o u t` (so hashes spell no words),
//! and the bytes are read from the *end*, least significant bit first, so the first
//! character of the text holds the top bits of the last byte.

/// The 32 digits, in value order.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Maps an ASCII byte to its digit value, or `0xff` for bytes outside the alphabet.
/// A table, because decoding sits on the path of every store path we validate.
const DECODE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Why a text is not Nix base-32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid nixbase32 character {byte:#04x} at byte {at}")]
    InvalidChar { at: usize, byte: u8 },
    /// The text's length leaves spare bits and they are not zero: no byte string encodes
    /// to it, so accepting it would make two texts decode to the same bytes.
    #[error("nixbase32 text has non-zero padding bits")]
    NonZeroPadding,
}

/// The length of the text that encodes `bytes` bytes.
pub const fn encoded_len(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        (bytes * 8 - 1) / 5 + 1
    }
}

/// The number of bytes that a text of `chars` characters decodes to.
pub const fn decoded_len(chars: usize) -> usize {
    chars * 5 / 8
}

/// Whether `byte` is one of the 32 digits.
pub fn is_digit(byte: u8) -> bool {
    DECODE[byte as usize] != 0xff
}

/// Encodes `bytes` the way Nix prints hashes (`printHash32`).
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        // Bits of a digit may straddle two bytes; the `>> 8 - j` part brings in the
        // low bits of the next byte when there is one.
        let low = bytes.get(i).map_or(0, |&x| u16::from(x) >> j);
        let high = bytes.get(i + 1).map_or(0, |&x| u16::from(x) << (8 - j));
        out.push(char::from(ALPHABET[usize::from((low | high) & 0x1f)]));
    }
    out
}

/// Decodes Nix base-32 text (the inverse of [`encode`]).
pub fn decode(text: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = vec![0u8; decoded_len(text.len())];
    for (n, &byte) in text.iter().rev().enumerate() {
        let digit = DECODE[usize::from(byte)];
        if digit == 0xff {
            return Err(DecodeError::InvalidChar {
                at: text.len() - 1 - n,
                byte,
            });
        }
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let spill = u16::from(digit) << j;
        // The low part always lands inside the output except for the padding digit,
        // whose bits must then all be zero.
        match out.get_mut(i) {
            Some(slot) => *slot |= (spill & 0xff) as u8,
            None if spill != 0 => return Err(DecodeError::NonZeroPadding),
            None => {}
        }
        let carry = (spill >> 8) as u8;
        match out.get_mut(i + 1) {
            Some(slot) => *slot |= carry,
            None if carry != 0 => return Err(DecodeError::NonZeroPadding),
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Values printed by Nix 2.8: `nix-hash --type sha256 --to-base32 <hex>`.
    const KNOWN: &[(&str, &str)] = &[
        (
            "e0f16e93e0932f0bddfcb97d18b0648883344a1fc255a88ac21e66d67a21791b",
            "06vr45xdcrhyqa5ahmf23x5390w8cjq1hzdrzkfhnbwkw29nxwg0",
        ),
        // sha256 of the empty string.
        (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
        ),
        // `nix-hash --type sha1 --to-base32 00..01`: shows the reversed bit order.
        (
            "0000000000000000000000000000000000000001",
            "04000000000000000000000000000000",
        ),
    ];

    #[test]
    fn encodes_like_nix() {
        for (hex_text, base32) in KNOWN {
            assert_eq!(encode(&hex(hex_text)), *base32);
        }
    }

    #[test]
    fn decodes_like_nix() {
        for (hex_text, base32) in KNOWN {
            assert_eq!(decode(base32.as_bytes()).unwrap(), hex(hex_text));
        }
        // `nix-hash --type sha256 --to-base16 1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s`
        assert_eq!(
            decode(b"1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s").unwrap(),
            hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
    }

    #[test]
    fn lengths() {
        assert_eq!(encoded_len(20), 32);
        assert_eq!(encoded_len(32), 52);
        assert_eq!(encoded_len(64), 103);
        assert_eq!(decoded_len(32), 20);
        assert_eq!(decoded_len(52), 32);
        assert_eq!(encode(&[]), "");
        assert_eq!(decode(b"").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn rejects_bad_text() {
        assert_eq!(
            decode(b"0e"),
            Err(DecodeError::InvalidChar { at: 1, byte: b'e' })
        );
        // 52 chars carry 260 bits for 256: the first digit may only use its low bit.
        let mut over = b"2".to_vec();
        over.extend_from_slice(&[b'0'; 51]);
        assert_eq!(decode(&over), Err(DecodeError::NonZeroPadding));
        assert!(is_digit(b'z') && !is_digit(b'e') && !is_digit(b'A'));
    }

    proptest! {
        #[test]
        fn round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let text = encode(&bytes);
            prop_assert_eq!(text.len(), encoded_len(bytes.len()));
            prop_assert_eq!(decode(text.as_bytes()).unwrap(), bytes);
        }

        #[test]
        fn decode_never_panics(text in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode(&text);
        }
    }
}
