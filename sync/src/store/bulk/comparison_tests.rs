//! The comparison finds the same thing whether lines come after every
//! phone or beside them, in any order of either table and any
//! interleaving of the two streams, and it never leaves a row in both at
//! once. The bounds are small here (`RECENT`, `LOOK_AHEAD`, `KEPT_ASIDE`),
//! so each is reached.

use super::*;
use crate::crypto::{Purpose, SecretKey};
use crate::model::{Family, Id};
use crate::store::{LineInput, PhoneInput};

const N: u32 = 300;

fn key() -> SecretKey {
    SecretKey::parse(&"5a".repeat(32)).unwrap()
}

fn input(n: u32) -> PhoneInput {
    PhoneInput {
        tenant: "acme".into(),
        mac: format!("001565{n:06x}").parse().unwrap(),
        family: Family::Yealink,
        model: Some("T46S".into()),
        label: None,
        variables: "{}".into(),
        http_user: None,
        http_password: n.is_multiple_of(10).then(|| format!("device-{n}")),
        lines: (0..1 + n as usize % 2)
            .map(|i| LineInput {
                extension: format!("{}", 100 + i),
                display_name: format!("Desk {n}"),
                auth_user: format!("{n}-{i}"),
                password: Some(format!("pw-{n}-{i}")),
                registrar: "sip.example.net".into(),
                proxy: None,
                settings: "{}".into(),
            })
            .collect(),
    }
}

/// A stored row's text, owned, lent out as the backend would.
struct Phone {
    id: Id,
    mac: String,
    model: Option<String>,
    http_password: Option<String>,
}

/// Phones of the run as stored, some changed, some not stored (new), and
/// phones outside the run; their lines, some changed, some past the end of
/// their phone's lines in the run.
fn stored(key: &SecretKey, run: &[PhoneInput]) -> (Vec<Phone>, Vec<OwnedLine>) {
    let (mut phones, mut lines) = (Vec::new(), Vec::new());
    let others = (0..20).map(|k| input(N + 1000 + k));
    for (n, p) in run.iter().cloned().chain(others).enumerate() {
        let n = n as u32;
        if n % 37 == 5 {
            continue;
        }
        let id = 10_000 + Id::from(n);
        phones.push(Phone {
            id,
            mac: p.mac.to_string(),
            model: if n.is_multiple_of(23) { None } else { p.model },
            http_password: p
                .http_password
                .map(|pw| key.seal(Purpose::DeviceHttpPassword, &pw).0.into()),
        });
        let mut stored_lines = p.lines;
        if n % 29 == 3 {
            stored_lines.push(stored_lines[0].clone());
        }
        for (at, l) in stored_lines.into_iter().enumerate() {
            lines.push(OwnedLine {
                id: 100_000 + 10 * Id::from(n) + at as Id,
                phone_id: id,
                position: at as i32 + 1,
                extension: l.extension,
                display_name: if n % 19 == 7 {
                    "Renamed".into()
                } else {
                    l.display_name
                },
                auth_user: l.auth_user,
                password: l
                    .password
                    .map(|pw| key.seal(Purpose::LinePassword, &pw).0.into()),
                registrar: l.registrar,
                proxy: l.proxy,
                settings: l.settings,
            });
        }
    }
    (phones, lines)
}

/// A stored line's text, owned.
struct OwnedLine {
    id: Id,
    phone_id: Id,
    position: i32,
    extension: String,
    display_name: String,
    auth_user: String,
    password: Option<String>,
    registrar: String,
    proxy: Option<String>,
    settings: String,
}

impl OwnedLine {
    fn borrowed(&self) -> StoredLine<'_> {
        StoredLine {
            id: self.id,
            phone_id: self.phone_id,
            position: self.position,
            extension: self.extension.as_bytes(),
            display_name: self.display_name.as_bytes(),
            auth_user: self.auth_user.as_bytes(),
            password: self.password.as_deref().map(str::as_bytes),
            registrar: self.registrar.as_bytes(),
            proxy: self.proxy.as_deref().map(str::as_bytes),
            settings: self.settings.as_bytes(),
        }
    }
}

