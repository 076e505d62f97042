//! A stand-in for AbuseIPDB's report endpoint (and the ISC's submission API) on loopback: it
//! records every request (headers, form fields, body) and answers from a script, so tests can
//! assert exactly what was sent.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One received report.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request line, e.g. `POST /api/v2/report HTTP/1.1`.
    pub request_line: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The decoded form fields.
    pub form: Vec<(String, String)>,
    /// The body as received (JSON APIs).
    pub body: String,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    /// A form field's value.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What to answer next.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Status, extra headers, body.
    Status(u16, Vec<(&'static str, String)>, String),
    /// Accept the request and never answer.
    Hang,
}

impl Reply {
    /// The API's success answer for `ip`.
    pub fn ok(score: u8) -> Self {
        Reply::Status(
            200,
            vec![],
            format!(r#"{{"data":{{"ipAddress":"x","abuseConfidenceScore":{score}}}}}"#),
        )
    }
}

/// The running stand-in.
pub struct FakeApi {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
}

impl FakeApi {
    /// Starts it; after the scripted replies run out it answers `Reply::ok(42)`.
    pub fn start(script: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (r, s) = (received.clone(), script.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, s) = (r.clone(), s.clone());
                std::thread::spawn(move || serve(stream, r, s));
            }
        });
        Self {
            addr,
            received,
            script,
        }
    }

    /// The URL to configure as `api_url`.
    pub fn url(&self) -> String {
        format!("http://{}/api/v2/report", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (up to `timeout`) until `n` reports have arrived.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        super::wait_for(timeout, || {
            let got = self.received();
            (got.len() >= n).then_some(got)
        })
        .unwrap_or_else(|| panic!("expected {n} reports, got {:?}", self.received()))
    }

    /// Replies still unused.
    pub fn unused_replies(&self) -> usize {
        self.script.lock().unwrap().len()
    }
}

fn serve(
    stream: std::net::TcpStream,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        let text = String::from_utf8_lossy(&body).into_owned();
        let form = if text.starts_with('{') {
            Vec::new()
        } else {
            form_urlencoded(&text)
        };
        received.lock().unwrap().push(Received {
            request_line: request_line.trim_end().to_owned(),
            headers,
            form,
            body: text,
            at: Instant::now(),
        });
        let reply = script.lock().unwrap().pop_front().unwrap_or(Reply::ok(42));
        match reply {
            Reply::Hang => {
                std::thread::sleep(Duration::from_secs(600));
                return;
            }
            Reply::Status(status, extra, body) => {
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                );
                for (name, value) in extra {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                if stream.write_all(head.as_bytes()).is_err()
                    || stream.write_all(body.as_bytes()).is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Decodes `a=1&b=x%20y+z`.
fn form_urlencoded(body: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}
