//! TFTP packets: parsing a read request with its options (RFC 2347), and
//! building the few packets the server sends besides DATA.

pub(super) const OP_RRQ: u16 = 1;
pub(super) const OP_WRQ: u16 = 2;
pub(super) const OP_DATA: u16 = 3;
pub(super) const OP_ACK: u16 = 4;
pub(super) const OP_ERROR: u16 = 5;
pub(super) const OP_OACK: u16 = 6;
pub(super) const ERR_NOT_FOUND: u16 = 1;
pub(super) const ERR_ACCESS: u16 = 2;
pub(super) const ERR_ILLEGAL: u16 = 4;

/// The largest request we read; RRQs are a file name and a few options.
pub(super) const MAX_REQUEST: usize = 2048;

/// A parsed RRQ.
pub(super) struct ReadRequest {
    pub file: String,
    /// Sent converted to netascii (RFC 1350) rather than as it is stored.
    pub netascii: bool,
    pub blksize: Option<u16>,
    pub windowsize: Option<u16>,
    pub tsize: bool,
    pub timeout: Option<u8>,
}

pub(super) fn parse_request(packet: &[u8]) -> Result<ReadRequest, (u16, &'static str)> {
    let fields: Vec<&[u8]> = packet[2..].split(|b| *b == 0).collect();
    // The last field is empty: every field ends with a NUL.
    if fields.len() < 3 || !fields[fields.len() - 1].is_empty() {
        return Err((ERR_ILLEGAL, "malformed request"));
    }
    let file = std::str::from_utf8(fields[0]).map_err(|_| (ERR_NOT_FOUND, "File not found"))?;
    let netascii = match String::from_utf8_lossy(fields[1])
        .to_ascii_lowercase()
        .as_str()
    {
        "octet" => false,
        "netascii" => true,
        _ => return Err((ERR_ILLEGAL, "only octet and netascii modes are supported")),
    };
    let mut request = ReadRequest {
        file: file.to_string(),
        netascii,
        blksize: None,
        windowsize: None,
        tsize: false,
        timeout: None,
    };
    for pair in fields[2..fields.len() - 1].chunks(2) {
        let [name, value] = pair else { break };
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = std::str::from_utf8(value).unwrap_or_default();
        // Unknown or malformed options are left out of the OACK (RFC 2347).
        match name.as_str() {
            // A size past the largest valid one (65535 is a common ask) is
            // a request for the most we give, not a reason to fall back to
            // 512-byte blocks: the OACK may answer with less (RFC 2348).
            "blksize" => request.blksize = option_at_least(value, 8, 65_464),
            "windowsize" => request.windowsize = option_at_least(value, 1, u16::MAX),
            "tsize" => request.tsize = true,
            "timeout" => request.timeout = value.parse().ok().filter(|t: &u8| *t >= 1),
            _ => {}
        }
    }
    Ok(request)
}

/// A numeric option of at least `min`, capped at `max`; `None` when it is
/// not a number or under `min`.
fn option_at_least(value: &str, min: u16, max: u16) -> Option<u16> {
    let asked: u64 = value.parse().ok()?;
    (asked >= u64::from(min)).then(|| asked.min(u64::from(max)) as u16)
}

pub(super) fn error_packet(code: u16, message: &str) -> Vec<u8> {
    let mut packet = Vec::with_capacity(5 + message.len());
    packet.extend_from_slice(&OP_ERROR.to_be_bytes());
    packet.extend_from_slice(&code.to_be_bytes());
    packet.extend_from_slice(message.as_bytes());
    packet.push(0);
    packet
}

pub(super) fn oack_packet(options: &[(&str, String)]) -> Vec<u8> {
    let mut packet = OP_OACK.to_be_bytes().to_vec();
    for (name, value) in options {
        packet.extend_from_slice(name.as_bytes());
        packet.push(0);
        packet.extend_from_slice(value.as_bytes());
        packet.push(0);
    }
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_their_options() {
        let r =
            parse_request(b"\0\x01a.cfg\0OCTET\0BLKSIZE\x001428\0tsize\x000\0windowsize\x000\0x\0")
                .unwrap();
        assert_eq!(
            (r.file.as_str(), r.blksize, r.tsize, r.netascii),
            ("a.cfg", Some(1428), true, false)
        );
        // windowsize 0 is invalid and left out; a dangling name is ignored.
        assert_eq!(r.windowsize, None);
        assert!(parse_request(b"\0\x01a.cfg\0mail\0").is_err());
        assert!(parse_request(b"\0\x01a.cfg\0octet").is_err());
        assert!(parse_request(b"\0\x01a.cfg\0").is_err());
        let r = parse_request(b"\0\x01b\0NetASCII\0blksize\x004\0timeout\x00300\0").unwrap();
        assert_eq!((r.blksize, r.timeout, r.netascii), (None, None, true));
        // Past the valid range: capped, not ignored.
        let r = parse_request(b"\0\x01c\0octet\0blksize\x0065535\0windowsize\x0099999\0").unwrap();
        assert_eq!((r.blksize, r.windowsize), (Some(65_464), Some(u16::MAX)));
        let r = parse_request(b"\0\x01c\0octet\0blksize\x00-1\0windowsize\x001x\0").unwrap();
        assert_eq!((r.blksize, r.windowsize), (None, None));
    }
}
