//! Rule targets: which variable (`ARGS`, `REQUEST_HEADERS:User-Agent`, `!REQUEST_COOKIES:/__utm/`,
//! `&TX:foo`) a rule looks at, and the values a target has in one request.

use std::borrow::Cow;

use pcre2::bytes::Regex;

use super::operator::regex;
use super::request::{Collection, Request};

/// A ModSecurity variable the rules can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variable {
    /// `ARGS`: query, form and JSON arguments.
    Args,
    /// `ARGS_GET`.
    ArgsGet,
    /// `ARGS_POST`.
    ArgsPost,
    /// `ARGS_NAMES`.
    ArgsNames,
    /// `ARGS_GET_NAMES`.
    ArgsGetNames,
    /// `ARGS_POST_NAMES`.
    ArgsPostNames,
    /// `REQUEST_HEADERS`.
    Headers,
    /// `REQUEST_HEADERS_NAMES`.
    HeaderNames,
    /// `REQUEST_COOKIES`.
    Cookies,
    /// `REQUEST_COOKIES_NAMES`.
    CookieNames,
    /// `TX`: the transaction's own variables.
    Tx,
    /// `XML:/*` (key `/*`) and `XML://@*` (key `//@*`).
    Xml,
    /// `MATCHED_VARS`.
    MatchedVars,
    /// `MATCHED_VARS_NAMES`.
    MatchedVarsNames,
    /// `MATCHED_VAR`.
    MatchedVar,
    /// `MATCHED_VAR_NAME`.
    MatchedVarName,
    /// `REQUEST_FILENAME`.
    Filename,
    /// `REQUEST_BASENAME`.
    Basename,
    /// `REQUEST_URI`.
    Uri,
    /// `REQUEST_URI_RAW`.
    UriRaw,
    /// `REQUEST_LINE`.
    Line,
    /// `REQUEST_METHOD`.
    Method,
    /// `REQUEST_PROTOCOL`.
    Protocol,
    /// `QUERY_STRING`.
    QueryString,
    /// `REQUEST_BODY`.
    Body,
    /// `REQUEST_BODY_LENGTH`.
    BodyLength,
    /// `REQBODY_PROCESSOR`.
    BodyProcessor,
    /// `REQBODY_ERROR`.
    BodyError,
    /// `REMOTE_ADDR`.
    RemoteAddr,
    /// `UNIQUE_ID`.
    UniqueId,
    /// `DURATION`.
    Duration,
    /// `ARGS_COMBINED_SIZE`.
    ArgsCombinedSize,
    /// Variables that are always empty here: multipart parts (`FILES`, `FILES_NAMES`,
    /// `FILES_COMBINED_SIZE`, `MULTIPART_PART_HEADERS`: the tarpit keeps no uploads) and
    /// persistent collections (`IP`, `GLOBAL`, `SESSION`, `USER`, `RESOURCE`, `GEO`).
    Empty,
}

impl Variable {
    /// The variable a name means.
    pub fn named(name: &str) -> Result<Self, String> {
        Ok(match name.to_ascii_uppercase().as_str() {
            "ARGS" => Self::Args,
            "ARGS_GET" => Self::ArgsGet,
            "ARGS_POST" => Self::ArgsPost,
            "ARGS_NAMES" => Self::ArgsNames,
            "ARGS_GET_NAMES" => Self::ArgsGetNames,
            "ARGS_POST_NAMES" => Self::ArgsPostNames,
            "REQUEST_HEADERS" => Self::Headers,
            "REQUEST_HEADERS_NAMES" => Self::HeaderNames,
            "REQUEST_COOKIES" => Self::Cookies,
            "REQUEST_COOKIES_NAMES" => Self::CookieNames,
            "TX" => Self::Tx,
            "XML" => Self::Xml,
            "MATCHED_VARS" => Self::MatchedVars,
            "MATCHED_VARS_NAMES" => Self::MatchedVarsNames,
            "MATCHED_VAR" => Self::MatchedVar,
            "MATCHED_VAR_NAME" => Self::MatchedVarName,
            "REQUEST_FILENAME" => Self::Filename,
            "REQUEST_BASENAME" => Self::Basename,
            "REQUEST_URI" => Self::Uri,
            "REQUEST_URI_RAW" => Self::UriRaw,
            "REQUEST_LINE" => Self::Line,
            "REQUEST_METHOD" => Self::Method,
            "REQUEST_PROTOCOL" => Self::Protocol,
            "QUERY_STRING" => Self::QueryString,
            "REQUEST_BODY" => Self::Body,
            "REQUEST_BODY_LENGTH" => Self::BodyLength,
            "REQBODY_PROCESSOR" => Self::BodyProcessor,
            "REQBODY_ERROR" => Self::BodyError,
            "REMOTE_ADDR" => Self::RemoteAddr,
            "UNIQUE_ID" => Self::UniqueId,
            "DURATION" => Self::Duration,
            "ARGS_COMBINED_SIZE" => Self::ArgsCombinedSize,
            "FILES"
            | "FILES_NAMES"
            | "FILES_COMBINED_SIZE"
            | "MULTIPART_PART_HEADERS"
            | "IP"
            | "GLOBAL"
            | "SESSION"
            | "USER"
            | "RESOURCE"
            | "GEO" => Self::Empty,
            other => return Err(format!("the variable {other} is not supported")),
        })
    }

