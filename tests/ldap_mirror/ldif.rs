//! Generated LDAP directories for the mirror tests and the mirror bench
//! (`directory/examples/mirror_bench.rs` includes this file by path, so it
//! uses std only).
//!
//! Entries sit under `ou=us`, `ou=gb` and `ou=au` below
//! `ou=people,dc=example,dc=com`, one OU per tenant region, because which
//! spellings a directory holds depends on where it is: `(02) 5550 4321` is
//! a number only to an Australian. Numbers come from the fictional ranges
//! of docs/test-data.md, each used once, written the untidy ways real
//! directories hold them; some entries carry several number attributes,
//! some none, and some carry injection-shaped values in names and number
//! attributes. The same seed always gives the same directory.

pub const BASE: &str = "dc=example,dc=com";
pub const ADMIN: &str = "cn=admin,dc=example,dc=com";
pub const PASSWORD: &str = "secret";

/// The OU of each tenant region, and the region.
pub const REGIONS: [(&str, &str); 3] = [("us", "US"), ("gb", "GB"), ("au", "AU")];

/// Values planted in number attributes; none of them is a number, so none
/// may ever be answered for, nor widen an LDAP search. (The telephone
/// number syntax is a printable string, so slapd refuses `*`, `|` and `\`
/// there; names below carry those.)
pub const TRAPS: [&str; 5] = [
    ")(uid=p000001)",
    "(objectClass=person)",
    "555)(mobile=",
    "0)(cn=Alice",
    "+1 555 (uid=x)",
];

/// What a PBX, or someone posing as one, may send to widen a search.
pub const PROBES: [&str; 7] = [
    "*",
    ")(uid=*",
    "*)(objectClass=*",
    "555*",
    "\\2a",
    "(|(mobile=*))",
    "%2A",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Country {
    Us,
    Gb,
    Au,
}

#[derive(Clone, Debug)]
pub struct Number {
    pub country: Country,
    /// Area code (no trunk 0) and the local part, as they are grouped.
    pub area: String,
    pub local: String,
}

impl Number {
    pub fn code(&self) -> &'static str {
        match self.country {
            Country::Us => "1",
            Country::Gb => "44",
            Country::Au => "61",
        }
    }

    /// The national significant number, digits only.
    pub fn nsn(&self) -> String {
        format!("{}{}", self.area, self.local).replace([' ', '-'], "")
    }

    pub fn e164(&self) -> String {
        format!("+{}{}", self.code(), self.nsn())
    }
}

#[derive(Clone, Debug)]
pub struct Person {
    pub ou: &'static str,
    /// What the name attributes hold, in dialtone's default order
    /// (`displayName`, else `cn`), before cleaning.
    pub raw_name: String,
    pub numbers: Vec<Number>,
    /// Whether a number attribute holds one of [`TRAPS`].
    pub trap: bool,
}

impl Person {
    /// Whether the entry has a number attribute at all (what a mirror keeps).
    pub fn has_number_attribute(&self) -> bool {
        self.trap || !self.numbers.is_empty()
    }
}

pub struct Directory {
    pub ldif: String,
    pub people: Vec<Person>,
}

/// xorshift64*: enough spread for test data, and no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Hands out each fictional number once, country by country.
struct Pools {
    us: usize,
    gb: usize,
    au: usize,
}

/// NANP area codes for NPA-555-01XX: no N11 codes, no 9 in the middle.
fn nanp_areas() -> impl Iterator<Item = u32> {
    (200..1000).filter(|a| (a / 10) % 10 != 9 && a % 100 != 11)
}

const US_MAIN: usize = 10_000;

impl Pools {
    fn take(&mut self, country: Country) -> Option<Number> {
        let n = match country {
            Country::Us => {
                let i = self.us;
                self.us += 1;
                if i < US_MAIN {
                    // 555 010 xxxx, as the repository's examples write it.
                    Number {
                        country,
                        area: "555".into(),
                        local: format!("010 {i:04}"),
                    }
                } else {
                    // NPA 555-0100..0199: the range set aside for fiction.
                    let j = i - US_MAIN;
                    let area = nanp_areas().nth(j / 100)?;
                    Number {
                        country,
                        area: area.to_string(),
                        local: format!("555 01{:02}", j % 100),
                    }
                }
            }
            Country::Gb => {
                let i = self.gb;
                self.gb += 1;
                // Ofcom's drama ranges: 01632 960xxx, then 020 7946 0xxx.
                match i {
                    0..=999 => Number {
                        country,
                        area: "1632".into(),
                        local: format!("960{i:03}"),
                    },
                    1000..=1999 => Number {
                        country,
                        area: "20".into(),
                        local: format!("7946 0{:03}", i - 1000),
                    },
                    _ => return None,
                }
            }
            Country::Au => {
                let i = self.au;
                self.au += 1;
                // ACMA's 0x 5550 xxxx, then 0x 7010 xxxx, in the four
                // geographic areas.
                let area = ["2", "3", "7", "8"].get((i / 10_000) % 4)?;
                let block = ["5550", "7010"].get(i / 40_000)?;
                Number {
                    country,
                    area: area.to_string(),
                    local: format!("{block} {:04}", i % 10_000),
                }
            }
        };
        Some(n)
    }
}

fn country_of(region: &str) -> Country {
    match region {
        "US" => Country::Us,
        "GB" => Country::Gb,
        _ => Country::Au,
    }
}

