//! LDAP messages written by hand, for test servers that answer what no
//! real server would.

/// `bytes` with a BER tag and the shortest length form.
pub fn tagged(tag: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match bytes.len() {
        len @ 0..=0x7f => out.push(len as u8),
        len @ 0x80..=0xff => out.extend([0x81, len as u8]),
        len => out.extend([0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(bytes);
    out
}

/// The message id of an LDAP request (`30 len 02 n id...`), encoded.
pub fn request_id(request: &[u8]) -> Vec<u8> {
    let start = match request[1] {
        len if len < 0x80 => 2,
        long => 2 + usize::from(long & 0x7f),
    };
    assert_eq!(request[start], 0x02, "a message id: {request:02x?}");
    let len = usize::from(request[start + 1]);
    tagged(0x02, &request[start + 2..start + 2 + len])
}
