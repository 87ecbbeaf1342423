//! Values written into rendered files read back as themselves: an XML
//! parser reads every file and gets the value whole, in an attribute too,
//! and a `key = value` file has one line per key whatever the value holds,
//! unless the template's author printed it `| safe`.

use minijinja::context;

use crate::engine::{Budget, Engine, Escape};

fn render(body: &str, escape: Escape, value: &str) -> String {
    render_as("t", body, escape, value)
}

/// Rendered as the template `name`: MiniJinja's own escaping, under ours,
/// follows a template's name (`.xml` and `.htm` ones are HTML's).
fn render_as(name: &'static str, body: &str, escape: Escape, value: &str) -> String {
    let budget = Budget::default();
    let engine = Engine::compile("test/t", name, body, escape, &budget).unwrap();
    let bytes = (engine.render("test/t", body, context! { v => value }, &budget)).unwrap();
    String::from_utf8(bytes).unwrap()
}

/// The attribute `v` of `<a v="…"/>` as an XML parser reads it.
fn attribute(document: &str) -> String {
    let parsed = roxmltree::Document::parse(document)
        .unwrap_or_else(|e| panic!("no XML parser reads {document:?}: {e}"));
    parsed.root_element().attribute("v").unwrap().to_string()
}

#[test]
fn characters_xml_forbids_become_replacement_characters() {
    let value = "C\u{1}\u{8}\u{b}\u{c}\u{1b}\u{7f}\u{85}\u{fffe}\u{ffff}Z";
    let document = render("<a v=\"{{ v }}\">{{ v }}</a>", Escape::Xml, value);
    let read = "C\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{7f}\u{85}\u{fffd}\u{fffd}Z";
    assert_eq!(attribute(&document), read);
    let parsed = roxmltree::Document::parse(&document).unwrap();
    assert_eq!(parsed.root_element().text(), Some(read));
}

#[test]
fn tabs_and_line_breaks_survive_an_attribute() {
    let value = "tab\there\nand\r\nthere";
    let document = render("<a v=\"{{ v }}\"/>", Escape::Xml, value);
    assert_eq!(document, "<a v=\"tab&#9;here&#10;and&#13;&#10;there\"/>");
    assert_eq!(attribute(&document), value);
}

#[test]
fn a_value_with_nothing_to_escape_keeps_its_bytes() {
    let value = "Müller 東京 😀 שלום \u{202e} sip.example.net";
    assert_eq!(
        render("<a>{{ v }}</a>", Escape::Xml, value),
        format!("<a>{value}</a>")
    );
    assert_eq!(
        render("k = {{ v }}\n", Escape::Text, value),
        format!("k = {value}\n")
    );
    let marked = "a&b<c>\"d'";
    assert_eq!(
        render("<a>{{ v }}</a>", Escape::Xml, marked),
        "<a>a&amp;b&lt;c&gt;&quot;d&apos;</a>"
    );
}

#[test]
fn every_line_break_of_any_reader_becomes_a_space() {
    let value = "S\u{b}a = vt\u{c}b = ff\u{1c}c\u{1d}d\u{1e}e\u{85}f = nel\u{2028}g = ls\u{2029}h\r\ni = crlf";
    let text = render("k = {{ v }}\nnext = 1\n", Escape::Text, value);
    assert_eq!(
        text,
        "k = S a = vt b = ff c d e f = nel g = ls h  i = crlf\nnext = 1\n"
    );
    assert_eq!(text.lines().count(), 2, "{text:?}");
}

/// `safe` writes a value as it is: a template's author may print markup
/// kept in a setting (`{{ settings.extra | safe }}`), which the format's
/// escaping would break; stored templates do so. Only what no XML parser
/// reads is still replaced. (So `safe` belongs on the author's own text,
/// never on a value a tenant or a directory writes: TEMPLATES.md.)
#[test]
fn safe_writes_a_value_as_it_is_but_for_what_xml_cannot_carry() {
    let extra = "feature.callRecording.enabled=\"1\" up.oneTouchVoiceMail=\"1\"";
    let document = render("<a {{ v | safe }}/>", Escape::Xml, extra);
    assert_eq!(document, format!("<a {extra}/>"));
    roxmltree::Document::parse(&document).unwrap();
    assert_eq!(
        render("<a>{{ v | safe }}</a>", Escape::Xml, "x\u{1}"),
        "<a>x\u{fffd}</a>"
    );
    assert_eq!(
        render("k = {{ v | safe }}\n", Escape::Text, "a\nb = 1"),
        "k = a\nb = 1\n"
    );
}

/// Under a name MiniJinja takes for HTML (`{mac}.xml`), a `{% filter %}`
/// block's text is marked safe: it is the template's, its values already
/// escaped, so it is written as made, not escaped twice, but for what no
/// XML parser reads.
#[test]
fn a_safe_value_loses_only_what_xml_cannot_carry() {
    let body = "{% filter default('') %}<a>{{ v }}</a>\u{1}\n{% endfilter %}";
    assert_eq!(
        render_as("{mac}.xml", body, Escape::Xml, "x&\u{fffe}"),
        "<a>x&amp;\u{fffd}</a>\u{fffd}\n"
    );
}
