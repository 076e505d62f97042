//! Text that came from scanners, made safe for an operator's terminal: shared by every table the
//! offline commands print.

/// Whether a character must not reach an operator's terminal: C0 and C1 controls (escape
/// sequences), bidirectional overrides and isolates (text that reads in another order than it
/// is), and zero-width characters (text that hides what it holds).
pub fn is_unsafe_for_display(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// Cuts a value for a table cell (User-Agents and paths can be long), on a char boundary.
pub fn cell(text: &str, width: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if is_unsafe_for_display(c) { ' ' } else { c })
        .collect();
    if clean.chars().count() <= width {
        return clean;
    }
    let mut cut: String = clean.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_zero_width_and_control_characters_never_reach_the_terminal() {
        let hostile = "/admin\u{202E}gpj.exe\u{200B}\u{2066}x\u{FEFF}\u{1b}[31m\u{9b}";
        let shown = cell(hostile, 100);
        assert!(!shown.chars().any(is_unsafe_for_display), "{shown:?}");
        assert_eq!(shown, "/admin gpj.exe  x  [31m ");
    }

    #[test]
    fn long_cells_are_cut() {
        assert_eq!(cell("abc", 5), "abc");
        assert_eq!(cell("abcdefgh", 5), "abcd…");
        assert_eq!(cell("a\nb", 5), "a b");
    }
}
