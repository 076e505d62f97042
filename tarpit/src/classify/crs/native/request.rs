//! A request as the rules see it: ModSecurity's variables (`ARGS`, `REQUEST_HEADERS`,
//! `REQUEST_FILENAME`, ...) built from what the tarpit recorded.
//!
//! How each variable is built follows libmodsecurity 3.0's observable behaviour (checked by the
//! agreement test): query and form arguments are split on `&` and `=` and URL-decoded with `+`
//! as a space and invalid escapes kept; `REQUEST_URI`/`REQUEST_FILENAME` are percent-decoded
//! without `+`; cookies are split on `;` with the name's leading spaces removed; a JSON body
//! gives `json.a.b`/`json.list.array_0` arguments; an XML body gives `XML:/*` (its text) and
//! `XML://@*` (its attribute values).

use super::super::modsec::EngineRequest;

/// A collection: (key, value) pairs in the order they were added, keys compared without case.
pub type Collection = Vec<(Vec<u8>, Vec<u8>)>;

/// How the request body is parsed (`REQBODY_PROCESSOR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyProcessor {
    /// No processor: the body is only `REQUEST_BODY`.
    None,
    /// `application/x-www-form-urlencoded`.
    UrlEncoded,
    /// `multipart/form-data` (parts are not split: their bytes stay in `REQUEST_BODY`).
    Multipart,
    /// Set by a rule's `ctl:requestBodyProcessor=XML`.
    Xml,
    /// Set by a rule's `ctl:requestBodyProcessor=JSON`.
    Json,
}

impl BodyProcessor {
    /// The name `REQBODY_PROCESSOR` holds.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "",
            Self::UrlEncoded => "URLENCODED",
            Self::Multipart => "MULTIPART",
            Self::Xml => "XML",
            Self::Json => "JSON",
        }
    }

    /// The processor a `ctl:requestBodyProcessor=` value names.
    pub fn named(name: &str) -> Option<Self> {
        Some(match name.to_ascii_uppercase().as_str() {
            "URLENCODED" => Self::UrlEncoded,
            "MULTIPART" => Self::Multipart,
            "XML" => Self::Xml,
            "JSON" => Self::Json,
            _ => return None,
        })
    }
}

/// The request's variables.
#[derive(Debug, Default, Clone)]
pub struct Request {
    /// `REQUEST_METHOD`.
    pub method: Vec<u8>,
    /// `REQUEST_PROTOCOL` (`HTTP/1.1`).
    pub protocol: Vec<u8>,
    /// `REQUEST_LINE` as sent.
    pub line: Vec<u8>,
    /// `REQUEST_URI_RAW`: the target as sent.
    pub uri_raw: Vec<u8>,
    /// `REQUEST_URI`: the target percent-decoded.
    pub uri: Vec<u8>,
    /// `REQUEST_FILENAME`: the decoded path, without the query.
    pub filename: Vec<u8>,
    /// `REQUEST_BASENAME`: its last segment.
    pub basename: Vec<u8>,
    /// `QUERY_STRING` as sent.
    pub query: Vec<u8>,
    /// `REMOTE_ADDR`.
    pub remote_addr: Vec<u8>,
    /// `ARGS_GET`.
    pub args_get: Collection,
    /// `ARGS_POST` (form bodies).
    pub args_post: Collection,
    /// Arguments of a JSON body: in `ARGS` only, as the library has them.
    pub args_json: Collection,
    /// `REQUEST_HEADERS`.
    pub headers: Collection,
    /// `REQUEST_COOKIES`.
    pub cookies: Collection,
    /// `REQUEST_BODY`.
    pub body: Vec<u8>,
    /// `REQBODY_PROCESSOR`.
    pub processor: Option<BodyProcessor>,
    /// `REQBODY_ERROR`: the body did not parse as its processor says.
    pub body_error: bool,
    /// `XML:/*`: the text of an XML body's root element, when it parsed.
    pub xml_text: Option<Vec<u8>>,
    /// `XML://@*`: its attribute values.
    pub xml_attributes: Vec<Vec<u8>>,
}

