//! CRC-32C (Castagnoli), the snapshot's checksum. The CPU computes it
//! where it has the instruction (SSE 4.2 on x86-64, the CRC extension on
//! ARMv8), at several GB/s: a load checks every byte it reads at a small
//! fraction of what decoding them costs. Elsewhere a table does it, about
//! a fifth as fast. Written here: no crate this one depends on has a
//! checksum near this fast (sha2's SHA-256 is several times slower).
//!
//! It finds damage (a flipped bit, a torn or misdirected write, a bad
//! sector), not tampering: whoever can write the snapshot can write its
//! checksums too.
//!
//! Public for the directory crate's files on disk (LDAP mirrors, kept
//! number readings), which guard against the same damage.

/// The reflected Castagnoli polynomial.
const POLYNOMIAL: u32 = 0x82f6_3b78;

/// A running checksum over bytes given in any number of pieces.
#[derive(Clone, Copy, Debug)]
pub struct Crc32c(u32);

impl Crc32c {
    pub fn new() -> Crc32c {
        Crc32c(!0)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0 = update(self.0, bytes);
    }

    pub fn value(&self) -> u32 {
        !self.0
    }
}

impl Default for Crc32c {
    fn default() -> Self {
        Crc32c::new()
    }
}

/// The checksum of `bytes` given whole.
pub fn checksum(bytes: &[u8]) -> u32 {
    let mut crc = Crc32c::new();
    crc.update(bytes);
    crc.value()
}

fn update(state: u32, bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2, checked just above.
        return unsafe { x86_64::update(state, bytes) };
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("crc") {
        // SAFETY: the CPU has the CRC extension, checked just above.
        return unsafe { aarch64::update(state, bytes) };
    }
    by_table(state, bytes)
}

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};

    /// # Safety
    /// Only on a CPU with SSE 4.2.
    #[target_feature(enable = "sse4.2")]
    pub(super) unsafe fn update(state: u32, bytes: &[u8]) -> u32 {
        let mut words = bytes.chunks_exact(8);
        let mut wide = u64::from(state);
        for word in &mut words {
            wide = _mm_crc32_u64(wide, u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        // The instruction's result fits 32 bits; the upper half is zero.
        let mut state = wide as u32;
        for &byte in words.remainder() {
            state = _mm_crc32_u8(state, byte);
        }
        state
    }
}

#[cfg(target_arch = "aarch64")]
mod aarch64 {
    use std::arch::aarch64::{__crc32cb, __crc32cd};

    /// # Safety
    /// Only on a CPU with the CRC extension.
    #[target_feature(enable = "crc")]
    pub(super) unsafe fn update(mut state: u32, bytes: &[u8]) -> u32 {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            state = __crc32cd(state, u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        for &byte in words.remainder() {
            state = __crc32cb(state, byte);
        }
        state
    }
}

/// `TABLES[0][b]`: the checksum step for byte `b`; `TABLES[k][b]`: for
/// byte `b` followed by `k` zero bytes, so eight bytes take one step.
static TABLES: [[u32; 256]; 8] = tables();

const fn tables() -> [[u32; 256]; 8] {
    let mut tables = [[0u32; 256]; 8];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLYNOMIAL
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][byte] = crc;
        byte += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut byte = 0;
        while byte < 256 {
            let before = tables[k - 1][byte];
            tables[k][byte] = (before >> 8) ^ tables[0][(before & 0xff) as usize];
            byte += 1;
        }
        k += 1;
    }
    tables
}

fn by_table(mut state: u32, bytes: &[u8]) -> u32 {
    let t = &TABLES;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let low = state ^ u32::from_le_bytes(word[..4].try_into().expect("4 bytes"));
        let high = u32::from_le_bytes(word[4..].try_into().expect("4 bytes"));
        state = t[7][(low & 0xff) as usize]
            ^ t[6][(low >> 8 & 0xff) as usize]
            ^ t[5][(low >> 16 & 0xff) as usize]
            ^ t[4][(low >> 24) as usize]
            ^ t[3][(high & 0xff) as usize]
            ^ t[2][(high >> 8 & 0xff) as usize]
            ^ t[1][(high >> 16 & 0xff) as usize]
            ^ t[0][(high >> 24) as usize];
    }
    for &byte in words.remainder() {
        state = (state >> 8) ^ t[0][((state ^ u32::from(byte)) & 0xff) as usize];
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published check values of CRC-32C (RFC 3720, appendix B.4).
    #[test]
    fn known_values() {
        assert_eq!(checksum(b"123456789"), 0xe306_9283);
        assert_eq!(checksum(&[0; 32]), 0x8a91_36aa);
        assert_eq!(checksum(&[0xff; 32]), 0x62a8_ab43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(checksum(&ascending), 0x46dd_794e);
        assert_eq!(checksum(b""), 0);
    }

    /// The CPU's instruction and the table agree, for any length and
    /// alignment, and bytes given in pieces sum as given whole.
    #[test]
    fn every_way_agrees() {
        let bytes: Vec<u8> = (0..4099u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..9 {
            for end in [start, start + 1, start + 7, start + 8, start + 63, 4099] {
                let piece = &bytes[start..end];
                assert_eq!(!by_table(!0, piece), checksum(piece), "{start}..{end}");
            }
        }
        let mut pieces = Crc32c::new();
        for chunk in bytes.chunks(13) {
            pieces.update(chunk);
        }
        assert_eq!(pieces.value(), checksum(&bytes));
    }
}
