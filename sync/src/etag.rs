//! Entity tags for optimistic concurrency: a hash of a row as the mirror
//! holds it, computed the same way from the mirror (for reads) and inside
//! the writing transaction (for `Mutation::Expect`), so the two agree
//! without a version column on every table.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::{Line, Phone};

/// A strong HTTP entity tag (quoted) of any mirrored row.
pub fn etag_of<T: Serialize + ?Sized>(row: &T) -> String {
    // postcard encodes a struct's fields in order with no names: stable for
    // one binary, and the tag only has to match within one deployment.
    let bytes = postcard::to_allocvec(row).expect("rows always serialize");
    let digest = Sha256::digest(&bytes);
    format!("\"{}\"", hex::encode(&digest[..12]))
}

/// A phone and its lines are edited as one resource, so they share a tag.
/// `lines` in any order.
pub fn phone_etag<L: std::borrow::Borrow<Line>>(phone: &Phone, lines: &[L]) -> String {
    let mut lines: Vec<&Line> = lines.iter().map(|l| l.borrow()).collect();
    lines.sort_by_key(|l| l.position);
    etag_of(&(phone, lines))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Family, Mac};

    #[test]
    fn tags_follow_content() {
        let phone = Phone {
            id: 1,
            tenant_id: 1,
            mac: Mac([0, 0x15, 0x65, 1, 2, 3]),
            family: Family::Yealink,
            model: None,
            label: None,
            variables: "{}".into(),
            http_user: None,
            http_password: None,
            updated_at: 5,
        };
        let tag = phone_etag::<Line>(&phone, &[]);
        assert_eq!(tag, phone_etag::<Line>(&phone.clone(), &[]));
        assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() == 26);
        let renamed = Phone {
            label: Some("Lobby".into()),
            ..phone
        };
        assert_ne!(tag, phone_etag::<Line>(&renamed, &[]));
    }
}
