//! The generated files: phones with cells that test the parse, written
//! out as CSV (shuffled rows, spoiled on request) and as JSON.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng as _, SeedableRng};

use crate::model::{Family, Mac};
use crate::store::{LineInput, PhoneInput};

/// Seeded, so every run writes the same files.
pub(super) struct Rng(StdRng);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(StdRng::seed_from_u64(seed))
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        self.0.gen_range(0..n)
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.0.gen_ratio(percent, 100)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        items.choose(&mut self.0).expect("something to pick")
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        items.shuffle(&mut self.0);
    }
}

/// Characters a cell may hold anywhere, and those it may start or end
/// with (nothing trimming would remove).
const INSIDE: &[&str] = &[
    "a", "Z", "7", " ", ",", "\"", "\n", "\r\n", "é", "日", "\u{a0}", "#", "{", "'", "\t",
];
const EDGE: &[&str] = &["b", "Q", "0", ",", "\"", "é", "日", "#", "}", "'"];

/// Text that trimming leaves as it is.
pub(super) fn text(rng: &mut Rng) -> String {
    let mut s = rng.pick(EDGE).to_string();
    if rng.chance(70) {
        for _ in 0..rng.below(8) {
            s.push_str(rng.pick::<&str>(INSIDE));
        }
        s.push_str(rng.pick::<&str>(EDGE));
    }
    s
}

/// A SIP user part, as a line's extension and auth user must be: still
/// with a comma, which CSV must quote, and an escape.
fn sip_user(rng: &mut Rng) -> String {
    const PARTS: &[&str] = &["a", "Z", "7", ",", "'", "%2C", "+", ";", "!", "("];
    let mut s = rng.pick(&["b", "Q", "0"]).to_string();
    for _ in 0..rng.below(8) {
        s.push_str(rng.pick::<&str>(PARTS));
    }
    s
}

/// Text a phone shows or sends (a display name, a label, a server): no
/// line breaks (`checks::unfit`), where [`text`] has them.
fn shown(rng: &mut Rng) -> String {
    text(rng).replace(['\r', '\n'], " ")
}

fn maybe_shown(rng: &mut Rng) -> Option<String> {
    rng.chance(50).then(|| shown(rng))
}

/// A model: it names files, so it is a plain name (`checks::PhoneText`),
/// spaces inside included.
fn maybe_model(rng: &mut Rng) -> Option<String> {
    const FIRST: &[&str] = &["T", "v", "7", "_", "+", "-"];
    const REST: &[&str] = &["4", "6", "S", "x", " ", ".", "-", "_", "+"];
    rng.chance(50).then(|| {
        let mut s = rng.pick(FIRST).to_string();
        for _ in 0..rng.below(8) {
            s.push_str(rng.pick::<&str>(REST));
        }
        s.push_str(rng.pick::<&str>(&REST[..3]));
        s
    })
}

/// A password: taken as written, so its spaces are part of it.
/// A device user, with what CSV quotes and trimming keeps.
fn maybe_user(rng: &mut Rng) -> Option<String> {
    const EDGE: &[&str] = &["d", "Q", "0", ",", "#", "}", "'", "@"];
    const INSIDE: &[&str] = &["e", "S", "7", " ", ",", "#", "{", "'", "=", ";"];
    rng.chance(50).then(|| {
        let mut s = rng.pick(EDGE).to_string();
        for _ in 0..rng.below(8) {
            s.push_str(rng.pick::<&str>(INSIDE));
        }
        s.push_str(rng.pick::<&str>(EDGE));
        s
    })
}

pub(super) fn password(rng: &mut Rng) -> Option<String> {
    match rng.below(4) {
        0 => None,
        1 => Some(format!(" {} ", text(rng))),
        2 => Some("  ".into()),
        _ => Some(text(rng)),
    }
}

/// A JSON object's canonical text (what the plan holds) and how this file
/// writes it: pretty-printed, so across lines.
pub(super) fn object(rng: &mut Rng) -> (String, Option<String>) {
    if rng.chance(40) {
        return ("{}".into(), rng.chance(50).then(|| "{}".into()));
    }
    let map: BTreeMap<String, String> = (0..1 + rng.below(3))
        .map(|i| (format!("k{i}{}", text(rng)), text(rng)))
        .collect();
    let canonical = serde_json::to_string(&map).unwrap();
    (canonical, Some(serde_json::to_string_pretty(&map).unwrap()))
}

/// A generated phone, and what its file spells differently.
pub(super) struct Generated {
    pub(super) phone: PhoneInput,
    pub(super) variables_written: Option<String>,
    pub(super) line_settings_written: Vec<Option<String>>,
    /// Display name and auth user given (not left to default).
    pub(super) named: Vec<(bool, bool)>,
}

