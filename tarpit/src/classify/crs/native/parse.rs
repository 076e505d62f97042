//! ModSecurity configuration text to directives: continued lines joined, quoting undone, each
//! `SecRule`/`SecAction` split into its variables, operator and actions.
//!
//! Written from the ModSecurity v3 reference manual's description of the directive syntax
//! (owasp-modsecurity/ModSecurity wiki, "Reference Manual (v3.x)"); no crate parses it.

use super::NativeError;

/// One directive of a configuration file, its arguments unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// `SecRule`, `SecAction`, `SecMarker`, ...
    pub name: String,
    /// Its arguments, quotes removed (`\"` inside a quoted argument becomes `"`).
    pub args: Vec<String>,
    /// Where it starts, for error messages.
    pub line: usize,
}

/// One action of a rule's action list: `name` or `name:value` (quotes removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// Its name, lowercased (`setvar`, `t`, `skipafter`).
    pub name: String,
    /// Its argument, empty when it takes none.
    pub value: String,
}

/// The directives of a configuration text, with the line each starts on.
pub fn directives(text: &str) -> Result<Vec<Directive>, NativeError> {
    logical_lines(text)
        .into_iter()
        .map(|(line, joined)| split_directive(&joined, line))
        .collect()
}

/// The text's directives as single lines (continuation lines joined, comments and blank lines
/// left out), each with the line number it starts on: what both the evaluator and the rule
/// catalog read.
pub fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if current.is_empty() {
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            start = number + 1;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                out.push((start, std::mem::take(&mut current)));
            }
        }
    }
    if !current.is_empty() {
        out.push((start, current));
    }
    out
}

/// Splits one joined directive into its name and arguments.
fn split_directive(text: &str, line: usize) -> Result<Directive, NativeError> {
    let mut args = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut arg = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '\\' && chars.peek() == Some(&first) {
                    arg.push(first);
                    chars.next();
                } else if c == first {
                    closed = true;
                    break;
                } else {
                    arg.push(c);
                }
            }
            if !closed {
                return Err(NativeError::Syntax {
                    line,
                    reason: format!("an unclosed {first} in `{}`", shorten(text)),
                });
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                arg.push(c);
                chars.next();
            }
        }
        args.push(arg);
    }
    if args.is_empty() {
        return Err(NativeError::Syntax {
            line,
            reason: "an empty directive".into(),
        });
    }
    let name = args.remove(0);
    Ok(Directive { name, args, line })
}

/// The actions of an action list (`id:1,phase:2,t:none,msg:'a, b'`).
pub fn actions(list: &str) -> Vec<Action> {
    let mut out = Vec::new();
    let mut part = String::new();
    let mut quoted = false;
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted && chars.peek() == Some(&'\'') => {
                part.push('\\');
                part.push('\'');
                chars.next();
            }
            '\'' => {
                quoted = !quoted;
                part.push(c);
            }
            ',' if !quoted => out.extend(action(&std::mem::take(&mut part))),
            _ => part.push(c),
        }
    }
    out.extend(action(&part));
    out
}

/// One `name:value` action, the value's surrounding quotes removed.
fn action(text: &str) -> Option<Action> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let (name, value) = text.split_once(':').unwrap_or((text, ""));
    let value = value.trim();
    let value = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(value)
        .replace("\\'", "'");
    Some(Action {
        name: name.trim().to_ascii_lowercase(),
        value,
    })
}

/// The first characters of a directive, for a message.
fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_join_continued_lines_and_undo_quotes() {
        let text = "# comment\nSecRule ARGS \"@rx a\\\"b\" \\\n    \"id:1,\\\n    msg:'x, y'\"\n\
                    SecMarker \"END-X\"\n";
        let all = directives(text).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].name, "SecRule");
        assert_eq!(all[0].args, ["ARGS", "@rx a\"b", "id:1, msg:'x, y'"]);
        assert_eq!(all[0].line, 2);
        assert_eq!(all[1].args, ["END-X"]);
        let acts = actions(&all[0].args[2]);
        assert_eq!(acts[0].name, "id");
        assert_eq!(acts[1].value, "x, y");
    }

    #[test]
    fn an_unclosed_quote_names_the_line() {
        let error = directives("\nSecRule ARGS \"@rx a").unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
    }

    #[test]
    fn quoted_action_values_keep_escaped_quotes() {
        let acts = actions("setvar:'tx.a=+%{tx.b}',t:none,logdata:'it\\'s'");
        assert_eq!(acts[0].value, "tx.a=+%{tx.b}");
        assert_eq!(acts[1].name, "t");
        assert_eq!(acts[2].value, "it's");
    }
}