fn stored_phone(p: &Phone) -> Stored<'_> {
    Stored::Phone(StoredPhone {
        id: p.id,
        mac: p.mac.as_bytes(),
        tenant_id: 1,
        family: b"yealink",
        model: p.model.as_deref().map(str::as_bytes),
        label: None,
        variables: b"{}",
        http_user: None,
        http_password: p.http_password.as_deref().map(str::as_bytes),
    })
}

type Outcome = (
    Vec<PhoneState>,
    Vec<Id>,
    Vec<LineState>,
    Vec<Id>,
    Vec<Id>,
    u64,
);

/// The run the tests compare with, and its rows as stored ([`stored`]).
struct Fixture {
    key: SecretKey,
    batch: PhoneBatch,
    tenant_ids: Vec<Option<Id>>,
    phones: Vec<Phone>,
    lines: Vec<OwnedLine>,
}

impl Fixture {
    fn new() -> Self {
        let key = key();
        let run: Vec<PhoneInput> = (0..N).map(input).collect();
        let batch: PhoneBatch = run.iter().collect();
        let tenant_ids = vec![Some(1); batch.tenants().len()];
        let (phones, lines) = stored(&key, &run);
        Fixture {
            key,
            batch,
            tenant_ids,
            phones,
            lines,
        }
    }

    fn comparison(&self) -> Comparison<'_> {
        Comparison::new(&self.key, &self.batch, &self.tenant_ids)
    }

    /// What the comparison finds reading `phones`, then `lines`.
    fn after_phones(&self, phones: &[&Phone], lines: &[&OwnedLine]) -> Outcome {
        let mut c = self.comparison();
        after_phones(&mut c, phones, lines);
        outcome(c)
    }
}

fn outcome(c: Comparison<'_>) -> Outcome {
    let ids = (c.states.iter().zip(&c.ids))
        .map(|(s, id)| if *s == PhoneState::New { 0 } else { *id })
        .collect();
    let line_ids = (c.lines.iter().zip(&c.line_ids))
        .map(|(s, id)| if *s == LineState::Missing { 0 } else { *id })
        .collect();
    let mut gone = c.gone;
    gone.sort_unstable();
    (c.states, ids, c.lines, line_ids, gone, c.stored_rows)
}

fn after_phones(c: &mut Comparison<'_>, phones: &[&Phone], lines: &[&OwnedLine]) {
    for p in phones {
        assert!(c.offer(stored_phone(p)));
    }
    assert!(c.offer(Stored::PhonesRead));
    for l in lines {
        assert!(c.offer(Stored::Line(l.borrowed())));
    }
}

/// As the PostgreSQL reader does: a stream whose row was left is not
/// polled, and its row is offered again after each row of the other.
fn beside(c: &mut Comparison<'_>, phones: &[&Phone], lines: &[&OwnedLine], seed: u64) {
    let mut rng = seed;
    let mut coin = || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        rng >> 63 == 1
    };
    assert!(c.offer(Stored::Beside));
    let (mut p, mut l, mut phones_done) = (0, 0, false);
    let (mut phone_waits, mut line_waits) = (false, false);
    loop {
        let poll_phones = !phones_done && !phone_waits;
        let poll_lines = l < lines.len() && !line_waits;
        if !poll_phones && !poll_lines {
            assert!(phones_done && l == lines.len(), "both streams wait");
            return;
        }
        if if poll_phones && poll_lines {
            coin()
        } else {
            poll_phones
        } {
            if p == phones.len() {
                assert!(c.offer(Stored::PhonesRead));
                phones_done = true;
            } else if c.offer(stored_phone(phones[p])) {
                p += 1;
            } else {
                phone_waits = true;
            }
            if line_waits && c.offer(Stored::Line(lines[l].borrowed())) {
                l += 1;
                line_waits = false;
            }
        } else {
            if c.offer(Stored::Line(lines[l].borrowed())) {
                l += 1;
            } else {
                line_waits = true;
            }
            if phone_waits && c.offer(stored_phone(phones[p])) {
                p += 1;
                phone_waits = false;
            }
        }
    }
}