    /// Its name as `MATCHED_VAR_NAME` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Args => "ARGS",
            Self::ArgsGet => "ARGS_GET",
            Self::ArgsPost => "ARGS_POST",
            Self::ArgsNames => "ARGS_NAMES",
            Self::ArgsGetNames => "ARGS_GET_NAMES",
            Self::ArgsPostNames => "ARGS_POST_NAMES",
            Self::Headers => "REQUEST_HEADERS",
            Self::HeaderNames => "REQUEST_HEADERS_NAMES",
            Self::Cookies => "REQUEST_COOKIES",
            Self::CookieNames => "REQUEST_COOKIES_NAMES",
            Self::Tx => "TX",
            Self::Xml => "XML",
            Self::MatchedVars => "MATCHED_VARS",
            Self::MatchedVarsNames => "MATCHED_VARS_NAMES",
            Self::MatchedVar => "MATCHED_VAR",
            Self::MatchedVarName => "MATCHED_VAR_NAME",
            Self::Filename => "REQUEST_FILENAME",
            Self::Basename => "REQUEST_BASENAME",
            Self::Uri => "REQUEST_URI",
            Self::UriRaw => "REQUEST_URI_RAW",
            Self::Line => "REQUEST_LINE",
            Self::Method => "REQUEST_METHOD",
            Self::Protocol => "REQUEST_PROTOCOL",
            Self::QueryString => "QUERY_STRING",
            Self::Body => "REQUEST_BODY",
            Self::BodyLength => "REQUEST_BODY_LENGTH",
            Self::BodyProcessor => "REQBODY_PROCESSOR",
            Self::BodyError => "REQBODY_ERROR",
            Self::RemoteAddr => "REMOTE_ADDR",
            Self::UniqueId => "UNIQUE_ID",
            Self::Duration => "DURATION",
            Self::ArgsCombinedSize => "ARGS_COMBINED_SIZE",
            Self::Empty => "EMPTY",
        }
    }
}

/// Which members of a collection a target takes.
#[derive(Debug, Clone)]
pub enum Selector {
    /// All of them.
    All,
    /// The one(s) with this key, compared without case.
    Key(Vec<u8>),
    /// Those whose key matches, without case.
    Regex(Regex),
}

impl Selector {
    /// Whether `key` is selected.
    pub fn selects(&self, key: &[u8]) -> bool {
        match self {
            Self::All => true,
            Self::Key(wanted) => wanted.eq_ignore_ascii_case(key),
            Self::Regex(regex) => regex.is_match(key).unwrap_or(false),
        }
    }
}

/// One target of a rule: `VAR`, `VAR:key`, `VAR:/regex/`, `&VAR...` (a count), `!VAR...` (an
/// exclusion).
#[derive(Debug, Clone)]
pub struct Target {
    /// The variable.
    pub variable: Variable,
    /// Which members.
    pub selector: Selector,
    /// `&`: the number of members instead of their values.
    pub count: bool,
    /// `!`: members removed from the rule's other targets.
    pub negated: bool,
}