impl Request {
    /// The variables available in phase 1 (everything but the parsed body).
    pub fn of(request: &EngineRequest<'_>) -> Self {
        let uri_raw = request.uri.as_bytes().to_vec();
        let uri = percent_decode(&uri_raw);
        let query = match request.uri.split_once('?') {
            Some((_, query)) => query.as_bytes().to_vec(),
            None => Vec::new(),
        };
        let filename = match uri.iter().position(|&b| b == b'?') {
            Some(at) => uri[..at].to_vec(),
            None => uri.clone(),
        };
        let basename = match filename.iter().rposition(|&b| b == b'/') {
            Some(at) => filename[at + 1..].to_vec(),
            None => filename.clone(),
        };
        let protocol = format!("HTTP/{}", request.version).into_bytes();
        let line = format!(
            "{} {} HTTP/{}",
            request.method, request.uri, request.version
        );
        let mut headers = Collection::new();
        let mut cookies = Collection::new();
        for (name, value) in request.headers {
            headers.push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
            if name.eq_ignore_ascii_case("cookie") {
                cookies.extend(parse_cookies(value.as_bytes()));
            }
        }
        Self {
            method: request.method.as_bytes().to_vec(),
            protocol,
            line: line.into_bytes(),
            args_get: parse_arguments(&query),
            uri_raw,
            uri,
            filename,
            basename,
            query,
            remote_addr: request.client.0.as_bytes().to_vec(),
            headers,
            cookies,
            body: request.body.to_vec(),
            ..Self::default()
        }
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value.as_slice())
    }

    /// The processor the body's `Content-Type` selects when no rule chose one.
    pub fn default_processor(&self) -> BodyProcessor {
        let kind = self.header("content-type").unwrap_or_default();
        let kind = kind.to_ascii_lowercase();
        if kind.starts_with(b"application/x-www-form-urlencoded") {
            BodyProcessor::UrlEncoded
        } else if kind.starts_with(b"multipart/form-data") {
            BodyProcessor::Multipart
        } else {
            BodyProcessor::None
        }
    }

    /// Parses the body with `processor`: the step between phase 1 and phase 2.
    pub fn process_body(&mut self, processor: BodyProcessor) {
        self.processor = Some(processor);
        if self.body.is_empty() {
            return;
        }
        match processor {
            BodyProcessor::UrlEncoded => self.args_post = parse_arguments(&self.body),
            BodyProcessor::Json => match serde_json::from_slice::<serde_json::Value>(&self.body) {
                Ok(value) => flatten_json(b"json", &value, &mut self.args_json),
                Err(_) => self.body_error = true,
            },
            BodyProcessor::Xml => self.parse_xml(),
            BodyProcessor::None | BodyProcessor::Multipart => {}
        }
    }

    fn parse_xml(&mut self) {
        let text = String::from_utf8_lossy(&self.body);
        let options = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..roxmltree::ParsingOptions::default()
        };
        let Ok(document) = roxmltree::Document::parse_with_options(&text, options) else {
            self.body_error = true;
            return;
        };
        let root = document.root_element();
        let mut all_text = Vec::new();
        for node in root.descendants() {
            if node.is_text() {
                all_text.extend_from_slice(node.text().unwrap_or_default().as_bytes());
            }
            for attribute in node.attributes() {
                self.xml_attributes
                    .push(attribute.value().as_bytes().to_vec());
            }
        }
        self.xml_text = Some(all_text);
    }
}

/// Percent-decoding as the library decodes the request target: `%XX` only, invalid escapes and
/// `+` kept.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    super::transform::percent_decode(input, false, false)
}

/// `a=1&b=2` to arguments: split on `&` (an empty piece between two is an argument with an
/// empty name; a trailing one is not), then at the first `=`, each side URL-decoded.
pub fn parse_arguments(text: &[u8]) -> Collection {
    if text.is_empty() {
        return Collection::new();
    }
    let mut pieces: Vec<&[u8]> = text.split(|&b| b == b'&').collect();
    if pieces.last().is_some_and(|p| p.is_empty()) {
        pieces.pop();
    }
    pieces
        .into_iter()
        .map(|piece| {
            let (name, value) = match piece.iter().position(|&b| b == b'=') {
                Some(at) => (&piece[..at], &piece[at + 1..]),
                None => (piece, &[][..]),
            };
            (
                super::transform::url_decode(name, false),
                super::transform::url_decode(value, false),
            )
        })
        .collect()
}