/// As PostgreSQL's HOT updates leave a table: in every page of `page`
/// rows, the second row was updated and is read last.
fn updated_in_place<T: Copy>(v: &[T], page: usize) -> Vec<T> {
    v.chunks(page)
        .flat_map(|rows| {
            let mut rows = rows.to_vec();
            if rows.len() > 1 {
                let updated = rows.remove(1);
                rows.push(updated);
            }
            rows
        })
        .collect()
}

fn shuffled<T>(mut v: Vec<T>, mut seed: u64) -> Vec<T> {
    for i in (1..v.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.swap(i, (seed >> 33) as usize % (i + 1));
    }
    v
}

#[test]
fn lines_beside_phones_find_what_lines_after_them_do() {
    let f = Fixture::new();
    let (phones, lines) = (&f.phones, &f.lines);
    let in_order: (Vec<&Phone>, Vec<&OwnedLine>) =
        (phones.iter().collect(), lines.iter().collect());
    let want = f.after_phones(&in_order.0, &in_order.1);
    // The data has every case in it.
    for state in [PhoneState::New, PhoneState::Same, PhoneState::Changed] {
        assert!(want.0.contains(&state));
    }
    for state in [LineState::Missing, LineState::Same, LineState::Changed] {
        assert!(want.2.contains(&state));
    }
    assert!(!want.4.is_empty(), "no line past its phone's");

    let moved_to_end = |every: usize| -> Vec<&OwnedLine> {
        let (mut kept, mut moved) = (Vec::new(), Vec::new());
        for (k, l) in lines.iter().enumerate() {
            if k % every == 0 {
                moved.push(l)
            } else {
                kept.push(l)
            }
        }
        kept.extend(moved);
        kept
    };
    let moved_to_start = |every: usize| -> Vec<&OwnedLine> {
        let mut v = moved_to_end(every);
        v.rotate_right(lines.len().div_ceil(every));
        v
    };
    let orders: Vec<(&str, Vec<&Phone>, Vec<&OwnedLine>)> = vec![
        ("stored order", in_order.0.clone(), in_order.1.clone()),
        (
            "a few lines moved to the end",
            in_order.0.clone(),
            moved_to_end(40),
        ),
        (
            "many lines moved to the end",
            in_order.0.clone(),
            moved_to_end(3),
        ),
        (
            "lines moved to the start",
            in_order.0.clone(),
            moved_to_start(40),
        ),
        (
            "rows updated in place",
            updated_in_place(&in_order.0, 5),
            updated_in_place(&in_order.1, 7),
        ),
        (
            "phones reversed",
            in_order.0.iter().rev().copied().collect(),
            in_order.1.clone(),
        ),
        (
            "lines reversed",
            in_order.0.clone(),
            in_order.1.iter().rev().copied().collect(),
        ),
        (
            "both shuffled",
            shuffled(in_order.0.clone(), 7),
            shuffled(in_order.1.clone(), 8),
        ),
    ];
    for (what, phones, lines) in &orders {
        let mut after = f.comparison();
        after_phones(&mut after, phones, lines);
        assert!(outcome(after) == want, "{what}: lines after phones");
        for seed in 1..=12 {
            let mut c = f.comparison();
            beside(&mut c, phones, lines, seed);
            assert!(outcome(c) == want, "{what}, interleaving {seed}");
        }
    }
}

#[test]
fn lines_updated_in_place_are_placed_beside_their_phones() {
    let f = Fixture::new();
    let (phones, lines) = (&f.phones, &f.lines);
    let phones: Vec<&Phone> = phones.iter().collect();
    let lines: Vec<&OwnedLine> = lines.iter().collect();
    let want = f.after_phones(&phones, &lines);
    // Each row at most 3 places from where it was written: with the
    // phones as far off the other way, within what a line looks behind.
    let (phones, lines) = (updated_in_place(&phones, 4), updated_in_place(&lines, 4));
    for seed in 1..=12 {
        let mut c = f.comparison();
        beside(&mut c, &phones, &lines, seed);
        assert_eq!(c.held.kept_aside, 0, "interleaving {seed}");
        assert!(outcome(c) == want, "interleaving {seed}");
    }
}

