//! Digests as text: the one way the crate names bytes by their SHA-256 (components, pushes,
//! long keys and hosts).

/// `bytes` as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from_digit(u32::from(b >> 4), 16).expect("a nibble"));
        out.push(char::from_digit(u32::from(b & 0xf), 16).expect("a nibble"));
    }
    out
}

/// SHA-256 of `bytes`, as lowercase hex.
pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn digests_are_lowercase_hex() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(
            super::hex_sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
