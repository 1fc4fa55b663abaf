//! The messages of the service protocol (server to client), encoded and decoded without I/O:
//! the 64-byte answer, then, if its flags say so, the trust rows.
//! docs/DESIGN.md, "Service protocol", is the byte-by-byte description.

use crate::trust::Row;

/// The first 8 bytes of every answer.
pub const MAGIC: [u8; 8] = *b"SHMASVC\0";
/// The protocol version this build speaks (bytes 8..10 of an answer).
pub const PROTOCOL_VERSION: u16 = 2;
/// Length of an answer in bytes.
pub const MESSAGE_LEN: usize = 64;

/// `status`: the descriptors are attached.
pub(crate) const STATUS_OK: u16 = 0;
/// `status`: the server refused the client's credentials; no descriptors.
pub(crate) const STATUS_REFUSED: u16 = 1;

/// `flags` bit 0: the trust rows follow the answer (the publisher's build identity, then
/// `row_count` rows of (entry index, type digest)).
pub(crate) const FLAG_TRUST_ROWS: u32 = 1;
/// Length of the build identity that starts the trust rows.
pub(crate) const BUILD_ID_LEN: usize = 16;
/// Length of one trust row: entry index (u32) and type digest (u128).
pub(crate) const ROW_LEN: usize = 20;
/// The most rows a client accepts (more is a protocol error).
pub(crate) const MAX_ROWS: u32 = 1 << 22;

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
    /// Number of trust rows that follow (with [`FLAG_TRUST_ROWS`]).
    pub(crate) row_count: u32,
}

/// Encodes the trust rows that follow an answer: `build_id`, then each row.
pub(crate) fn encode_rows(build_id: &[u8; 16], rows: &[Row]) -> Vec<u8> {
    let mut b = Vec::with_capacity(BUILD_ID_LEN + rows.len() * ROW_LEN);
    b.extend_from_slice(build_id);
    for (i, d) in rows {
        b.extend_from_slice(&i.to_le_bytes());
        b.extend_from_slice(&d.to_le_bytes());
    }
    b
}

/// Decodes [`encode_rows`]: the build identity and the rows (`b` has exactly
/// `BUILD_ID_LEN + n * ROW_LEN` bytes).
pub(crate) fn decode_rows(b: &[u8]) -> Option<([u8; 16], Vec<Row>)> {
    let id: [u8; 16] = b.get(..BUILD_ID_LEN)?.try_into().ok()?;
    let rest = &b[BUILD_ID_LEN..];
    if rest.len() % ROW_LEN != 0 {
        return None;
    }
    let rows = rest
        .chunks_exact(ROW_LEN)
        .map(|r| {
            (
                u32::from_le_bytes(r[..4].try_into().expect("4 bytes")),
                u128::from_le_bytes(r[4..].try_into().expect("16 bytes")),
            )
        })
        .collect();
    Some((id, rows))
}

/// Why bytes are not an answer this build understands.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WireError {
    /// Fewer than the 10 bytes that carry the magic and the version.
    Short(usize),
    BadMagic,
    Version(u16),
    /// An answer of this version shorter than [`MESSAGE_LEN`].
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
        b[56..60].copy_from_slice(&self.row_count.to_le_bytes());
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
        if b[60..64].iter().any(|&x| x != 0) {
            return Err(WireError::Malformed(
                "reserved bytes 60..64 are not zero".into(),
            ));
        }
        let flags = u32_at(12);
        if flags & !FLAG_TRUST_ROWS != 0 {
            return Err(WireError::Malformed(format!("unknown flags {flags:#x}")));
        }
        let row_count = u32_at(56);
        if row_count > MAX_ROWS || (row_count != 0 && flags & FLAG_TRUST_ROWS == 0) {
            return Err(WireError::Malformed(format!(
                "{row_count} trust rows with flags {flags:#x}"
            )));
        }
        Ok(Message {
            version,
            status,
            flags,
            server_uid: u32_at(16),
            client_uid: u32_at(20),
            generation: u64_at(24),
            arena_id: b[32..48].try_into().expect("16 bytes"),
            arena_len: u64_at(48),
            row_count,
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
            flags: FLAG_TRUST_ROWS,
            server_uid: 1000,
            client_uid: 1001,
            generation: 7,
            arena_id: [0xab; 16],
            arena_len: 4096,
            row_count: 3,
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let m = sample();
        let b = m.encode();
        assert_eq!(&b[0..8], b"SHMASVC\0");
        assert_eq!(&b[8..10], &[2, 0]);
        assert_eq!(&b[56..60], &3u32.to_le_bytes());
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
        let mut v1 = b;
        v1[8] = 1;
        // A version mismatch is reported even when the rest has another length.
        assert_eq!(Message::decode(&v1[..10]), Err(WireError::Version(1)));
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
        let mut no_flag = b;
        no_flag[12] = 0;
        assert!(matches!(
            Message::decode(&no_flag),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn rows_round_trip() {
        let rows = vec![(0, 1u128), (7, u128::MAX)];
        let b = encode_rows(&[9; 16], &rows);
        assert_eq!(b.len(), BUILD_ID_LEN + 2 * ROW_LEN);
        assert_eq!(decode_rows(&b), Some(([9; 16], rows)));
        assert_eq!(decode_rows(&b[..b.len() - 1]), None);
    }
}