impl Target {
    /// Parses one target of a `|`-separated list.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rest = text.trim();
        let negated = rest.starts_with('!');
        rest = rest.trim_start_matches('!');
        let count = rest.starts_with('&');
        rest = rest.trim_start_matches('&');
        let (name, key) = match rest.split_once(':') {
            Some((name, key)) => (name, Some(key)),
            None => (rest, None),
        };
        let variable = Variable::named(name)?;
        let selector = match key {
            None | Some("") => Selector::All,
            Some(key) if key.len() > 1 && key.starts_with('/') && key.ends_with('/') => {
                if variable == Variable::Xml {
                    Selector::Key(key.as_bytes().to_vec())
                } else {
                    Selector::Regex(regex(&key[1..key.len() - 1], true)?)
                }
            }
            Some(key) => Selector::Key(key.trim_matches('\'').as_bytes().to_vec()),
        };
        if variable == Variable::Xml {
            let supported = matches!(&selector, Selector::Key(k) if k == b"/*" || k == b"//@*");
            if !supported {
                return Err(format!(
                    "the target {text} is not supported (XML:/* and XML://@* are)"
                ));
            }
        }
        Ok(Self {
            variable,
            selector,
            count,
            negated,
        })
    }
}

/// A matched value as `MATCHED_VARS` keeps it: its name (`ARGS:q`) and bytes.
pub type Value = (Vec<u8>, Vec<u8>);

/// One value a target has in this request: borrowed from the request where it can be, so that
/// hundreds of rules reading the same arguments copy nothing.
#[derive(Debug, Clone)]
pub struct Item<'r> {
    /// The variable.
    pub variable: Variable,
    /// The member's key (`q` of `ARGS:q`), empty for a variable with one value.
    pub key: Cow<'r, [u8]>,
    /// Whether the name carries the key (`ARGS:q`, not `REQUEST_URI`).
    pub keyed: bool,
    /// The value.
    pub value: Cow<'r, [u8]>,
}

impl Item<'_> {
    /// The name `MATCHED_VAR_NAME` gives it.
    pub fn name(&self) -> Vec<u8> {
        let prefix = self.variable.name().as_bytes();
        if !self.keyed {
            return prefix.to_vec();
        }
        let mut name = Vec::with_capacity(prefix.len() + 1 + self.key.len());
        name.extend_from_slice(prefix);
        name.push(b':');
        name.extend_from_slice(&self.key);
        name
    }
}

/// The state beside the request that some variables read (copied out, as rules change it).
pub struct State<'s> {
    /// `TX`, lower-case keys.
    pub tx: &'s Collection,
    /// `MATCHED_VARS`: (name, value) of the current rule's matches.
    pub matched: &'s [Value],
    /// `UNIQUE_ID`.
    pub unique_id: &'s [u8],
}

type Pair<'r> = (Cow<'r, [u8]>, Cow<'r, [u8]>);

