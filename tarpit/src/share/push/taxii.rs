//! TAXII 2.1 (OASIS, "TAXII Version 2.1", 2021): each pass summarises its requests per client
//! ([`crate::share::clients::Aggregator`]) and adds the STIX objects ([`crate::share::stix`])
//! to a collection: `POST {api root}collections/{id}/objects/` with an envelope
//! `{"objects": [...]}`, media type `application/taxii+json;version=2.1`, HTTP Basic
//! authentication. The server answers 202 with a status resource; a status that counts
//! failures is an error (the pass is tried again: objects have derived ids, so a repeat
//! adds nothing twice).

use std::time::Duration;

use serde_json::{Value, json};

use super::ShareContext;
use crate::config::TaxiiConfig;
use crate::secret::Secret;
use crate::share::clients::{Aggregator, SummaryOptions};
use crate::share::rows::SharedRequest;

/// The environment variable (or `.env` entry) holding the TAXII password.
pub const PASSWORD_VARIABLE: &str = "TARPIT_TAXII_PASSWORD";

/// TAXII 2.1's media type.
const MEDIA_TYPE: &str = "application/taxii+json;version=2.1";

/// The push client.
pub struct Taxii {
    client: reqwest::Client,
    objects_url: String,
    user: String,
    password: Secret,
}

impl Taxii {
    /// A client for `[share.taxii]`.
    pub fn new(config: &TaxiiConfig, password: Secret) -> anyhow::Result<Self> {
        let root = config.url.trim_end_matches('/');
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .user_agent(concat!("tarpit/", env!("CARGO_PKG_VERSION")))
                .build()?,
            objects_url: format!("{root}/collections/{}/objects/", config.collection),
            user: config.user.clone(),
            password,
        })
    }

    /// Adds the requests' STIX objects to the collection.
    pub async fn send(
        &mut self,
        requests: &[SharedRequest],
        context: &ShareContext,
    ) -> Result<(), String> {
        let envelope = envelope(requests, context);
        if envelope["objects"].as_array().is_none_or(|o| o.len() <= 1) {
            return Ok(()); // nothing but the identity
        }
        let response = self
            .client
            .post(&self.objects_url)
            .basic_auth(&self.user, Some(self.password.expose()))
            .header("Accept", MEDIA_TYPE)
            .header("Content-Type", MEDIA_TYPE)
            .body(envelope.to_string())
            .send()
            .await
            .map_err(|e| format!("TAXII: {e}"))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        if status != 202 && status != 200 {
            return Err(format!("TAXII answered HTTP {status}: {}", cut(&text)));
        }
        let resource: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match resource["failure_count"].as_u64() {
            Some(failed) if failed > 0 => Err(format!(
                "TAXII refused {failed} objects: {}",
                cut(&resource["failures"].to_string())
            )),
            _ => Ok(()),
        }
    }
}

/// The envelope of STIX objects for `requests` (their per-client summary).
pub fn envelope(requests: &[SharedRequest], context: &ShareContext) -> Value {
    let options = SummaryOptions {
        since: None,
        include_scanners: context.include_scanners,
        anonymizer: None,
    };
    let mut aggregator = Aggregator::new(&options);
    for request in requests {
        aggregator.add(request);
    }
    let summary = aggregator.finish(Some(context.sensor.clone()), context.sensor_since);
    let bundle = crate::share::stix::bundle(&summary);
    json!({ "objects": bundle["objects"] })
}

fn cut(text: &str) -> &str {
    let end = text.char_indices().nth(300).map_or(text.len(), |(i, _)| i);
    &text[..end]
}