#[test]
fn phones_read_out_of_place_are_found_by_their_id_without_the_mac_index() {
    let f = Fixture::new();
    let (phones, lines) = (&f.phones, &f.lines);
    // Only the run's phones: one outside it is looked up in the index.
    let first_outside = 10_000 + Id::from(N);
    let phones: Vec<&Phone> = phones.iter().filter(|p| p.id < first_outside).collect();
    let lines: Vec<&OwnedLine> = lines
        .iter()
        .filter(|l| l.phone_id < first_outside)
        .collect();
    let want = f.after_phones(&phones, &lines);
    // Every tenth phone read 30 places early (written into an earlier
    // page's free space), or at the end (moved by an update).
    let early = {
        let mut v = phones.clone();
        for k in (40..v.len()).step_by(10) {
            let p = v.remove(k);
            v.insert(k - 30, p);
        }
        v
    };
    let (mut kept, mut moved) = (Vec::new(), Vec::new());
    for (k, p) in phones.iter().enumerate() {
        if k % 10 == 3 {
            moved.push(*p)
        } else {
            kept.push(*p)
        }
    }
    kept.extend(moved);
    for (what, order) in [("early", &early), ("at the end", &kept)] {
        let mut c = f.comparison();
        for p in order.iter() {
            assert!(c.offer(stored_phone(p)));
        }
        // (Dropped once every phone is read.)
        assert!(!c.by_mac.is_built(), "{what}: the MAC index was built");
        assert!(c.offer(Stored::PhonesRead));
        for l in &lines {
            assert!(c.offer(Stored::Line(l.borrowed())));
        }
        assert!(outcome(c) == want, "{what}");
    }
}

#[test]
fn phones_wait_for_lines_that_lag_and_lines_wait_for_their_phone() {
    let f = Fixture::new();
    let (phones, lines) = (&f.phones, &f.lines);
    let mut c = f.comparison();
    assert!(c.offer(Stored::Beside));
    // A line before any phone waits.
    assert!(!c.offer(Stored::Line(lines[0].borrowed())));
    // Phones run ahead of the lines only so far.
    let taken = phones
        .iter()
        .take_while(|p| c.offer(stored_phone(p)))
        .count();
    assert_eq!(taken as u64, AHEAD);
    // Lines of the first phone hold the phones back still; one of the
    // second phone's lets the next phone in.
    assert_eq!(lines[1].phone_id, phones[1].id);
    assert!(c.offer(Stored::Line(lines[0].borrowed())));
    assert!(!c.offer(stored_phone(&phones[taken])));
    assert!(c.offer(Stored::Line(lines[1].borrowed())));
    assert!(c.offer(stored_phone(&phones[taken])));
}

#[test]
fn a_line_kept_aside_comes_back_as_it_was() {
    let lines = [
        OwnedLine {
            id: 1,
            phone_id: 2,
            position: 3,
            extension: "100".into(),
            display_name: "Zoë 東京".into(),
            auth_user: String::new(),
            password: Some(String::new()),
            registrar: "sip.example.net".into(),
            proxy: None,
            settings: "{}".into(),
        },
        OwnedLine {
            id: -4,
            phone_id: 5,
            position: -1,
            extension: String::new(),
            display_name: "x".into(),
            auth_user: "u".into(),
            password: None,
            registrar: String::new(),
            proxy: Some("proxy".into()),
            settings: String::new(),
        },
    ];
    let mut aside = Aside::default();
    for line in &lines {
        aside.push(&line.borrowed());
    }
    for (k, line) in lines.iter().enumerate() {
        let (got, want) = (aside.get(k), line.borrowed());
        assert_eq!(
            (got.id, got.phone_id, got.position),
            (want.id, want.phone_id, want.position)
        );
        assert_eq!(
            [
                got.extension,
                got.display_name,
                got.auth_user,
                got.registrar,
                got.settings
            ],
            [
                want.extension,
                want.display_name,
                want.auth_user,
                want.registrar,
                want.settings
            ]
        );
        assert_eq!((got.password, got.proxy), (want.password, want.proxy));
    }
}
