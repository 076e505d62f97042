//! One call to AbuseIPDB's `POST /api/v2/report`, and what its answer means for the reporter.

use std::time::Duration;

/// What a report call came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Accepted; the API's confidence score for the address, when it gave one.
    Reported {
        /// HTTP status.
        status: u16,
        /// `data.abuseConfidenceScore`.
        confidence_score: Option<u8>,
    },
    /// 429: wait `retry_after`; `daily` when the day's quota is spent.
    RateLimited {
        /// How long the API asks us to wait (Retry-After), if it said.
        retry_after: Option<Duration>,
        /// Whether this is the daily quota rather than a short burst limit.
        daily: bool,
    },
    /// A failure worth retrying later: 5xx, timeout, connection error.
    Retryable {
        /// HTTP status, when there was a response.
        status: Option<u16>,
        /// What went wrong.
        error: String,
    },
    /// A final refusal (4xx other than 429): retrying would not help.
    Refused {
        /// HTTP status.
        status: u16,
        /// The API's explanation.
        error: String,
    },
}

/// Sends one report. The key goes only into the `Key` header, never into a log line.
pub async fn report(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    ip: &str,
    categories: &str,
    comment: &str,
) -> Answer {
    let request = client
        .post(url)
        .header("Key", key)
        .header("Accept", "application/json")
        .form(&[("ip", ip), ("categories", categories), ("comment", comment)]);
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            let error = if e.is_timeout() {
                "timed out".to_owned()
            } else {
                // Without the URL: it is ours, and errors go to logs.
                e.without_url().to_string()
            };
            return Answer::Retryable {
                status: None,
                error,
            };
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let remaining_zero = response
        .headers()
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0");
    let body = response.text().await.unwrap_or_default();
    classify(status, retry_after, remaining_zero, &body)
}

/// Interprets a response (separate from the I/O so it can be tested directly).
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    remaining_zero: bool,
    body: &str,
) -> Answer {
    match status {
        200..=299 => {
            let score = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["data"]["abuseConfidenceScore"].as_u64())
                .and_then(|s| u8::try_from(s).ok());
            Answer::Reported {
                status,
                confidence_score: score,
            }
        }
        429 => Answer::RateLimited {
            retry_after,
            daily: remaining_zero || body.to_ascii_lowercase().contains("daily rate limit"),
        },
        500..=599 => Answer::Retryable {
            status: Some(status),
            error: format!("HTTP {status}"),
        },
        _ => Answer::Refused {
            status,
            error: api_error(body).unwrap_or_else(|| format!("HTTP {status}")),
        },
    }
}

/// `errors[0].detail` of an API error body.
fn api_error(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let detail = value["errors"][0]["detail"].as_str()?;
    Some(super::policy::clean_comment(detail))
}

/// Retry-After in seconds (the API's form); HTTP dates are accepted too.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_carries_the_confidence_score() {
        let body = r#"{"data":{"ipAddress":"81.2.69.142","abuseConfidenceScore":52}}"#;
        assert_eq!(
            classify(200, None, false, body),
            Answer::Reported {
                status: 200,
                confidence_score: Some(52)
            }
        );
        assert_eq!(
            classify(200, None, false, "not json"),
            Answer::Reported {
                status: 200,
                confidence_score: None
            }
        );
    }

    #[test]
    fn rate_limits_burst_and_daily() {
        assert_eq!(
            classify(429, Some(Duration::from_secs(3)), false, "{}"),
            Answer::RateLimited {
                retry_after: Some(Duration::from_secs(3)),
                daily: false
            }
        );
        let daily = r#"{"errors":[{"detail":"Daily rate limit of 1000 requests exceeded for this endpoint."}]}"#;
        assert!(matches!(
            classify(429, None, false, daily),
            Answer::RateLimited { daily: true, .. }
        ));
        assert!(matches!(
            classify(429, None, true, "{}"),
            Answer::RateLimited { daily: true, .. }
        ));
    }

    #[test]
    fn server_errors_retry_client_errors_do_not() {
        assert!(matches!(
            classify(503, None, false, ""),
            Answer::Retryable {
                status: Some(503),
                ..
            }
        ));
        let body = r#"{"errors":[{"detail":"You can only report the same IP address once in 15 minutes.","status":429}]}"#;
        assert_eq!(
            classify(422, None, false, body),
            Answer::Refused {
                status: 422,
                error: "You can only report the same IP address once in 15 minutes.".into()
            }
        );
        assert_eq!(
            classify(401, None, false, ""),
            Answer::Refused {
                status: 401,
                error: "HTTP 401".into()
            }
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