/// How a directory in `region` may hold `n`: spellings that read back as
/// the same number there (the tests check each with dialtone's normalizer).
pub fn spellings(n: &Number, region: &str) -> Vec<String> {
    let (a, l, cc) = (&n.area, &n.local, n.code());
    let home = country_of(region) == n.country;
    let mut out = vec![format!("+{cc} {a} {l}")];
    match (n.country, home) {
        (Country::Us, true) => {
            let (x, line) = l.split_once(' ').unwrap();
            out.extend([
                format!("+1 ({a}) {x}-{line}"),
                format!("{a}.{x}.{line}"),
                format!("1-{a}-{x}-{line}"),
                format!("({a}) {x}-{line}"),
                format!("{a}{x}{line}"),
                format!("{a}-{x}-{line} ext. 7"),
            ]);
        }
        (Country::Gb, true) => out.extend([
            format!("0{a} {l}"),
            format!("+44 (0){a} {l}"),
            format!("0044 {a} {l}"),
            format!("(0{a}) {l}"),
        ]),
        (Country::Au, true) => out.extend([
            format!("(0{a}) {l}"),
            format!("0{a} {l}"),
            format!("0011 61 {a} {l}"),
        ]),
        (_, false) => match region {
            "US" => out.push(format!("011 {cc} {a} {l}")),
            "GB" => out.push(format!("00 {cc} {a} {l}")),
            _ => out.push(format!("0011 {cc} {a} {l}")),
        },
    }
    out
}

/// What a PBX in `region` may send for `n`, by kind: digits (country code
/// included, as mod_cidlookup sends them), `+E.164`, national, and the
/// international prefixes (docs/pbx-formats.md).
pub fn pbx_forms(n: &Number, region: &str) -> Vec<(&'static str, String)> {
    let digits = format!("{}{}", n.code(), n.nsn());
    let mut out = vec![("e164", n.e164()), ("digits", digits.clone())];
    if country_of(region) == n.country {
        let national = match n.country {
            Country::Us => n.nsn(),
            _ => format!("0{}", n.nsn()),
        };
        out.push(("national", national));
    }
    match region {
        "US" => out.push(("idd", format!("011{digits}"))),
        "GB" => out.push(("idd", format!("00{digits}"))),
        _ => out.extend([
            ("idd", format!("0011{digits}")),
            ("idd", format!("00{digits}")),
        ]),
    }
    out
}

const GIVEN: [&str; 8] = [
    "Alice", "Bram", "Chidi", "Dana", "Emeka", "Fern", "Goran", "Hana",
];
const SURNAMES: [&str; 8] = [
    "Example",
    "Walsh",
    "Okafor",
    "Lindqvist",
    "Moreau",
    "Tanaka",
    "Novak",
    "Reyes",
];
/// Names with filter syntax in them: answered as names, never parsed.
const ODD_NAMES: [&str; 4] = ["*", ")(uid=*", "Eve *)(cn=*", "Mallory \\29(|"];

/// `entries` people (plus the two OUs above them).
pub fn generate(entries: usize, seed: u64) -> Directory {
    let mut rng = Rng(seed | 1);
    let mut pools = Pools {
        us: 0,
        gb: 0,
        au: 0,
    };
    let mut ldif = format!(
        "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example Corp\n\n\
         dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n"
    );
    for (ou, _) in REGIONS {
        ldif.push_str(&format!(
            "dn: ou={ou},ou=people,{BASE}\nobjectClass: organizationalUnit\nou: {ou}\n\n"
        ));
    }
    let mut people = Vec::with_capacity(entries);
    for i in 0..entries {
        // Seven in ten entries American, one British, two Australian.
        let (ou, region) = match i % 10 {
            0..=6 => REGIONS[0],
            7 => REGIONS[1],
            _ => REGIONS[2],
        };
        let given = rng.pick(&GIVEN);
        let surname = rng.pick(&SURNAMES);
        let uid = format!("p{i:06}");
        let cn = if i % 197 == 5 {
            ODD_NAMES[i % ODD_NAMES.len()].to_string()
        } else {
            format!("{given} {surname} {i}")
        };
        let display = (i % 3 == 0).then(|| format!("{given} {surname} ({i})"));
        let count = match rng.below(100) {
            0..=3 => 0,
            4..=63 => 1,
            64..=91 => 2,
            _ => 3,
        };
        let mut numbers = Vec::new();
        for _ in 0..count {
            // Mostly home numbers, some foreign; a pool that has run dry
            // hands over to the next.
            let first = match rng.below(10) {
                0 => Country::Gb,
                1 => Country::Au,
                2 => Country::Us,
                _ => country_of(region),
            };
            let order = [first, Country::Au, Country::Us, Country::Gb];
            if let Some(n) = order.iter().find_map(|c| pools.take(*c)) {
                numbers.push(n);
            }
        }
        let mut e = format!(
            "dn: uid={uid},ou={ou},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {cn}\nsn: {surname}\ngivenName: {given}\n"
        );
        if let Some(d) = &display {
            e.push_str(&format!("displayName: {d}\n"));
        }
        // Several values of one attribute happen too (two desk lines).
        let attrs = ["telephoneNumber", "mobile", "homePhone"];
        for (k, n) in numbers.iter().enumerate() {
            let forms = spellings(n, region);
            let spelled = &forms[rng.below(forms.len())];
            let attr = if k == 2 && i % 2 == 0 {
                "telephoneNumber"
            } else {
                attrs[k]
            };
            e.push_str(&format!("{attr}: {spelled}\n"));
        }
        let trap = i % 89 == 3;
        if trap {
            let attr = attrs[i % attrs.len()];
            e.push_str(&format!("{attr}: {}\n", TRAPS[i % TRAPS.len()]));
        }
        e.push('\n');
        ldif.push_str(&e);
        people.push(Person {
            ou,
            raw_name: display.unwrap_or(cn),
            numbers,
            trap,
        });
    }
    Directory { ldif, people }
}
