//! Characters a screen draws as nothing. Directory names drop them and a
//! tenant's name may not hold them: one name of them alone looks empty,
//! and among letters they make one name pass for another.

/// Whether `c` is a Default_Ignorable_Code_Point: what a screen draws as
/// nothing, assigned or not, of whatever category. Cf is only part of it:
/// Hangul fillers are letters, variation selectors are marks, yet a name of
/// them alone looks empty, and among letters they hide a placeholder. The
/// list is that of Unicode 16 and changes rarely (U+180F came in 14); a
/// test in dialtone-directory holds it to the regex crate's tables.
pub fn is_default_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{34f}'
            | '\u{61c}'
            | '\u{115f}'..='\u{1160}'
            | '\u{17b4}'..='\u{17b5}'
            | '\u{180b}'..='\u{180f}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{3164}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{fff0}'..='\u{fff8}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0000}'..='\u{e0fff}'
    )
}
