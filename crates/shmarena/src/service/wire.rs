//! The one message of the service protocol (server to client), encoded and decoded without I/O.
//! docs/DESIGN.md, "Service protocol", is the byte-by-byte description.

/// The first 8 bytes of every answer.
pub const MAGIC: [u8; 8] = *b"SHMASVC\0";
/// The protocol version this build speaks (bytes 8..10 of an answer).
pub const PROTOCOL_VERSION: u16 = 1;
/// Length of an answer in bytes.
pub const MESSAGE_LEN: usize = 64;

/// `status`: the descriptors are attached.
pub(crate) const STATUS_OK: u16 = 0;
/// `status`: the server refused the client's credentials; no descriptors.
pub(crate) const STATUS_REFUSED: u16 = 1;

/// `flags` bit 0: every archived entry was validated by the builder in the publishing process
/// (the arena was built there, not loaded from an image), so a reader may skip bytecheck.
pub(crate) const FLAG_BUILDER_VALIDATED: u32 = 1;

/// A decoded answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) version: u16,
    pub(crate) status: u16,
    pub(crate) flags: u32,
    pub(crate) server_uid: u32,
    pub(crate) client_uid: u32,
    pub(crate) generation: u64,
    pub(crate) arena_id: [u8; 16],
    pub(crate) arena_len: u64,
}

/// Why bytes are not an answer this build understands.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WireError {
    /// Fewer than the 10 bytes that carry the magic and the version.
    Short(usize),
    BadMagic,
    Version(u16),
    /// A version-1 answer shorter than [`MESSAGE_LEN`].
    Truncated(usize),
    /// Reserved bytes are not zero, or the status is unknown.
    Malformed(String),
}

impl Message {
    pub(crate) fn encode(&self) -> [u8; MESSAGE_LEN] {
        let mut b = [0u8; MESSAGE_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&self.status.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..20].copy_from_slice(&self.server_uid.to_le_bytes());
        b[20..24].copy_from_slice(&self.client_uid.to_le_bytes());
        b[24..32].copy_from_slice(&self.generation.to_le_bytes());
        b[32..48].copy_from_slice(&self.arena_id);
        b[48..56].copy_from_slice(&self.arena_len.to_le_bytes());
        b
    }

    /// Decodes the first `len` bytes of `b`: magic first, then version, then the rest.
    pub(crate) fn decode(b: &[u8]) -> Result<Message, WireError> {
        if b.len() < 10 {
            if b.len() >= 8 && b[..8] != MAGIC {
                return Err(WireError::BadMagic);
            }
            return Err(WireError::Short(b.len()));
        }
        if b[..8] != MAGIC {
            return Err(WireError::BadMagic);
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let version = u16_at(8);
        if version != PROTOCOL_VERSION {
            return Err(WireError::Version(version));
        }
        if b.len() < MESSAGE_LEN {
            return Err(WireError::Truncated(b.len()));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let status = u16_at(10);
        if status != STATUS_OK && status != STATUS_REFUSED {
            return Err(WireError::Malformed(format!("unknown status {status}")));
        }
        if b[56..64].iter().any(|&x| x != 0) {
            return Err(WireError::Malformed(
                "reserved bytes 56..64 are not zero".into(),
            ));
        }
        Ok(Message {
            version,
            status,
            flags: u32_at(12),
            server_uid: u32_at(16),
            client_uid: u32_at(20),
            generation: u64_at(24),
            arena_id: b[32..48].try_into().expect("16 bytes"),
            arena_len: u64_at(48),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message {
            version: PROTOCOL_VERSION,
            status: STATUS_OK,
            flags: FLAG_BUILDER_VALIDATED,
            server_uid: 1000,
            client_uid: 1001,
            generation: 7,
            arena_id: [0xab; 16],
            arena_len: 4096,
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let m = sample();
        let b = m.encode();
        assert_eq!(&b[0..8], b"SHMASVC\0");
        assert_eq!(&b[8..10], &[1, 0]);
        assert_eq!(&b[24..32], &7u64.to_le_bytes());
        assert_eq!(Message::decode(&b), Ok(m));
    }

    #[test]
    fn rejects() {
        let b = sample().encode();
        assert_eq!(Message::decode(&b[..5]), Err(WireError::Short(5)));
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(Message::decode(&bad), Err(WireError::BadMagic));
        let mut v2 = b;
        v2[8] = 2;
        // A version mismatch is reported even when the rest has another length.
        assert_eq!(Message::decode(&v2[..10]), Err(WireError::Version(2)));
        assert_eq!(Message::decode(&b[..40]), Err(WireError::Truncated(40)));
        let mut st = b;
        st[10] = 9;
        assert!(matches!(Message::decode(&st), Err(WireError::Malformed(_))));
        let mut res = b;
        res[60] = 1;
        assert!(matches!(
            Message::decode(&res),
            Err(WireError::Malformed(_))
        ));
    }
}
