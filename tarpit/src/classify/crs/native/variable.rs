//! Rule targets: which variable (`ARGS`, `REQUEST_HEADERS:User-Agent`, `!REQUEST_COOKIES:/__utm/`,
//! `&TX:foo`) a rule looks at, and the values a target has in one request.

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
            "FILES" | "FILES_NAMES" | "FILES_COMBINED_SIZE" | "MULTIPART_PART_HEADERS" | "IP"
            | "GLOBAL" | "SESSION" | "USER" | "RESOURCE" | "GEO" => Self::Empty,
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
                return Err(format!("the target {text} is not supported (XML:/* and XML://@* are)"));
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

/// One value a target has: its name (`ARGS:q`) and bytes.
pub type Value = (Vec<u8>, Vec<u8>);

/// The state beside the request that some variables read.
pub struct Context<'a> {
    /// The request.
    pub request: &'a Request,
    /// `TX`, lower-case keys.
    pub tx: &'a Collection,
    /// `MATCHED_VARS`: (name, value) of the current rule's matches.
    pub matched: &'a [Value],
    /// `UNIQUE_ID`.
    pub unique_id: &'a [u8],
}

/// The members of `variable` as (key, value) pairs, before any selector.
fn members<'a>(variable: Variable, context: &'a Context<'_>) -> Vec<(&'a [u8], &'a [u8])> {
    let request = context.request;
    let pairs = |c: &'a Collection| -> Vec<(&'a [u8], &'a [u8])> {
        c.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect()
    };
    let names = |c: &'a Collection| -> Vec<(&'a [u8], &'a [u8])> {
        c.iter().map(|(k, _)| (k.as_slice(), k.as_slice())).collect()
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
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect(),
        Variable::ArgsNames => all_args()
            .map(|(k, _)| (k.as_slice(), k.as_slice()))
            .collect(),
        Variable::ArgsGet => pairs(&request.args_get),
        Variable::ArgsPost => pairs(&request.args_post),
        Variable::ArgsGetNames => names(&request.args_get),
        Variable::ArgsPostNames => names(&request.args_post),
        Variable::Headers => pairs(&request.headers),
        Variable::HeaderNames => names(&request.headers),
        Variable::Cookies => pairs(&request.cookies),
        Variable::CookieNames => names(&request.cookies),
        Variable::Tx => pairs(context.tx),
        Variable::MatchedVars => context
            .matched
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect(),
        Variable::MatchedVarsNames => context
            .matched
            .iter()
            .map(|(k, _)| (k.as_slice(), k.as_slice()))
            .collect(),
        Variable::Xml => {
            let mut out: Vec<(&[u8], &[u8])> = Vec::new();
            if let Some(text) = &request.xml_text {
                out.push((b"/*", text));
                out.extend(
                    request
                        .xml_attributes
                        .iter()
                        .map(|v| (&b"//@*"[..], v.as_slice())),
                );
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The values of one (not negated) target, as `(name, value)`; `excluded` are the rule's
/// negated targets.
pub fn values(target: &Target, excluded: &[&Target], context: &Context<'_>) -> Vec<Value> {
    let request = context.request;
    let scalar = |bytes: &[u8]| vec![(target.variable.name().as_bytes().to_vec(), bytes.to_vec())];
    let single: Option<Vec<Value>> = match target.variable {
        Variable::Filename => Some(scalar(&request.filename)),
        Variable::Basename => Some(scalar(&request.basename)),
        Variable::Uri => Some(scalar(&request.uri)),
        Variable::UriRaw => Some(scalar(&request.uri_raw)),
        Variable::Line => Some(scalar(&request.line)),
        Variable::Method => Some(scalar(&request.method)),
        Variable::Protocol => Some(scalar(&request.protocol)),
        Variable::QueryString => Some(scalar(&request.query)),
        Variable::Body => Some(scalar(&request.body)),
        Variable::BodyLength => Some(scalar(request.body.len().to_string().as_bytes())),
        Variable::BodyProcessor => Some(scalar(
            request.processor.map_or("", |p| p.name()).as_bytes(),
        )),
        Variable::BodyError => Some(scalar(if request.body_error { b"1" } else { b"0" })),
        Variable::RemoteAddr => Some(scalar(&request.remote_addr)),
        Variable::UniqueId => Some(scalar(context.unique_id)),
        Variable::Duration => Some(scalar(b"0")),
        Variable::ArgsCombinedSize => {
            let size: usize = members(Variable::Args, context)
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum();
            Some(scalar(size.to_string().as_bytes()))
        }
        Variable::MatchedVar => context.matched.last().map(|(_, v)| scalar(v)),
        Variable::MatchedVarName => context.matched.last().map(|(k, _)| scalar(k)),
        _ => None,
    };
    if let Some(single) = single {
        return if target.count {
            scalar(single.len().to_string().as_bytes())
        } else {
            single
        };
    }
    let selected: Vec<(&[u8], &[u8])> = members(target.variable, context)
        .into_iter()
        .filter(|(key, _)| target.selector.selects(key))
        .filter(|(key, _)| {
            !excluded
                .iter()
                .any(|e| e.variable == target.variable && e.selector.selects(key))
        })
        .collect();
    let prefix = target.variable.name();
    if target.count {
        return vec![(
            prefix.as_bytes().to_vec(),
            selected.len().to_string().into_bytes(),
        )];
    }
    selected
        .into_iter()
        .map(|(key, value)| {
            let mut name = Vec::with_capacity(prefix.len() + 1 + key.len());
            name.extend_from_slice(prefix.as_bytes());
            name.push(b':');
            name.extend_from_slice(key);
            (name, value.to_vec())
        })
        .collect()
}