/// A `Cookie` header's pairs.
fn parse_cookies(header: &[u8]) -> Collection {
    let mut pieces: Vec<Vec<u8>> = header.split(|&b| b == b';').map(<[u8]>::to_vec).collect();
    if let Some(last) = pieces.last_mut() {
        while last.last().is_some_and(u8::is_ascii_whitespace) {
            last.pop();
        }
    }
    pieces
        .into_iter()
        .filter(|piece| !piece.is_empty())
        .filter_map(|piece| {
            let (name, value) = match piece.iter().position(|&b| b == b'=') {
                Some(at) => (piece[..at].to_vec(), piece[at + 1..].to_vec()),
                None => (piece, Vec::new()),
            };
            let start = name.iter().position(|b| !b.is_ascii_whitespace())?;
            Some((name[start..].to_vec(), value))
        })
        .collect()
}

/// A JSON value to `prefix.key`/`prefix.array_N` arguments.
fn flatten_json(prefix: &[u8], value: &serde_json::Value, out: &mut Collection) {
    let join = |suffix: &[u8]| [prefix, b".", suffix].concat();
    match value {
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                flatten_json(&join(key.as_bytes()), item, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                flatten_json(&join(format!("array_{index}").as_bytes()), item, out);
            }
        }
        serde_json::Value::Null => out.push((prefix.to_vec(), Vec::new())),
        serde_json::Value::String(text) => out.push((prefix.to_vec(), text.as_bytes().to_vec())),
        other => out.push((prefix.to_vec(), other.to_string().into_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_and_decode_as_the_library_does() {
        let args = parse_arguments(b"q=1+2%27&&z&=v&k=&a%00b=c%zz&");
        let pairs: Vec<(&[u8], &[u8])> = args
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        assert_eq!(
            pairs,
            [
                (&b"q"[..], &b"1 2'"[..]),
                (b"", b""),
                (b"z", b""),
                (b"", b"v"),
                (b"k", b""),
                (b"a\0b", b"c%zz"),
            ]
        );
    }

    #[test]
    fn cookies_keep_value_spaces_and_drop_leading_name_spaces() {
        let cookies = parse_cookies(b"a=1; b = 2;c;  ");
        assert_eq!(cookies[1], (b"b ".to_vec(), b" 2".to_vec()));
        assert_eq!(cookies[2], (b"c".to_vec(), Vec::new()));
        assert_eq!(cookies.len(), 3);
    }

    #[test]
    fn json_and_xml_bodies_become_variables() {
        let headers = [("Content-Type".to_string(), "text/xml".to_string())];
        let body = br#"<?xml version="1.0"?><r a="1"><s b="2">t1<u>t2</u></s><![CDATA[cd]]></r>"#;
        let engine = EngineRequest {
            client: ("203.0.113.7", 1),
            method: "POST",
            uri: "/a%20b/c.php?x=1",
            version: "1.1",
            headers: &headers,
            body,
        };
        let mut request = Request::of(&engine);
        assert_eq!(request.filename, b"/a b/c.php");
        assert_eq!(request.basename, b"c.php");
        request.process_body(BodyProcessor::Xml);
        assert_eq!(request.xml_text.as_deref(), Some(&b"t1t2cd"[..]));
        assert_eq!(request.xml_attributes, [b"1".to_vec(), b"2".to_vec()]);
        let mut json = Request {
            body: br#"{"a":{"b":"x","c":[1,"y",{"d":null}]},"e":true}"#.to_vec(),
            ..Request::default()
        };
        json.process_body(BodyProcessor::Json);
        let names: Vec<String> = json
            .args_json
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "json.a.b",
                "json.a.c.array_0",
                "json.a.c.array_1",
                "json.a.c.array_2.d",
                "json.e"
            ]
        );
    }
}