/// The members of a request's collection variable as (key, value) pairs, before any selector.
fn members<'r>(variable: Variable, request: &'r Request) -> Vec<Pair<'r>> {
    let pairs = |c: &'r Collection| -> Vec<Pair<'r>> {
        c.iter()
            .map(|(k, v)| (Cow::Borrowed(k.as_slice()), Cow::Borrowed(v.as_slice())))
            .collect()
    };
    let names = |c: &'r Collection| -> Vec<Pair<'r>> {
        c.iter()
            .map(|(k, _)| (Cow::Borrowed(k.as_slice()), Cow::Borrowed(k.as_slice())))
            .collect()
    };
    let all_args = || {
        request
            .args_get
            .iter()
            .chain(&request.args_post)
            .chain(&request.args_json)
    };
    match variable {
        Variable::Args => all_args()
            .map(|(k, v)| (Cow::Borrowed(k.as_slice()), Cow::Borrowed(v.as_slice())))
            .collect(),
        Variable::ArgsNames => all_args()
            .map(|(k, _)| (Cow::Borrowed(k.as_slice()), Cow::Borrowed(k.as_slice())))
            .collect(),
        Variable::ArgsGet => pairs(&request.args_get),
        Variable::ArgsPost => pairs(&request.args_post),
        Variable::ArgsGetNames => names(&request.args_get),
        Variable::ArgsPostNames => names(&request.args_post),
        Variable::Headers => pairs(&request.headers),
        Variable::HeaderNames => names(&request.headers),
        Variable::Cookies => pairs(&request.cookies),
        Variable::CookieNames => names(&request.cookies),
        Variable::Xml => {
            let mut out: Vec<Pair<'r>> = Vec::new();
            if let Some(text) = &request.xml_text {
                out.push((Cow::Borrowed(b"/*"), Cow::Borrowed(text)));
                out.extend(
                    request
                        .xml_attributes
                        .iter()
                        .map(|v| (Cow::Borrowed(&b"//@*"[..]), Cow::Borrowed(v.as_slice()))),
                );
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The value of a variable that has one (`REQUEST_URI`), or `None` for a collection.
fn scalar<'r>(
    variable: Variable,
    request: &'r Request,
    state: &State<'_>,
) -> Option<Option<Cow<'r, [u8]>>> {
    let borrowed = |bytes: &'r [u8]| Some(Some(Cow::Borrowed(bytes)));
    let owned = |bytes: Vec<u8>| Some(Some(Cow::Owned(bytes)));
    match variable {
        Variable::Filename => borrowed(&request.filename),
        Variable::Basename => borrowed(&request.basename),
        Variable::Uri => borrowed(&request.uri),
        Variable::UriRaw => borrowed(&request.uri_raw),
        Variable::Line => borrowed(&request.line),
        Variable::Method => borrowed(&request.method),
        Variable::Protocol => borrowed(&request.protocol),
        Variable::QueryString => borrowed(&request.query),
        Variable::Body => borrowed(&request.body),
        Variable::BodyLength => owned(request.body.len().to_string().into_bytes()),
        Variable::BodyProcessor => borrowed(request.processor.map_or("", |p| p.name()).as_bytes()),
        Variable::BodyError => borrowed(if request.body_error { b"1" } else { b"0" }),
        Variable::RemoteAddr => borrowed(&request.remote_addr),
        Variable::UniqueId => owned(state.unique_id.to_vec()),
        Variable::Duration => borrowed(b"0"),
        Variable::ArgsCombinedSize => {
            let size: usize = members(Variable::Args, request)
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum();
            owned(size.to_string().into_bytes())
        }
        Variable::MatchedVar => Some(state.matched.last().map(|(_, v)| Cow::Owned(v.clone()))),
        Variable::MatchedVarName => Some(state.matched.last().map(|(k, _)| Cow::Owned(k.clone()))),
        _ => None,
    }
}

/// The values of one (not negated) target; `excluded` are the rule's negated targets.
pub fn values<'r>(
    target: &Target,
    excluded: &[&Target],
    request: &'r Request,
    state: &State<'_>,
) -> Vec<Item<'r>> {
    let item = |key: Cow<'r, [u8]>, keyed: bool, value: Cow<'r, [u8]>| Item {
        variable: target.variable,
        key,
        keyed,
        value,
    };
    let count = |n: usize| Cow::Owned(n.to_string().into_bytes());
    if let Some(single) = scalar(target.variable, request, state) {
        let present = usize::from(single.is_some());
        return match (target.count, single) {
            (true, _) => vec![item(Cow::Borrowed(b""), false, count(present))],
            (false, Some(value)) => vec![item(Cow::Borrowed(b""), false, value)],
            (false, None) => Vec::new(),
        };
    }
    let wanted = |key: &[u8]| {
        target.selector.selects(key)
            && !excluded
                .iter()
                .any(|e| e.variable == target.variable && e.selector.selects(key))
    };
    // The transaction's own collections change as rules run: only the selected members are
    // copied out.
    let own = match target.variable {
        Variable::Tx => Some((state.tx.as_slice(), false)),
        Variable::MatchedVars => Some((state.matched, false)),
        Variable::MatchedVarsNames => Some((state.matched, true)),
        _ => None,
    };
    let selected: Vec<Pair<'r>> = match own {
        Some((collection, names_only)) => collection
            .iter()
            .filter(|(key, _)| wanted(key))
            .map(|(key, value)| {
                let value = if names_only { key } else { value };
                (Cow::Owned(key.clone()), Cow::Owned(value.clone()))
            })
            .collect(),
        None => members(target.variable, request)
            .into_iter()
            .filter(|(key, _)| wanted(key))
            .collect(),
    };
    if target.count {
        return vec![item(Cow::Borrowed(b""), false, count(selected.len()))];
    }
    selected
        .into_iter()
        .map(|(key, value)| item(key, true, value))
        .collect()
}