pub(super) fn phones(rng: &mut Rng, count: usize) -> Vec<Generated> {
    (0..count)
        .map(|i| {
            let (variables, variables_written) = object(rng);
            let mut lines = Vec::new();
            let (mut line_settings_written, mut named) = (Vec::new(), Vec::new());
            for _ in 0..rng.below(4) {
                let extension = sip_user(rng);
                let given = (rng.chance(60), rng.chance(60));
                let (settings, written) = object(rng);
                lines.push(LineInput {
                    display_name: if given.0 {
                        shown(rng)
                    } else {
                        extension.clone()
                    },
                    auth_user: if given.1 {
                        sip_user(rng)
                    } else {
                        extension.clone()
                    },
                    extension,
                    password: password(rng),
                    registrar: shown(rng),
                    proxy: maybe_shown(rng),
                    settings,
                });
                line_settings_written.push(written);
                named.push(given);
            }
            let mac = Mac([0x00, 0x15, 0x65, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            let tenant = rng.pick(&["acme", "globex-2", "t0"]).to_string();
            let family = *rng.pick(Family::ALL);
            let (model, label) = (maybe_model(rng), maybe_shown(rng));
            let http_user = maybe_user(rng);
            // A login is whole or absent (`checks::http_login`).
            let http_password = match (http_user.is_some(), password(rng)) {
                (true, None) => Some(text(rng)),
                (true, password) => password,
                (false, _) => None,
            };
            Generated {
                phone: PhoneInput {
                    tenant,
                    mac,
                    family,
                    model,
                    label,
                    variables,
                    http_user,
                    http_password,
                    lines,
                },
                variables_written,
                line_settings_written,
                named,
            }
        })
        .collect()
}

pub(super) fn spell_mac(rng: &mut Rng, mac: Mac) -> String {
    let b = mac.0;
    match rng.below(4) {
        0 => mac.to_string(),
        1 => mac.to_upper(),
        2 => format!(
            "{:02x}{:02x}.{:02x}{:02x}.{:02x}{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        ),
        _ => format!(
            " {:02X}-{:02x}-{:02X}-{:02x}-{:02X}-{:02x} ",
            b[0], b[1], b[2], b[3], b[4], b[5]
        ),
    }
}

/// A trimmed cell as a row may pad it.
pub(super) fn padded(rng: &mut Rng, cell: &str) -> String {
    match rng.below(6) {
        0 => format!(" {cell}"),
        1 => format!("{cell}\u{a0} "),
        _ => cell.to_string(),
    }
}

/// How a row is spoiled, and so which cell its error names.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum Spoil {
    None,
    /// `line` 0, for a row with a line.
    Position,
    /// An unknown family.
    Family,
    /// A label that is not UTF-8.
    NotUtf8,
}

pub(super) struct Row {
    pub(super) phone: usize,
    /// The phone's line this row gives, if any.
    pub(super) line: Option<usize>,
    pub(super) spoil: Spoil,
}

pub(super) struct Written {
    pub(super) bytes: Vec<u8>,
    /// Per row, in file order: the row and the line it starts on.
    pub(super) rows: Vec<(Row, u64)>,
    pub(super) headers: Vec<&'static str>,
}

pub(super) fn write_csv(rng: &mut Rng, phones: &[Generated], spoil_percent: u32) -> Written {
    let mut rows: Vec<Row> = Vec::new();
    for (p, g) in phones.iter().enumerate() {
        let lines: Vec<Option<usize>> = match g.phone.lines.len() {
            0 => vec![None],
            n => (0..n).map(Some).collect(),
        };
        for line in lines {
            let spoil = if !rng.chance(spoil_percent) {
                Spoil::None
            } else {
                match rng.below(3) {
                    0 if line.is_some() => Spoil::Position,
                    1 => Spoil::NotUtf8,
                    _ => Spoil::Family,
                }
            };
            rows.push(Row {
                phone: p,
                line,
                spoil,
            });
        }
    }
    rng.shuffle(&mut rows);
    let mut headers = super::super::csv::PHONE_COLUMNS.to_vec();
    rng.shuffle(&mut headers);
    let crlf = rng.chance(50);
    let terminator = if crlf { "\r\n" } else { "\n" };
    let mut bytes: Vec<u8> = Vec::new();
    let header_cells: Vec<String> = (headers.iter())
        .map(|h| {
            if rng.chance(20) {
                format!(" {} ", h.to_uppercase())
            } else {
                h.to_string()
            }
        })
        .collect();
    bytes.extend(record(
        &header_cells
            .iter()
            .map(|h| h.as_bytes().to_vec())
            .collect::<Vec<_>>(),
        crlf,
    ));
    let mut placed = Vec::with_capacity(rows.len());
    let mut line = 2;
    for row in rows {
        if rng.chance(5) {
            bytes.extend(terminator.as_bytes());
            line += 1;
        }
        let cells: Vec<Vec<u8>> = (headers.iter())
            .map(|h| cell(rng, &phones[row.phone], &row, h))
            .collect();
        let record = record(&cells, crlf);
        placed.push((row, line));
        line += record.iter().filter(|&&b| b == b'\n').count() as u64;
        bytes.extend(record);
    }
    Written {
        bytes,
        rows: placed,
        headers,
    }
}

/// One CSV record, quoted where it must be.
pub(super) fn record(cells: &[Vec<u8>], crlf: bool) -> Vec<u8> {
    let terminator = if crlf {
        ::csv::Terminator::CRLF
    } else {
        ::csv::Terminator::Any(b'\n')
    };
    let mut writer = ::csv::WriterBuilder::new()
        .terminator(terminator)
        .from_writer(Vec::new());
    writer.write_record(cells).unwrap();
    writer.into_inner().unwrap()
}

pub(super) fn cell(rng: &mut Rng, g: &Generated, row: &Row, header: &str) -> Vec<u8> {
    let p = &g.phone;
    let line = row.line.map(|l| (&p.lines[l], l));
    let or_empty = |v: &Option<String>| v.clone().unwrap_or_default();
    let text = match header {
        "tenant" => padded(rng, &p.tenant),
        "mac" => spell_mac(rng, p.mac),
        "family" if row.spoil == Spoil::Family => "nokia".into(),
        "family" => {
            let name = p.family.as_str();
            if rng.chance(30) {
                name.to_uppercase()
            } else {
                padded(rng, name)
            }
        }
        "model" => or_empty(&p.model.clone().map(|m| padded(rng, &m))),
        "label" if row.spoil == Spoil::NotUtf8 => return b"Desk \xff".to_vec(),
        "label" => or_empty(&p.label.clone().map(|m| padded(rng, &m))),
        "variables" => g.variables_written.clone().unwrap_or_default(),
        "http_user" => or_empty(&p.http_user),
        "http_password" => or_empty(&p.http_password),
        "line" => match line {
            Some(_) if row.spoil == Spoil::Position => "0".into(),
            Some((_, 0)) if rng.chance(50) => String::new(),
            Some((_, l)) => padded(rng, &(l + 1).to_string()),
            None => String::new(),
        },
        "extension" => line.map_or(String::new(), |(l, _)| padded(rng, &l.extension)),
        "display_name" => match line {
            Some((l, i)) if g.named[i].0 => l.display_name.clone(),
            _ => String::new(),
        },
        "auth_user" => match line {
            Some((l, i)) if g.named[i].1 => l.auth_user.clone(),
            _ => String::new(),
        },
        "password" => line.map_or(String::new(), |(l, _)| or_empty(&l.password)),
        "registrar" => line.map_or(String::new(), |(l, _)| l.registrar.clone()),
        "proxy" => line.map_or(String::new(), |(l, _)| or_empty(&l.proxy)),
        "line_settings" => line.map_or(String::new(), |(_, i)| {
            g.line_settings_written[i].clone().unwrap_or_default()
        }),
        other => unreachable!("{other}"),
    };
    text.into_bytes()
}

/// The phones as a JSON import, absent values written each way JSON may.
pub(super) fn json_document(rng: &mut Rng, phones: &[Generated]) -> String {
    use serde_json::{json, Map, Value};
    let mut absent = |object: &mut Map<String, Value>, key: &str, value: &Option<String>| {
        match (value, rng.below(3)) {
            (Some(v), _) => object.insert(key.into(), json!(v)),
            (None, 0) => None,
            (None, 1) => object.insert(key.into(), Value::Null),
            (None, _) => object.insert(key.into(), json!("")),
        };
    };
    let mut out = Vec::new();
    for g in phones {
        let p = &g.phone;
        let mut phone = Map::new();
        phone.insert("tenant".into(), json!(p.tenant));
        phone.insert("mac".into(), json!(p.mac.to_upper()));
        phone.insert("family".into(), json!(p.family.as_str()));
        phone.insert(
            "variables".into(),
            serde_json::from_str(&p.variables).unwrap(),
        );
        absent(&mut phone, "model", &p.model);
        absent(&mut phone, "label", &p.label);
        absent(&mut phone, "http_user", &p.http_user);
        absent(&mut phone, "http_password", &p.http_password);
        let mut lines = Vec::new();
        for (l, named) in p.lines.iter().zip(&g.named) {
            let mut line = Map::new();
            line.insert("extension".into(), json!(l.extension));
            line.insert("registrar".into(), json!(l.registrar));
            line.insert(
                "settings".into(),
                serde_json::from_str(&l.settings).unwrap(),
            );
            absent(
                &mut line,
                "display_name",
                &named.0.then(|| l.display_name.clone()),
            );
            absent(
                &mut line,
                "auth_user",
                &named.1.then(|| l.auth_user.clone()),
            );
            absent(&mut line, "password", &l.password);
            absent(&mut line, "proxy", &l.proxy);
            lines.push(Value::Object(line));
        }
        phone.insert("lines".into(), Value::Array(lines));
        out.push(Value::Object(phone));
    }
    serde_json::to_string_pretty(&json!({ "phones": out })).unwrap()
}
